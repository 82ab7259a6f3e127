"""Batch normalization and layer normalization as hand-derived Functions, for ``(batch, features)`` inputs.

The derivation, line by line with the shapes of a 64×500 hidden layer: ``docs/batchnorm.md``.

Forward (``B`` rows, ``F`` features; batch norm's statistics run over the batch, dim 0, layer
norm's over the features of each row, dim 1; ``N`` is the number of values averaged)::

    μ  = (1/N) Σ x                  the mean
    σ² = (1/N) Σ (x − μ)²           the BIASED variance (÷ N, not N − 1), as torch
    σ⁻¹ = 1 / √(σ² + ε)
    x̂  = (x − μ) σ⁻¹                (B, F)
    y  = γ x̂ + β                    γ, β: (F,), one per feature

Backward, with ``g = ∂L/∂y`` (B, F) and ``ĝ = γ ⊙ g`` (= ∂L/∂x̂), summing over the same dim::

    ∂L/∂β = Σ_b g                              (F,)
    ∂L/∂γ = Σ_b g ⊙ x̂                          (F,)
    ∂L/∂x = σ⁻¹/N · (N ĝ − Σ ĝ − x̂ Σ(ĝ ⊙ x̂))     (B, F)

For batch norm γ is constant along the summed dim and leaves the sums: ``(γσ⁻¹/B)(B g − Σg −
x̂ Σ(g x̂))``.  That closed form is :func:`batch_norm_backward`; :func:`batch_norm_backward_staged`
reaches the same numbers by walking the graph through ``x̂``, ``σ²`` and ``μ`` (the form a learner
writes first, CS231n's ``batchnorm_backward``), and :func:`batch_norm_graph_walk` returns every
intermediate gradient of that walk by name, including the "fourth term" through ``σ²`` into ``μ``
that carries ``Σ (x − μ) = 0``.

Every backward here recomputes ``μ``, ``σ⁻¹`` and ``x̂`` from the saved input ``x`` with
differentiable ops (saving ``x̂`` would cut it out of the graph of a second derivative), so the
Functions are twice differentiable: ``tests/test_norm.py`` runs ``gradgradcheck`` on each.

Evaluation mode (:class:`BatchNormEval`) normalizes with the running statistics, constants there:
``y`` is then a per-feature affine map of ``x`` and ``∂L/∂x = γσ⁻¹ g``.  The running statistics are
updated by :func:`update_running_stats_` as ``F.batch_norm`` updates them (momentum 0.1, the
UNBIASED variance); that bookkeeping is not differentiated and is not part of a Function.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch
from torch import Tensor
from torch.autograd import Function

from .checks import _dtype_error, check_float, describe

__all__ = [
    "BatchNorm", "BatchNormEval", "LayerNorm",
    "batch_norm", "layer_norm",
    "batch_norm_backward", "batch_norm_backward_staged", "batch_norm_graph_walk",
    "layer_norm_backward", "normalize", "update_running_stats_",
]  # fmt: skip


# ------------------------------------------------------------------ the forward's statistics
def normalize(x: Tensor, dim: int, eps: float) -> tuple[Tensor, Tensor]:
    """``(x̂, σ⁻¹)``: ``x`` centred and scaled over ``dim`` with the biased variance.

    ``μ = mean(x)``, ``σ² = mean((x − μ)²)``, ``σ⁻¹ = 1/√(σ² + ε)``, ``x̂ = (x − μ) σ⁻¹``; ``σ⁻¹`` keeps
    ``dim`` (size 1) so it broadcasts against ``x``.  Differentiable ops only: the backward passes
    call this on the saved ``x`` and stay differentiable.
    """
    mean = x.mean(dim, keepdim=True)  # μ: (1, F) for batch norm, (B, 1) for layer norm
    centred = x - mean  # x − μ: (B, F)
    var = (centred * centred).mean(dim, keepdim=True)  # σ², biased: ÷ N
    inv_std = torch.rsqrt(var + eps)  # σ⁻¹
    return centred * inv_std, inv_std  # x̂ (B, F), σ⁻¹


# ------------------------------------------------------------------ batch norm's backward, twice
def batch_norm_graph_walk(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> dict[str, Tensor]:
    """Every gradient of batch norm's graph, walked back one node at a time (training mode).

    The forward as a graph, each node a named symbol (shapes for ``x`` of ``(B, F)``)::

        μ = (1/B) Σ_b x               (F,)
        σ² = (1/B) Σ_b (x − μ)²        (F,)
        x̂ = (x − μ) (σ² + ε)^(−½)      (B, F)
        y = γ x̂ + β                   (B, F)

    and back, each line the chain rule at one node (``g = ∂L/∂y``)::

        ∂L/∂β  = Σ_b g                                        (F,)
        ∂L/∂γ  = Σ_b g x̂                                      (F,)
        ∂L/∂x̂  = g γ                                          (B, F)
        ∂L/∂σ² = Σ_b ∂L/∂x̂ · (x − μ) · (−½)(σ² + ε)^(−3/2)     (F,)
        ∂L/∂μ  = Σ_b ∂L/∂x̂ · (−σ⁻¹)  +  ∂L/∂σ² · (−2/B) Σ_b (x − μ)     (F,)
                                        └─ the "fourth term": Σ_b (x − μ) = 0
        ∂L/∂x  = ∂L/∂x̂ σ⁻¹ + ∂L/∂σ² · 2(x − μ)/B + ∂L/∂μ / B  (B, F)

    Returns ``{"dbeta", "dgamma", "dx_hat", "dvar", "dmean_via_x_hat", "dmean_via_var", "dmean",
    "dx"}``: ``dmean_via_var`` is the fourth term (zero up to rounding), kept so that a test and a
    learner can see it vanish.
    """
    B = x.shape[0]
    mean = x.mean(0)  # μ (F,)
    x_mu = x - mean  # x − μ (B, F)
    var = (x_mu * x_mu).mean(0)  # σ² (F,), biased
    inv_std = torch.rsqrt(var + eps)  # σ⁻¹ = (σ² + ε)^(−½) (F,)
    x_hat = x_mu * inv_std  # x̂ (B, F)

    dbeta = g.sum(0)  # (F,)
    dgamma = (g * x_hat).sum(0)  # (F,)
    dx_hat = g * gamma  # (B, F)
    dvar = (dx_hat * x_mu).sum(0) * -0.5 * inv_std**3  # (F,): (σ² + ε)^(−3/2) = σ⁻³
    dmean_via_x_hat = (dx_hat * -inv_std).sum(0)  # (F,)
    dmean_via_var = dvar * (-2.0 / B) * x_mu.sum(0)  # (F,): Σ (x − μ) = 0, so this is 0
    dmean = dmean_via_x_hat + dmean_via_var  # (F,)
    dx = dx_hat * inv_std + dvar * 2.0 * x_mu / B + dmean / B  # (B, F): through x̂, through σ², through μ
    return {"dbeta": dbeta, "dgamma": dgamma, "dx_hat": dx_hat, "dvar": dvar,
            "dmean_via_x_hat": dmean_via_x_hat, "dmean_via_var": dmean_via_var, "dmean": dmean, "dx": dx}  # fmt: skip


def batch_norm_backward_staged(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)`` of batch norm in training mode, by the graph walk (:func:`batch_norm_graph_walk`).

    The form a learner writes first; equal to :func:`batch_norm_backward` (``tests/test_norm.py``).
    """
    d = batch_norm_graph_walk(g, x, gamma, eps)
    return d["dx"], d["dgamma"], d["dbeta"]


