"""Exercise 5 of 6: the backprop recursion, the whole net.      Check: python -m src.verify --exercise backprop

The net's forward pass is given (``forward_pass`` of ``src/hand/backprop.py``; read it first). For
layers l = 1 … L, with d_0 = x and the hidden activation g:

    z_l = d_(l−1) W_lᵀ + b_l     (B, n_l)
    h_l = g(z_l),  d_l = h_l     (B, n_l)   hidden layers, l < L
    z_L                          (B, n_L)   the logits

``forward_pass`` returns the logits and a ``Tape``: ``tape.d[l−1]`` is d_(l−1), the input of layer
l (``tape.d[0]`` is x), and ``tape.h[l−2]`` is h_(l−1), layer l−1's output (``tape.masks`` is
None here: no dropout).  Write ``backward_pass``: from ``delta`` = δ_L = ∂L/∂z_L (B, n_L), the
loss's gradient, fill for every layer l = L, L−1, …, 1

    dW[l−1] = ∂L/∂W_l   (n_l, n_(l−1)), like weights[l−1]
    db[l−1] = ∂L/∂b_l   (n_l,)

then δ_(l−1) for the layer below, and at the end ``dx`` = ∂L/∂x (B, n_0).
``g.derivative(grad, h)`` is ``grad ⊙ g'(z)`` computed from ``h = g(z)`` (your sigmoid and tanh
exercises, as the project writes them).

The derivation: docs/derivations.md#the-whole-net.   Stuck?  python -m src.verify --exercise backprop --hint
"""

from typing import Sequence

from torch import Tensor

from src.hand.backprop import Gradients, Tape, forward_pass  # noqa: F401  (forward_pass: what builds the tape)
from src.hand.functional import ACTIVATION_FUNCTIONS


def backward_pass(delta: Tensor, weights: Sequence[Tensor], tape: Tape, activation: str = "sigmoid") -> Gradients:
    """Every gradient of the net from ``delta`` = δ_L; the project's piece: ``src.hand.backprop.backward_pass``."""
    g = ACTIVATION_FUNCTIONS[activation]  # g.derivative(grad, h) = grad ⊙ g'(z), from h = g(z)
    L = len(weights)  # weights[l−1] is W_l (n_l, n_(l−1))
    dW, db = [None] * L, [None] * L
    # ---- your code: start ----
    raise NotImplementedError("the loop for l = L … 1: dW[l−1], db[l−1], then δ_(l−1); after it, dx")
    # ---- your code: end ----
    return Gradients(dx, dW, db)
