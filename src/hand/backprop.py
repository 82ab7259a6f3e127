"""Backpropagation written out: the whole net's forward pass and its backward recursion, layer by layer.

This is the course report's ``forward_propagation`` and ``backPropogation`` as plain code, named
with the symbols of ``docs/derivations.md`` ("The whole net").  Read it after the per-op chain
(:meth:`src.hand.nets.FeedForwardNet.layer_outputs`): there autograd's engine chains each
Function's ``backward``; here the same chain is one loop you can read top to bottom.

For layers ``l = 1 … L`` with ``d₀ = x`` and a hidden activation ``g``::

    z_l = d_{l−1} W_lᵀ + b_l        (B, n_l)
    h_l = g(z_l)                    (B, n_l)   hidden layers, l < L
    d_l = h_l ⊙ m_l                 (B, n_l)   the next layer's input (m_l: dropout's scaled mask; d_l = h_l without)
    z_L                             (B, n_L)   the logits

and backward, from ``δ_L = ∂L/∂z_L`` (the loss's gradient) down::

    ∂L/∂W_l = δ_lᵀ d_{l−1}                      (n_l, n_{l−1})
    ∂L/∂b_l = Σ_batch δ_l                       (n_l,)
    δ_{l−1} = ((δ_l W_l) ⊙ m_{l−1}) ⊙ g'(z_{l−1})  (B, n_{l−1}),  g' read from h_{l−1}
    ∂L/∂x   = δ_1 W_1                           (B, n_0)

Every tensor here is new (no buffers).  :class:`src.hand.fused.FeedForward` runs this same loop as
one autograd node, writing into buffers reused between training steps, and gives the same
numbers to the last bit (``tests/test_backprop.py``, ``tests/test_fast_path.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .functional import ACTIVATION_FUNCTIONS

__all__ = ["Tape", "Gradients", "forward_pass", "backward_pass"]


class Tape(NamedTuple):
    """What the forward pass keeps for the backward pass (what ``ctx.save_for_backward`` would hold)."""

    d: list[Tensor]  # d_0 = x, d_1 … d_{L−1}: the input of each layer l = 1 … L
    h: list[Tensor]  # h_1 … h_{L−1}: each hidden layer's output, for g'
    masks: list[Tensor] | None  # m_1 … m_{L−1} (dropout), or None


class Gradients(NamedTuple):
    """The backward pass's results: ``∂L/∂x``, and ``∂L/∂W_l``, ``∂L/∂b_l`` for ``l = 1 … L`` (at index l − 1)."""

    x: Tensor  # (B, n_0)
    W: list[Tensor]  # (n_l, n_{l−1}), like the weights
    b: list[Tensor]  # (n_l,)


def forward_pass(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "sigmoid",
    masks: Sequence[Tensor] | None = None,
) -> tuple[Tensor, Tape]:
    """The logits ``z_L`` of the net ``(W_1, b_1) … (W_L, b_L)``, and the :class:`Tape` for :func:`backward_pass`.

    ``x`` is ``(B, n_0)``, ``W_l`` is ``(n_l, n_{l−1})`` like ``nn.Linear.weight``; ``activation``
    names the hidden layers' ``g`` (``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"identity"``).
    """
    g = ACTIVATION_FUNCTIONS[activation]
    L = len(weights)
    d, hs = [x], []
    for l in range(1, L):  # the hidden layers
        W, b = weights[l - 1], biases[l - 1]
        z = torch.addmm(b, d[l - 1], W.t())  # z_l = d_{l−1} W_lᵀ + b_l: (B, n_l), the bias added inside the product
        h = g.value(z)  # h_l = g(z_l)
        hs.append(h)
        d.append(h * masks[l - 1] if masks is not None else h)  # d_l = h_l ⊙ m_l
    logits = torch.addmm(biases[-1], d[L - 1], weights[-1].t())  # z_L: (B, n_L)
    return logits, Tape(d, hs, list(masks) if masks is not None else None)


def backward_pass(delta: Tensor, weights: Sequence[Tensor], tape: Tape, activation: str = "sigmoid") -> Gradients:
    """Every gradient of the net, from ``delta = δ_L = ∂L/∂z_L`` ``(B, n_L)``: the backprop recursion.

    ``weights`` and ``activation`` are :func:`forward_pass`'s, ``tape`` what it returned.
    """
    g = ACTIVATION_FUNCTIONS[activation]
    L = len(weights)
    dW, db = [None] * L, [None] * L
    for l in range(L, 0, -1):  # l = L, L−1, …, 1
        dW[l - 1] = delta.t().mm(tape.d[l - 1])  # ∂L/∂W_l = δ_lᵀ d_{l−1}: (n_l, n_{l−1})
        db[l - 1] = delta.sum(0)  # ∂L/∂b_l = Σ_batch δ_l: (n_l,)
        if l > 1:
            grad_d = delta.mm(weights[l - 1])  # ∂L/∂d_{l−1} = δ_l W_l: (B, n_{l−1})
            if tape.masks is not None:
                grad_d = grad_d * tape.masks[l - 2]  # ∂L/∂h_{l−1} = ∂L/∂d_{l−1} ⊙ m_{l−1}
            delta = g.derivative(grad_d, tape.h[l - 2])  # δ_{l−1} = ∂L/∂h_{l−1} ⊙ g'(z_{l−1})
    dx = delta.mm(weights[0])  # ∂L/∂x = δ_1 W_1: (B, n_0)
    return Gradients(dx, dW, db)