def batch_norm_backward(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)`` of batch norm in training mode, in the simplified closed form.

    Substituting ``∂L/∂σ²`` and ``∂L/∂μ`` of the graph walk into ``∂L/∂x`` and using
    ``(x − μ)σ⁻¹ = x̂`` (``docs/batchnorm.md`` step by step)::

        ∂L/∂x = (γσ⁻¹ / B) · (B g − Σ_b g − x̂ Σ_b (g x̂))     (B, F)
        ∂L/∂γ = Σ_b g x̂                                      (F,)
        ∂L/∂β = Σ_b g                                        (F,)

    The two sums are ∂L/∂β and ∂L/∂γ themselves, so the gradient of ``x`` costs one more pass.
    This is what :class:`BatchNorm`'s backward runs.
    """
    B = x.shape[0]
    x_hat, inv_std = normalize(x, 0, eps)  # (B, F), (1, F)
    dbeta = g.sum(0)  # Σ_b g (F,)
    dgamma = (g * x_hat).sum(0)  # Σ_b g x̂ (F,)
    dx = (gamma * inv_std / B) * (B * g - dbeta - x_hat * dgamma)  # (B, F)
    return dx, dgamma, dbeta


def layer_norm_backward(g: Tensor, x: Tensor, gamma: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(∂L/∂x, ∂L/∂γ, ∂L/∂β)`` of layer norm: batch norm's derivation over the ``F`` features of each row.

    γ varies along the features, so it stays inside the sums, as ``ĝ = γ g`` (= ∂L/∂x̂)::

        ∂L/∂x = (σ⁻¹ / F) · (F ĝ − Σ_j ĝ − x̂ Σ_j (ĝ x̂))    (B, F); σ⁻¹: (B, 1), one per row
        ∂L/∂γ = Σ_b g x̂                                   (F,)   γ, β are per feature:
        ∂L/∂β = Σ_b g                                     (F,)   summed over the batch
    """
    features = x.shape[1]
    x_hat, inv_std = normalize(x, 1, eps)  # (B, F), (B, 1)
    g_hat = g * gamma  # ∂L/∂x̂ (B, F)
    dx = (inv_std / features) * (features * g_hat - g_hat.sum(1, keepdim=True)
                                 - x_hat * (g_hat * x_hat).sum(1, keepdim=True))  # fmt: skip
    return dx, (g * x_hat).sum(0), g.sum(0)


