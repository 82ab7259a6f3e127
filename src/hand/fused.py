"""An optimization of :mod:`src.hand.backprop`: the same loop as one autograd node, with buffers reused between steps.

Read :mod:`src.hand.backprop` first: ``forward_pass`` and ``backward_pass`` are the net's forward
equations and the backprop recursion written out, with fresh tensors.  :class:`FeedForward` runs
exactly those loops (the same products in the same order, the same activation rule: each
activation's ``value`` and ``derivative`` of :mod:`src.hand.functional`) inside one autograd node,
so the per-op chain's ``2L − 1`` nodes become one, and while training it writes every tensor into
a :class:`Workspace` instead of allocating (BENCHMARKS.md: what each saves).  Nothing here is new
math: ``tests/test_backprop.py`` proves the node equal to the written-out recursion to the last
bit, ``tests/test_functional.py`` to the per-op chain, ``tests/test_fast_path.py`` for whole
training runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .checks import check_choice
from .functional import ACTIVATION_FUNCTIONS, HIDDEN_ACTIVATIONS

__all__ = ["FeedForward", "Workspace", "Buffers", "feed_forward"]


class Buffers(NamedTuple):
    """Where one pass writes its tensors: a reused buffer, or ``None`` for a fresh tensor.

    Each list holds the hidden layers ``l = 1 … L−1`` at positions ``0 … L−2``; all ``(batch, out_l)``.
    """

    hidden: list[Tensor | None]  # z_l = d_{l−1} W_lᵀ + b_l, then h_l = g(z_l) in the same memory
    dropped: list[Tensor | None]  # d_l = h_l ⊙ m_l (read only with dropout)
    grad_d: list[Tensor | None]  # ∂L/∂d_l = δ_{l+1} W_{l+1}, then ⊙ m_l with dropout: ∂L/∂h_l
    delta: list[Tensor | None]  # δ_l = ∂L/∂z_l
    logits: Tensor | None  # z_L, (batch, outputs)

    @staticmethod
    def fresh(hidden_layers: int) -> "Buffers":
        """No buffers: every op allocates its result (evaluation, and calls without a workspace)."""
        none = [None] * hidden_layers
        return Buffers(none, none, none, none, None)


class Workspace:
    """Work buffers of one net's :class:`FeedForward` node, kept between training steps of the same shape.

    One training step writes every layer's output ``h_l`` (forward) and every ``δ_l`` (backward)
    into the same memory as the step before, with ``out=`` arguments, instead of allocating about
    a dozen tensors per step.  The ``h_l`` are saved for backward like any saved tensor, so
    autograd's version counters still guard them: a second training forward before the first
    one's backward overwrites them, and that backward then raises instead of returning wrong
    gradients.  Evaluation (no gradient) never uses a workspace.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None  # (batch, dtype, device, dropout, widths…) of the buffers held
        self.hidden: list[Tensor] = []  # the fields of Buffers, for the hidden layers l < L
        self.dropped: list[Tensor] = []  # empty without dropout
        self.grad_d: list[Tensor] = []
        self.delta: list[Tensor] = []
        self.logits: Tensor | None = None

    def buffers(self, x: Tensor, weights: Sequence[Tensor], dropout: bool) -> Buffers:
        """The buffers for this shape: new when the batch size, layer sizes, dtype, device or dropout change."""
        widths = list(map(len, weights))  # out_l of each (out_l, in_l) weight
        key = (x.shape[0], x.dtype, x.device, dropout, *widths)
        if key != self.key:
            new = lambda n: torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)  # noqa: E731
            self.hidden = [new(n) for n in widths[:-1]]
            self.dropped = [new(n) for n in widths[:-1]] if dropout else []
            self.grad_d = [new(n) for n in widths[:-1]]
            self.delta = [new(n) for n in widths[:-1]]
            self.logits = new(widths[-1])
            self.key = key
        return Buffers(self.hidden, self.dropped, self.grad_d, self.delta, self.logits)


