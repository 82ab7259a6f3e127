"""Exercise 2 of 6: tanh's derivative.      Check: python -m src.verify --exercise tanh

    y = tanh(x) = (e^x − e^{−x}) / (e^x + e^{−x})        elementwise

Write ``Tanh.backward``: given ``grad = ∂L/∂y`` and the saved output ``y = tanh(x)``, return
``∂L/∂x = grad ⊙ tanh'(x)``, with tanh'(x) written using ``y`` only (as for sigmoid).

Shapes: x, y, grad and ∂L/∂x are all (B, n).
The derivation: docs/derivations.md#tanh.   Stuck?  python -m src.verify --exercise tanh --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


class Tanh(Function):
    """``y = tanh(x)``; the project's piece: ``src.hand.functional.Tanh``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.tanh(x)  # (B, n)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)  # y = tanh(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors  # y (B, n); grad = ∂L/∂y (B, n)
        # ---- your code: start ----
        raise NotImplementedError("return ∂L/∂x = grad ⊙ tanh'(x), written with y")
        # ---- your code: end ----
