"""The fused path: the whole net in one autograd node, with buffers reused between steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .functional import HandFunction, Identity, ReLU, Sigmoid, Tanh

__all__ = ["FeedForward", "Workspace", "feed_forward"]


class Workspace:
    """Work buffers of one net's :class:`FeedForward` node, kept between training steps of the same shape.

    One training step writes every layer's output ``h_l`` (forward) and every ``δ_l`` (backward)
    into the same memory as the step before, with ``out=`` and in-place ops, instead of
    allocating about a dozen tensors per step.  The ``h_l`` are saved for backward like any
    saved tensor, so autograd's version counters still guard them: a second training forward
    before the first one's backward overwrites them, and that backward then raises instead of
    returning wrong gradients.  Evaluation (no gradient) never uses a workspace.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.hidden: list[Tensor] = []  # h_l, (batch, out_l), l < L
        self.delta: list[Tensor] = []  # δ_l, (batch, out_l), l < L
        self.scratch: list[Tensor] = []  # one temporary per hidden layer (tanh's and ReLU's derivative_)
        self.dropped: list[Tensor] = []  # h_l ⊙ m_l with dropout, (batch, out_l), l < L; else empty
        self.logits: Tensor | None = None  # (batch, outputs)

    def buffers(self, x: Tensor, params: tuple[Tensor, ...], dropout: bool = False) -> "Workspace":
        """Allocate the buffers when the batch size, layer sizes, dtype, device or dropout change; else reuse them."""
        widths = [w.shape[0] for w in params[::2]]
        key = (x.shape[0], x.dtype, x.device, dropout, *widths)
        if key != self.key:
            new = lambda n: torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)  # noqa: E731
            self.hidden = [new(n) for n in widths[:-1]]
            self.delta = [new(n) for n in widths[:-1]]
            self.scratch = [new(n) for n in widths[:-1]]
            self.dropped = [new(n) for n in widths[:-1]] if dropout else []
            self.logits = new(widths[-1])
            self.key = key
        return self


