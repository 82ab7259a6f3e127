"""Exercise 7: batch norm's backward, walked through the graph.      Check: python -m src.verify --exercise batchnorm_staged

The forward in training mode, for x (B, F), as a graph (each feature, a column, on its own):

    μ  = (1/B) Σ_b x                  (F,)     the mean over the batch
    σ² = (1/B) Σ_b (x − μ)²           (F,)     the BIASED variance (÷ B), as F.batch_norm
    x̂  = (x − μ) (σ² + ε)^(−½)        (B, F)   σ⁻¹ = (σ² + ε)^(−½) is inv_std
    y  = γ x̂ + β                      (B, F)   γ, β (F,), one per feature

Write ``batch_norm_graph_walk``: given g = ∂L/∂y (B, F), walk the graph back from y to x one node at
a time, as CS231n's first batchnorm_backward and nn-zero-to-hero's "backprop ninja" do, and fill

    dbeta, dgamma      ∂L/∂β, ∂L/∂γ                          (F,)
    dx_hat             ∂L/∂x̂                                 (B, F)
    dvar               ∂L/∂σ²                                (F,)
    dmean_via_x_hat    ∂L/∂μ through x̂ (μ enters x − μ)      (F,)
    dmean_via_var      ∂L/∂μ through σ² (μ enters σ² too)    (F,)
    dmean              ∂L/∂μ, both paths                     (F,)
    dx                 ∂L/∂x: through x̂, σ² and μ            (B, F)

The checker compares each with the project's, in this order, and names the first wrong one: the
ones above it are right, so that is where your error enters.
The derivation: docs/batchnorm.md#2-backward-through-the-graph-the-graph-walk.
Stuck?  python -m src.verify --exercise batchnorm_staged --hint
"""

import torch
from torch import Tensor


def batch_norm_graph_walk(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> dict[str, Tensor]:
    """Every gradient of batch norm's graph; the project's piece: ``src.hand.norm.batch_norm_graph_walk``."""
    B = x.shape[0]
    # the forward's nodes, recomputed from x (given)
    mean = x.mean(0)  # μ (F,)
    x_mu = x - mean  # x − μ (B, F)
    var = (x_mu * x_mu).mean(0)  # σ² (F,), biased: ÷ B
    inv_std = (var + eps) ** -0.5  # σ⁻¹ = (σ² + ε)^(−½) (F,)
    x_hat = x_mu * inv_std  # x̂ (B, F)
    dbeta = dgamma = dx_hat = dvar = dmean_via_x_hat = dmean_via_var = dmean = dx = None
    # ---- your code: start ----
    raise NotImplementedError("compute dbeta, dgamma, dx_hat, dvar, dmean_via_x_hat, dmean_via_var, dmean, dx")
    # ---- your code: end ----
    return {"dbeta": dbeta, "dgamma": dgamma, "dx_hat": dx_hat, "dvar": dvar,
            "dmean_via_x_hat": dmean_via_x_hat, "dmean_via_var": dmean_via_var, "dmean": dmean, "dx": dx}
