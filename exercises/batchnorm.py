"""Exercise 8: batch norm's backward, simplified into one expression.      Check: python -m src.verify --exercise batchnorm

    μ = (1/B) Σ_b x,   σ² = (1/B) Σ_b (x − μ)²  (biased),   x̂ = (x − μ)/√(σ² + ε),   y = γ x̂ + β

x (B, F); μ, σ², γ, β (F,): each feature (column) on its own, the statistics over the batch.

Write ``batch_norm_backward`` (CS231n's batchnorm_backward_alt): given g = ∂L/∂y (B, F) and the
input x (not x̂: recompute what you need from x, as forward does), return

    dx      = ∂L/∂x    (B, F)    in ONE expression, simplified on paper from the graph walk
    dgamma  = ∂L/∂γ    (F,)
    dbeta   = ∂L/∂β    (F,)

``BatchNorm`` below is the Function that uses it: the forward is given.
The derivation: docs/batchnorm.md#4-the-simplification-into-the-closed-form.
Stuck?  python -m src.verify --exercise batchnorm --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


def batch_norm_backward(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)``; the project's piece: ``src.hand.norm.batch_norm_backward``."""
    B = x.shape[0]  # g, x (B, F); gamma (F,)
    dx = dgamma = dbeta = None
    # ---- your code: start ----
    raise NotImplementedError("compute x̂ and σ⁻¹ from x, then dx (B, F) in one expression, dgamma (F,), dbeta (F,)")
    # ---- your code: end ----
    return dx, dgamma, dbeta


class BatchNorm(Function):
    """``y = γ x̂ + β`` in training mode; the project's piece: ``src.hand.norm.BatchNorm``."""

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean = x.mean(0)  # μ (F,)
        var = ((x - mean) ** 2).mean(0)  # σ² (F,), biased: ÷ B
        x_hat = (x - mean) / torch.sqrt(var + eps)  # x̂ (B, F)
        return gamma * x_hat + beta  # y (B, F)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, gamma, _, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x, gamma)  # x, not x̂: backward recomputes x̂ (so it stays twice differentiable)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = batch_norm_backward(grad, x, gamma, ctx.eps)
        return dx, dgamma, dbeta, None  # eps gets no gradient