class FeedForward(HandFunction):
    """A whole fully connected net in one node: the course report's ``forward_propagation`` and ``backPropogation``.

    Forward, for layers ``l = 1 … L`` with ``h₀ = x``::

        h_l = g(h_{l−1} W_lᵀ + b_l)   (l < L),      logits = h_{L−1} W_Lᵀ + b_L

    Backward, from ``δ_L = ∂L/∂logits`` down::

        ∂L/∂W_l = δ_lᵀ h_{l−1},   ∂L/∂b_l = Σ_batch δ_l,   δ_{l−1} = (δ_l W_l) ⊙ g'(h_{l−1})

    the same products and activation derivatives as chaining :class:`Linear` and the activation
    Functions (``derivative`` of each, from the saved outputs ``h_l``), so the results are equal
    to the last bit, but one autograd node instead of ``2L − 1``.

    With a :class:`Workspace` (training), ``h_l`` and ``δ_l`` live in buffers reused from step to
    step: the bias is added inside ``addmm``, the activation and its derivative run in place
    (``forward_`` and ``derivative_`` of each activation, the same arithmetic as the out-of-place
    ones), and only the returned gradients are new tensors (autograd moves them into ``.grad``
    without a copy).  Without one, every tensor is fresh.

    With dropout (``masks`` = the scaled masks ``m_l`` of :func:`src.hand.dropout.dropout_mask`, one
    per hidden layer), the next layer reads ``d_l = h_l ⊙ m_l`` and the backward multiplies by the
    same mask before the activation's derivative (:class:`src.hand.dropout.Dropout`)::

        ∂L/∂W_l = δ_lᵀ d_{l−1},   δ_{l−1} = ((δ_l W_l) ⊙ m_{l−1}) ⊙ g'(h_{l−1})

    the per-op chain's products in its order, so with the same masks both paths agree to the last
    bit.  Without masks nothing of this runs.

    ``forward`` returns ``(logits, h₁, …, h_{L−1})`` (and ``d₁, …, d_{L−1}`` with dropout): the
    split form can only save inputs and outputs, so the hidden outputs leave as extra,
    non-differentiable outputs, which :func:`feed_forward` drops.  That cuts the graph through them for double backward, so this
    node is ``once_differentiable`` (the per-op Functions are twice differentiable).
    """

    @staticmethod
    def forward(
        x: Tensor, activation: str, workspace: Workspace | None, masks: list[Tensor] | None, *params: Tensor
    ) -> tuple[Tensor, ...]:
        if len(params) < 2 or len(params) % 2:
            raise ValueError("FeedForward needs (weight, bias) pairs")
        g = _HIDDEN[activation]
        layers = len(params) // 2
        ws = workspace.buffers(x, params, masks is not None) if workspace is not None else None
        hidden, dropped = [], []
        h = x
        for i in range(layers - 1):
            w, b = params[2 * i], params[2 * i + 1]
            if ws is None:
                h = g.forward(torch.addmm(b, h, w.t()))  # (batch, out)
            else:
                h = g.forward_(torch.addmm(b, h, w.t(), out=ws.hidden[i]))
            hidden.append(h)
            if masks is not None:  # d_l = h_l ⊙ m_l, what the next layer reads
                h = torch.mul(h, masks[i]) if ws is None else torch.mul(h, masks[i], out=ws.dropped[i])
                dropped.append(h)
        w, b = params[-2], params[-1]
        if ws is None:
            return (torch.addmm(b, h, w.t()), *hidden, *dropped)
        # the logits as a view, so that no caller holds the buffer itself (rewritten next step)
        logits = torch.addmm(b, h, w.t(), out=ws.logits)
        return (logits.view_as(logits), *hidden, *dropped)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, activation, workspace, masks, *params = inputs
        hidden = output[1:]  # h_l, then d_l with dropout
        ctx.mark_non_differentiable(*hidden)
        ctx.set_materialize_grads(False)
        ctx.activation = _HIDDEN[activation]
        ctx.workspace = workspace
        ctx.layers = len(params) // 2
        ctx.dropout = masks is not None
        ctx.save_for_backward(x, *params, *hidden, *(masks or ()))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor | None, *_hidden_grads: None):
        x, *saved = ctx.saved_tensors
        layers = ctx.layers
        if grad is None:  # the logits were not used (grads are not materialized as zeros)
            return (None, None, None, None) + (None,) * (2 * layers)
        params, hidden = saved[: 2 * layers], saved[2 * layers : 3 * layers - 1]
        # each layer's input d_{l−1} (= h_{l−1} without dropout) and the masks m_l
        inputs, masks = (saved[3 * layers - 1 : 4 * layers - 2], saved[4 * layers - 2 :]) if ctx.dropout else (hidden, None)
        g, ws = ctx.activation, ctx.workspace
        needs = ctx.needs_input_grad
        grads: list[Tensor | None] = [None] * (2 * layers)
        grad_x = None
        delta = grad  # δ_L: (batch, outputs); autograd's tensor, never written into
        for i in range(layers - 1, -1, -1):
            h_in = inputs[i - 1] if i > 0 else x
            if needs[4 + 2 * i]:
                grads[2 * i] = delta.t().mm(h_in)  # (out, in)
            if needs[5 + 2 * i]:
                grads[2 * i + 1] = delta.sum(0)  # (out,)
            if i > 0:
                w, y = params[2 * i], hidden[i - 1]
                if ws is None:
                    gd = delta.mm(w)  # ∂L/∂d_{l−1}: (batch, in)
                    delta = g.derivative(gd if masks is None else gd * masks[i - 1], y)  # δ_{l−1}
                else:  # the same, in the workspace
                    gd = torch.mm(delta, w, out=ws.delta[i - 1])
                    delta = g.derivative_(gd if masks is None else gd.mul_(masks[i - 1]), y, ws.scratch[i - 1])
            elif needs[0]:
                grad_x = delta.mm(params[0])
        return (grad_x, None, None, None, *grads)


_HIDDEN = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "identity": Identity}


def feed_forward(
    x: Tensor, activation: str, params: list[Tensor], workspace: Workspace | None = None, masks: list[Tensor] | None = None
) -> Tensor:
    """Logits of the net ``params = [W1, b1, …, WL, bL]`` with hidden ``activation``, in one node.

    See :class:`FeedForward`; equal to chaining :func:`linear` and the activation.  Pass the
    net's :class:`Workspace` while training, to reuse its buffers from step to step, and the
    scaled dropout ``masks`` of the hidden layers (:func:`src.hand.dropout.dropout_mask`) to drop units.
    """
    return FeedForward.apply(x, activation, workspace, masks, *params)[0]


