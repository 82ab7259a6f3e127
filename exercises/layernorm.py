"""Exercise 9: layer normalization's backward.      Check: python -m src.verify --exercise layernorm

    μ = (1/F) Σ_j x,   σ² = (1/F) Σ_j (x − μ)²  (biased),   x̂ = (x − μ)/√(σ² + ε),   y = γ x̂ + β

x (B, F); μ, σ² (B, 1): one per ROW, over its F features (batch norm's statistics, the other way);
γ, β (F,): one per feature, as in batch norm.

Write ``layer_norm_backward``: given g = ∂L/∂y (B, F) and the input x (recompute x̂ and σ⁻¹ from
it, as forward does), return

    dx      = ∂L/∂x    (B, F)
    dgamma  = ∂L/∂γ    (F,)
    dbeta   = ∂L/∂β    (F,)

Mind where γ stands: it is one number per column, and the sums now run along the row.
``LayerNorm`` below is the Function that uses it: the forward is given.
The derivation: docs/batchnorm.md#6-layer-normalization.
Stuck?  python -m src.verify --exercise layernorm --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


def layer_norm_backward(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)``; the project's piece: ``src.hand.norm.layer_norm_backward``."""
    F = x.shape[1]  # g, x (B, F); gamma (F,)
    dx = dgamma = dbeta = None
    # ---- your code: start ----
    raise NotImplementedError("compute x̂ and σ⁻¹ per row from x, then dx (B, F), dgamma (F,), dbeta (F,)")
    # ---- your code: end ----
    return dx, dgamma, dbeta


class LayerNorm(Function):
    """``y = γ x̂ + β``, x̂ over each row's features; the project's piece: ``src.hand.norm.LayerNorm``."""

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        mean = x.mean(1, keepdim=True)  # μ (B, 1)
        var = ((x - mean) ** 2).mean(1, keepdim=True)  # σ² (B, 1), biased: ÷ F
        x_hat = (x - mean) / torch.sqrt(var + eps)  # x̂ (B, F)
        return gamma * x_hat + beta  # y (B, F)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, gamma, _, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x, gamma)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = layer_norm_backward(grad, x, gamma, ctx.eps)
        return dx, dgamma, dbeta, None