# ------------------------------------------------------------------ the Functions
class BatchNorm(Function):
    """Batch normalization in training mode: ``y = γ (x − μ)/√(σ² + ε) + β``, ``μ``, ``σ²`` over the batch.

    ``x`` (B, F), ``γ``, ``β`` (F,); ``σ²`` is the biased variance.  With ``g = ∂L/∂y`` (B, F)::

        ∂L/∂x = (γσ⁻¹ / B) · (B g − Σ_b g − x̂ Σ_b (g x̂))     (B, F)
        ∂L/∂γ = Σ_b g x̂                                      (F,)
        ∂L/∂β = Σ_b g                                        (F,)

    (:func:`batch_norm_backward`; the graph walk it simplifies: :func:`batch_norm_graph_walk`).
    Every row's gradient depends on every other row through ``μ`` and ``σ²``.  Backward recomputes
    ``x̂`` from the saved ``x`` with differentiable ops: twice differentiable.
    """

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        x_hat, _ = normalize(x, 0, eps)  # (B, F)
        return torch.addcmul(beta, x_hat, gamma)  # γ x̂ + β (B, F)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, gamma, _, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x, gamma)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = batch_norm_backward(grad, x, gamma, ctx.eps)
        return dx, dgamma, dbeta, None


class BatchNormEval(Function):
    """Batch normalization in evaluation mode: ``y = γ (x − m)/√(v + ε) + β`` with the running ``m``, ``v``.

    ``m``, ``v`` (F,) are constants here (nothing in the batch moves them), so ``y`` is a per-feature
    affine map of ``x`` and the mean and variance terms of training mode are gone::

        ∂L/∂x = γσ⁻¹ g          (B, F),  σ⁻¹ = 1/√(v + ε) (F,)
        ∂L/∂γ = Σ_b g x̂         (F,),    x̂ = (x − m) σ⁻¹
        ∂L/∂β = Σ_b g           (F,)

    The running statistics get no gradient (as in ``F.batch_norm``).
    """

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, running_mean: Tensor, running_var: Tensor, eps: float) -> Tensor:
        x_hat = (x - running_mean) * torch.rsqrt(running_var + eps)  # (B, F)
        return torch.addcmul(beta, x_hat, gamma)  # (B, F)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, gamma, _, running_mean, running_var, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x, gamma, running_mean, running_var)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, gamma, running_mean, running_var = ctx.saved_tensors
        inv_std = torch.rsqrt(running_var + ctx.eps)  # σ⁻¹ (F,)
        x_hat = (x - running_mean) * inv_std  # (B, F)
        return grad * (gamma * inv_std), (grad * x_hat).sum(0), grad.sum(0), None, None, None


class LayerNorm(Function):
    """Layer normalization: ``y = γ (x − μ)/√(σ² + ε) + β``, ``μ``, ``σ²`` over the ``F`` features of each row.

    ``x`` (B, F), ``γ``, ``β`` (F,); one ``μ``, ``σ²`` per row (B, 1), so rows do not interact and
    training and evaluation are the same.  With ``g = ∂L/∂y`` and ``ĝ = γ g`` (B, F)::

        ∂L/∂x = (σ⁻¹ / F) · (F ĝ − Σ_j ĝ − x̂ Σ_j (ĝ x̂))    (B, F)
        ∂L/∂γ = Σ_b g x̂                                   (F,)
        ∂L/∂β = Σ_b g                                     (F,)

    (:func:`layer_norm_backward`).  Twice differentiable, like :class:`BatchNorm`.
    """

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        x_hat, _ = normalize(x, 1, eps)  # (B, F)
        return torch.addcmul(beta, x_hat, gamma)  # (B, F)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, gamma, _, eps = inputs
        ctx.eps = eps
        ctx.save_for_backward(x, gamma)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = layer_norm_backward(grad, x, gamma, ctx.eps)
        return dx, dgamma, dbeta, None


