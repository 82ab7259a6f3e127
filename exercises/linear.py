"""Exercise 3 of 6: the affine layer's three gradients.      Check: python -m src.verify --exercise linear

    y = x Wᵀ + b        x (B, in), W (out, in) as nn.Linear.weight, b (out,), y (B, out)

Write ``Linear.backward``: given ``grad = ∂L/∂y`` (B, out), compute

    grad_x      = ∂L/∂x    (B, in)
    grad_weight = ∂L/∂W    (out, in)
    grad_bias   = ∂L/∂b    (out,)

Each gradient has the shape of what it is the gradient of: write the shapes beside each product.
The derivation: docs/derivations.md#the-affine-layer.   Stuck?  python -m src.verify --exercise linear --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


class Linear(Function):
    """``y = x Wᵀ + b``; the project's piece: ``src.hand.functional.Linear``."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return x.mm(weight.t()) + bias  # (B, out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors  # x (B, in), weight (out, in); grad = ∂L/∂y (B, out)
        grad_x = grad_weight = grad_bias = None
        # ---- your code: start ----
        raise NotImplementedError("compute grad_x (B, in), grad_weight (out, in), grad_bias (out,)")
        # ---- your code: end ----
        return grad_x, grad_weight, grad_bias
