"""Exercise 1 of 6: the sigmoid's derivative.      Check: python -m src.verify --exercise sigmoid

    y = σ(x) = 1 / (1 + e^{−x})        elementwise

Write ``Sigmoid.backward``: given ``grad = ∂L/∂y`` (what arrives from the layers above) and the
saved output ``y = σ(x)``, return ``∂L/∂x = grad ⊙ σ'(x)``, with σ'(x) written using ``y`` only.

Shapes: x, y, grad and ∂L/∂x are all (B, n): every element on its own.
The derivation: docs/derivations.md#sigmoid.   Stuck?  python -m src.verify --exercise sigmoid --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


class Sigmoid(Function):
    """``y = σ(x)``; the project's piece: ``src.hand.functional.Sigmoid``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.sigmoid(x)  # (B, n)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)  # y = σ(x): all that backward needs

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors  # y (B, n); grad = ∂L/∂y (B, n)
        # ---- your code: start ----
        raise NotImplementedError("return ∂L/∂x = grad ⊙ σ'(x), written with y")
        # ---- your code: end ----