# ------------------------------------------------------------------ running statistics
@torch.no_grad()
def update_running_stats_(running_mean: Tensor, running_var: Tensor, x: Tensor, momentum: float) -> None:
    """``r ← (1 − momentum) r + momentum · (batch statistic)``, in place, as ``F.batch_norm`` in training mode.

    The running variance takes the UNBIASED batch variance (÷ (B − 1)): an estimate of the
    population's variance for evaluation, while the normalization itself uses the biased one.
    """
    var, mean = torch.var_mean(x, 0, correction=1)  # (F,), (F,)
    running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1 - momentum).add_(var, alpha=momentum)


# ------------------------------------------------------------------ checks and the wrappers
def _check_number(fn: str, name: str, value: Any, low: float, high: Optional[float], low_open: bool) -> float:
    """``value`` as a float in its range, or a one-line ``TypeError`` / ``ValueError`` naming it."""
    allowed = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name}={value!r} must be a real number {allowed}; got {describe(value)}")
    value = float(value)
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{fn}: {name}={value!r} is not allowed; it must be a finite number {allowed}")
    return value


def _check_norm(fn: str, x: Any, gamma: Any, beta: Any, stats: tuple[Any, Any] = (None, None)) -> None:
    """``x (batch, features)``, ``gamma``, ``beta`` (and given running statistics) ``(features,)``, one floating dtype."""
    names = ["x", "gamma", "beta", *(n for n, s in zip(("running_mean", "running_var"), stats) if s is not None)]
    tensors = [x, gamma, beta, *(s for s in stats if s is not None)]
    for name, t in zip(names, tensors):
        check_float(fn, t, name)
    if x.dim() != 2 or any(t.shape != (x.shape[1],) for t in tensors[1:]):
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, tensors))
        hint = ""
        if x.dim() > 2:  # torch's (N, C, L) / (N, C, H, W): the channels in dim 1
            hint = " (torch's (N, C, L…) inputs normalize over dim 1: move it last and flatten to (-1, C) first)"
        raise ValueError(f"{fn} takes x (batch, features) and {', '.join(names[1:])} of shape (features,); got {shapes}{hint}")
    if any(t.dtype != x.dtype for t in tensors[1:]):
        raise _dtype_error(fn, names, tensors)


def batch_norm(x: Tensor, gamma: Tensor, beta: Tensor, running_mean: Optional[Tensor] = None,
               running_var: Optional[Tensor] = None, training: bool = True, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:  # fmt: skip
    """Batch normalization with hand-derived backward passes, as ``F.batch_norm(x, running_mean, running_var, gamma, beta, training, momentum, eps)``.

    Training mode (:class:`BatchNorm`): the batch's mean and biased variance normalize ``x``, and
    the running statistics, when given, are updated in place (:func:`update_running_stats_`).
    Evaluation mode (:class:`BatchNormEval`): the running statistics normalize ``x`` and are left
    as they are.  ``x`` is ``(batch, features)``; ``gamma``, ``beta`` and the running statistics
    ``(features,)``, all of one dtype.  Refused in one line, before any work: a batch of one row in
    training mode (its variance is 0: torch refuses it too), evaluation without running statistics,
    one running statistic without the other, ``momentum`` outside [0, 1] (torch's ``None``, a
    cumulative average, is not supported), ``eps`` ≤ 0.
    """
    fn = "batch_norm"
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must both be given or both be None; "
                         f"got running_mean {describe(running_mean)} and running_var {describe(running_var)}")  # fmt: skip
    _check_norm(fn, x, gamma, beta, (running_mean, running_var))
    momentum = _check_number(fn, "momentum", momentum, 0.0, 1.0, low_open=False)
    eps = _check_number(fn, "eps", eps, 0.0, None, low_open=True)
    if not training:
        if running_mean is None:
            raise ValueError(f"{fn}: evaluation mode (training=False) normalizes with the running statistics; "
                             "give running_mean and running_var (or training=True for the batch statistics)")  # fmt: skip
        return BatchNormEval.apply(x, gamma, beta, running_mean, running_var, eps)
    if x.shape[0] < 2:
        raise ValueError(f"{fn}: Expected more than 1 value per channel when training; got x {tuple(x.shape)} "
                         "(the variance of one row is 0: train with batches of 2 or more, or use training=False)")  # fmt: skip
    if running_mean is not None:
        update_running_stats_(running_mean, running_var, x.detach(), momentum)
    return BatchNorm.apply(x, gamma, beta, eps)


def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer normalization with a hand-derived backward (see :class:`LayerNorm`), as ``F.layer_norm(x, (F,), gamma, beta, eps)``.

    ``x`` is ``(batch, features)``; ``gamma``, ``beta`` ``(features,)``, one dtype; ``eps`` > 0.
    """
    _check_norm("layer_norm", x, gamma, beta)
    eps = _check_number("layer_norm", "eps", eps, 0.0, None, low_open=True)
    return LayerNorm.apply(x, gamma, beta, eps)