class FeedForward(Function):
    """:func:`~src.hand.backprop.forward_pass` and :func:`~src.hand.backprop.backward_pass` as one autograd node.

    Forward, for layers ``l = 1 … L`` with ``d₀ = x`` (``g`` the hidden activation)::

        z_l = d_{l−1} W_lᵀ + b_l,   h_l = g(z_l),   d_l = h_l (⊙ m_l with dropout)   (l < L)
        logits = z_L

    Backward, from ``δ_L = ∂L/∂logits`` down::

        ∂L/∂W_l = δ_lᵀ d_{l−1},   ∂L/∂b_l = Σ_batch δ_l,   δ_{l−1} = ((δ_l W_l) ⊙ m_{l−1}) ⊙ g'(h_{l−1})

    without dropout ``m = 1`` (no multiplication at all), and ``∂L/∂x = δ_1 W_1``.  These are
    :class:`~src.hand.functional.Linear`'s products and the activation's ``value`` /
    ``derivative`` (from the saved outputs ``h_l``), in the per-op chain's order, so both agree
    to the last bit, but in one autograd node instead of ``2L − 1`` (``3L − 2`` with dropout).
    The dropout masks ``m_l`` are the scaled masks of :func:`src.hand.dropout.dropout_mask`,
    drawn outside, one per hidden layer (:class:`src.hand.dropout.Dropout` is the per-op form).

    With a :class:`Workspace` (training), every ``z_l``/``h_l``, ``d_l``, ``δ_l W_l`` and ``δ_l``
    is written into a buffer reused from step to step (the same ops with ``out=``); only the
    returned gradients are new tensors (autograd moves them into ``.grad`` without a copy).

    ``forward`` returns ``(logits, h₁, …, h_{L−1}, d₁, …, d_{L−1})`` (no ``d`` without dropout):
    the split form can only save inputs and outputs, so the hidden outputs leave as extra,
    non-differentiable outputs, which :func:`feed_forward` drops.  That cuts the graph through
    them for double backward, so this node is ``once_differentiable`` (the per-op Functions are
    twice differentiable).
    """

    @staticmethod
    def forward(
        x: Tensor, activation: str, workspace: Workspace | None, masks: list[Tensor] | None, *params: Tensor
    ) -> tuple[Tensor, ...]:
        if len(params) < 2 or len(params) % 2:
            raise ValueError("FeedForward needs (weight, bias) pairs")
        if activation not in HIDDEN_ACTIVATIONS:
            check_choice("activation", activation, HIDDEN_ACTIVATIONS)  # the one-line refusal
        g = ACTIVATION_FUNCTIONS[activation]
        weights, biases = params[0::2], params[1::2]
        buf = Buffers.fresh(len(weights) - 1) if workspace is None else workspace.buffers(x, weights, masks is not None)
        hidden, dropped = [], []
        d = x  # d₀
        for i, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):  # hidden layer l = i + 1
            z = torch.addmm(b, d, w.t(), out=buf.hidden[i])  # z_l = d_{l−1} W_lᵀ + b_l: (batch, out_l)
            h = g.value(z, out=buf.hidden[i])  # h_l = g(z_l), in z_l's memory in the workspace
            hidden.append(h)
            d = h
            if masks is not None:  # d_l = h_l ⊙ m_l, what the next layer reads
                d = torch.mul(h, masks[i], out=buf.dropped[i])
                dropped.append(d)
        logits = torch.addmm(biases[-1], d, weights[-1].t(), out=buf.logits)  # (batch, outputs)
        if buf.logits is not None:  # a view, so that no caller holds the buffer itself (rewritten next step)
            logits = logits.view_as(logits)
        return (logits, *hidden, *dropped)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, activation, workspace, masks, *params = inputs
        layers = len(params) // 2
        hidden, dropped = output[1:layers], output[layers:]
        ctx.mark_non_differentiable(*hidden, *dropped)
        ctx.set_materialize_grads(False)
        ctx.activation = ACTIVATION_FUNCTIONS[activation]
        ctx.workspace = workspace
        ctx.layers = layers
        ctx.dropout = masks is not None
        # x; W_1 … W_L; h_1 … h_{L−1}; with dropout d_1 … d_{L−1} and m_1 … m_{L−1}
        ctx.save_for_backward(x, *params[0::2], *hidden, *dropped, *(masks or ()))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_logits: Tensor | None, *_hidden_grads: None) -> tuple:
        L, g = ctx.layers, ctx.activation
        grads = [None] * (2 * L)  # ∂L/∂W_1, ∂L/∂b_1, …, ∂L/∂W_L, ∂L/∂b_L: the parameters' order
        if grad_logits is None:  # the logits were not used (grads are not materialized as zeros)
            return (None, None, None, None, *grads)
        x, *saved = ctx.saved_tensors
        W = saved[:L]  # W_l at l − 1
        h = saved[L : 2 * L - 1]  # h_l at l − 1
        m = saved[3 * L - 2 :] if ctx.dropout else None  # m_l at l − 1
        d = (x, *(saved[2 * L - 1 : 3 * L - 2] if ctx.dropout else h))  # d_l at l: what layer l + 1 read
        buf = Buffers.fresh(L - 1) if ctx.workspace is None else ctx.workspace.buffers(x, W, ctx.dropout)
        needs = ctx.needs_input_grad  # (x, activation, workspace, masks, W_1, b_1, …, W_L, b_L)
        needs_W, needs_b = needs[4::2], needs[5::2]
        delta = grad_logits  # δ_L: (batch, outputs); autograd's tensor, never written into
        for l in range(L, 0, -1):
            if needs_W[l - 1]:
                grads[2 * l - 2] = delta.t().mm(d[l - 1])  # ∂L/∂W_l = δ_lᵀ d_{l−1}: (out_l, in_l)
            if needs_b[l - 1]:
                grads[2 * l - 1] = delta.sum(0)  # ∂L/∂b_l = Σ_batch δ_l: (out_l,)
            if l > 1:  # δ_{l−1} = ((δ_l W_l) ⊙ m_{l−1}) ⊙ g'(h_{l−1}), in hidden layer l − 1's buffers
                grad_d = torch.mm(delta, W[l - 1], out=buf.grad_d[l - 2])  # ∂L/∂d_{l−1}: (batch, in_l)
                if m is not None:  # dropout: ∂L/∂h_{l−1} = ∂L/∂d_{l−1} ⊙ m_{l−1}
                    grad_d = torch.mul(grad_d, m[l - 2], out=buf.grad_d[l - 2])
                delta = g.derivative(grad_d, h[l - 2], out=buf.delta[l - 2])
        grad_x = delta.mm(W[0]) if needs[0] else None  # ∂L/∂x = δ_1 W_1: (batch, inputs)
        return (grad_x, None, None, None, *grads)


def feed_forward(
    x: Tensor, activation: str, params: list[Tensor], workspace: Workspace | None = None, masks: list[Tensor] | None = None
) -> Tensor:
    """Logits of the net ``params = [W1, b1, …, WL, bL]`` with hidden ``activation``, in one node.

    See :class:`FeedForward`; equal to chaining :func:`linear` and the activation.  Pass the
    net's :class:`Workspace` while training, to reuse its buffers from step to step, and the
    scaled dropout ``masks`` of the hidden layers (:func:`src.hand.dropout.dropout_mask`) to drop units.
    """
    return FeedForward.apply(x, activation, workspace, masks, *params)[0]
