"""Mutants: the Functions and optimizers with one classic backward bug each, planted in memory (``python -m src.verify --mutants``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ..hand import functional as HF
from ..hand import fused as FF
from ..hand import losses as HL
from ..hand import norm as HN
from ..hand import optim as HO
from .verification.checks import check_function, check_optimizer
from .verification.specs import SIZES, SPECS, FunctionSpec, _ff_extras
from .verification.table import Row

__all__ = ["MUTANTS", "run_mutants"]


def _wrap(base: type, name: str, transform: Callable[[Any, tuple], tuple]) -> type:
    """A subclass of ``base`` whose backward is ``transform(ctx, base's gradients)`` (the bug)."""

    def setup_context(ctx, inputs, output):
        base.setup_context(ctx, inputs, output)
        ctx.mutant_inputs = [tuple(x.shape) if isinstance(x, Tensor) else None for x in inputs]

    def backward(ctx, *grads):
        out = base.backward(ctx, *grads)
        out = out if isinstance(out, tuple) else (out,)
        res = transform(ctx, out)
        return res if len(res) > 1 else res[0]

    return type(name, (base,), {"setup_context": staticmethod(setup_context), "backward": staticmethod(backward)})


def _replace(base: type, name: str, backward: Callable, save: Callable) -> type:
    """A subclass of ``base`` with the same forward, its own ``setup_context`` (``save``) and buggy ``backward``."""
    return type(name, (base,), {"setup_context": staticmethod(save), "backward": staticmethod(backward)})


def _map(fn: Callable[[Tensor], Tensor], which: Optional[Sequence[int]] = None):
    def transform(ctx, grads):
        return tuple(g if g is None or (which is not None and i not in which) else fn(g, ctx) for i, g in enumerate(grads))

    return transform


def _save_input(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)


def _batch_scale(g: Tensor, ctx) -> Tensor:
    return g * ctx.mutant_inputs[0][0]


def _numel_scale(g: Tensor, ctx) -> Tensor:
    return g * math.prod(ctx.mutant_inputs[0])


class _SumGD(HO.GD):
    """GD with a flipped sign: θ ← θ + η g (ascends the loss)."""

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        torch._foreach_add_(params, grads, alpha=group["lr"])  # the bug: + where − belongs


class _ColumnMaxNormGD(HO.GD):
    """GD whose max-norm bounds each weight matrix's columns (a unit's outgoing weights), not its rows."""

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        torch._foreach_add_(params, grads, alpha=-group["lr"])
        for p in params:
            if p.dim() == 2:  # the bug: rows of Wᵀ, i.e. the columns of W
                HO.max_norm_(p.t(), group["max_norm"])


class _NoBiasCorrectionAdam(HO.Adam):
    """Adam without bias correction: θ ← θ − η m / (√v + ε), m and v not divided by 1 − βᵗ."""

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        b1, b2 = group["betas"]
        for p, g in zip(params, grads):
            st = self.state[p]
            if not st:
                st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
            st["m"].mul_(b1).add_(g, alpha=1 - b1)
            st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(st["m"], st["v"].sqrt().add_(group["eps"]), value=-group["lr"])  # the bug: no m̂, v̂


def _save_logits_target(ctx, inputs, output):
    ctx.label_smoothing = inputs[2]
    ctx.save_for_backward(inputs[0], inputs[1])


def _unsmoothed_backward(ctx, g):
    """Label smoothing in the forward only: the gradient still pulls towards the one-hot ``t`` (the bug)."""
    z, t = ctx.saved_tensors
    return (torch.softmax(z, -1) - t) * g / z.shape[0], None, None


# ---------------------------------------------- batch norm and layer norm: one term of the derivation wrong
def _bn_no_mean_term(ctx, g):
    """∂L/∂x = (γσ⁻¹/B)(B g − x̂ Σ(g x̂)): the mean term −Σg (the path through μ) dropped."""
    x, gamma = ctx.saved_tensors
    x_hat, inv_std = HN.normalize(x, 0, ctx.eps)
    B = x.shape[0]
    return (gamma * inv_std / B) * (B * g - x_hat * (g * x_hat).sum(0)), (g * x_hat).sum(0), g.sum(0), None


def _bn_no_xhat_term(ctx, g):
    """∂L/∂x = (γσ⁻¹/B)(B g − Σg): the x̂ Σ(g x̂) term (the path through σ²) dropped."""
    x, gamma = ctx.saved_tensors
    x_hat, inv_std = HN.normalize(x, 0, ctx.eps)
    B = x.shape[0]
    return (gamma * inv_std / B) * (B * g - g.sum(0)), (g * x_hat).sum(0), g.sum(0), None


def _unbiased_normalize(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    var, mean = torch.var_mean(x, 0, correction=1, keepdim=True)  # the bug: ÷ (B − 1), torch.var's default
    inv_std = torch.rsqrt(var + eps)
    return (x - mean) * inv_std, inv_std


def _bn_unbiased_forward(x, gamma, beta, eps):
    return torch.addcmul(beta, _unbiased_normalize(x, eps)[0], gamma)


def _bn_unbiased_backward(ctx, g):
    """The exact derivative of the unbiased-variance forward: a consistent bug only the reference sees."""
    x, gamma = ctx.saved_tensors
    x_hat, inv_std = _unbiased_normalize(x, ctx.eps)
    B, g_hat = x.shape[0], g * gamma
    dx = inv_std * (g_hat - g_hat.mean(0) - x_hat * (g_hat * x_hat).sum(0) / (B - 1))
    return dx, (g * x_hat).sum(0), g.sum(0), None


def _bn_eval_with_batch_stats(x, gamma, beta, running_mean, running_var, eps):
    return HN.BatchNorm.forward(x, gamma, beta, eps)  # the bug: the batch's μ, σ² in evaluation mode


def _bn_eval_with_batch_stats_backward(ctx, g):
    x, gamma, _, _ = ctx.saved_tensors
    return (*HN.batch_norm_backward(g, x, gamma, ctx.eps), None, None, None)


def _ln_gamma_outside(ctx, g):
    """Batch norm's closed form copied over the features: (γσ⁻¹/F)(F g − Σ_j g − x̂ Σ_j g x̂), γ outside the sums."""
    x, gamma = ctx.saved_tensors
    x_hat, inv_std = HN.normalize(x, 1, ctx.eps)
    n = x.shape[1]
    dx = (gamma * inv_std / n) * (n * g - g.sum(1, keepdim=True) - x_hat * (g * x_hat).sum(1, keepdim=True))
    return dx, (g * x_hat).sum(0), g.sum(0), None


def _with(base: type, name: str, **methods: Callable) -> type:
    """A subclass of ``base`` with some of its static methods replaced (the bug)."""
    return type(name, (base,), {k: staticmethod(f) for k, f in methods.items()})


def _checked(s: FunctionSpec, cls: type) -> Callable[[], Row]:
    """The checks of ``s`` run on the planted class ``cls``, to be run later."""
    return lambda: check_function(s, cls)


def _norm_mutants(by_name: dict) -> list[tuple[str, str, Callable[[], Row]]]:
    """The planted bugs of batch and layer normalization (:mod:`src.hand.norm`)."""
    fn = _checked
    return [
        ("dropped mean term (−Σg/B, the path through μ)", "BatchNorm (train mode)",
         fn(by_name["BatchNorm (train mode)"], _with(HN.BatchNorm, "NoMeanBatchNorm", backward=_bn_no_mean_term))),
        ("dropped Σ(g·x̂) term (x̂ Σ(g x̂)/B, the path through σ²)", "BatchNorm (train mode)",
         fn(by_name["BatchNorm (train mode)"], _with(HN.BatchNorm, "NoXhatBatchNorm", backward=_bn_no_xhat_term))),
        ("unbiased variance (÷ (B−1)) in the normalization, backward consistent with it", "BatchNorm (train mode)",
         fn(by_name["BatchNorm (train mode)"], _with(HN.BatchNorm, "UnbiasedBatchNorm", forward=_bn_unbiased_forward,
                                                     backward=_bn_unbiased_backward))),
        ("batch statistics in evaluation mode", "BatchNorm (eval mode)",
         fn(by_name["BatchNorm (eval mode)"], _with(HN.BatchNormEval, "BatchStatsEvalBatchNorm", forward=_bn_eval_with_batch_stats,
                                                    backward=_bn_eval_with_batch_stats_backward))),
        ("γ outside the sums over the features (batch norm's closed form copied)", "LayerNorm",
         fn(by_name["LayerNorm"], _with(HN.LayerNorm, "GammaOutsideLayerNorm", backward=_ln_gamma_outside))),
    ]  # fmt: skip


def _mutants() -> list[tuple[str, str, Callable[[], Row]]]:
    """``(bug, piece, run)``: each planted bug, the piece it goes into, and the checks of that piece on it."""
    by_name = {s.name: s for s in SPECS}
    spec = {s.cls.__name__ if not s.name.startswith("FeedForward") else s.name: s for s in SPECS}
    wsp = {a: spec.get(f"FeedForward ({a}, one node, workspace)", spec[f"FeedForward ({a}, one node)"]) for a in ("sigmoid", "relu")}
    ff = {a: spec[f"FeedForward ({a}, one node)"] for a in ("sigmoid", "tanh", "relu")}

    fn = _checked
    neg = _map(lambda g, ctx: -g)
    transpose_w = _map(lambda g, ctx: g.t(), which=[1])
    # FeedForward's gradients: (x, activation, [workspace,] W1, b1, W2, b2, …): transpose every weight's
    first = 1 + len(_ff_extras(FF.FeedForward, "tanh", None))
    feed_forward_transpose = _map(lambda g, ctx: g.t(), which=range(first, first + 2 * len(SIZES), 2))
    times2 = _map(lambda g, ctx: 2 * g)
    return [
        ("flipped sign (∂L/∂x = −g W)", "Linear",
         fn(spec["Linear"], _wrap(HF.Linear, "FlippedLinear", _map(lambda g, ctx: -g, which=[0])))),
        ("dropped transpose (∂L/∂W = xᵀ g, not gᵀ x)", "Linear",
         fn(spec["Linear"], _wrap(HF.Linear, "UntransposedLinear", transpose_w))),
        ("flipped sign", "Sigmoid", fn(spec["Sigmoid"], _wrap(HF.Sigmoid, "FlippedSigmoid", neg))),
        ("σ(1+σ) for σ(1−σ)", "Sigmoid",
         fn(spec["Sigmoid"], _replace(HF.Sigmoid, "PlusSigmoid", lambda ctx, g: g * ctx.saved_tensors[0] * (1 + ctx.saved_tensors[0]), _save_output))),
        ("output formula on the input: x(1−x), where σ(x)(1−σ(x)) belongs", "Sigmoid",
         fn(spec["Sigmoid"], _replace(HF.Sigmoid, "InputSigmoid", lambda ctx, g: g * ctx.saved_tensors[0] * (1 - ctx.saved_tensors[0]), _save_input))),
        ("output formula on the input: 1−x², where 1−tanh²(x) belongs", "Tanh",
         fn(spec["Tanh"], _replace(HF.Tanh, "InputTanh", lambda ctx, g: g * (1 - ctx.saved_tensors[0] ** 2), _save_input))),
        ("input formula on the output: σ(y)(1−σ(y)) of the saved y = σ(x)", "Sigmoid",
         fn(spec["Sigmoid"], _replace(HF.Sigmoid, "TwiceSigmoid", lambda ctx, g: g * torch.sigmoid(ctx.saved_tensors[0]) * (1 - torch.sigmoid(ctx.saved_tensors[0])), _save_output))),
        ("ReLU′(0) = 1 (x ≥ 0 for x > 0)", "ReLU",
         fn(spec["ReLU"], _replace(HF.ReLU, "KinkReLU", lambda ctx, g: g * (ctx.saved_tensors[0] >= 0), _save_input))),
        ("flipped sign", "Softmax", fn(spec["Softmax"], _wrap(HF.Softmax, "FlippedSoftmax", neg))),
        ("sum for mean (no 1/N)", "MSELoss", fn(spec["MSELoss"], _wrap(HL.MSELoss, "SumMSE", _map(_numel_scale)))),
        ("missing ½ of the 2 (∂L/∂p = (p−t)/N)", "MSELoss",
         fn(spec["MSELoss"], _wrap(HL.MSELoss, "HalfMSE", _map(lambda g, ctx: g / 2)))),
        ("flipped sign", "CrossEntropy", fn(spec["CrossEntropy"], _wrap(HL.CrossEntropy, "FlippedCE", neg))),
        ("sum for mean (no 1/B)", "SoftmaxCrossEntropy",
         fn(spec["SoftmaxCrossEntropy"], _wrap(HL.SoftmaxCrossEntropy, "SumSoftmaxCE", _map(_batch_scale)))),
        ("gradient against the unsmoothed target ((y − t)/B for (y − t̃)/B)", "SoftmaxCrossEntropy (label smoothing)",
         fn(by_name["SoftmaxCrossEntropy (label smoothing 0.1)"], _replace(HL.SoftmaxCrossEntropy, "UnsmoothedSoftmaxCE", _unsmoothed_backward, _save_logits_target))),
        ("missing ½ (∂P/∂W = 2αW)", "L2Penalty", fn(spec["L2Penalty"], _wrap(HL.L2Penalty, "NoHalfL2", times2))),
        ("sign(0) = 1 at the kink", "L1Penalty",
         fn(spec["L1Penalty"], _replace(HL.L1Penalty, "KinkL1",
            lambda ctx, g: (None, *(torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * g * ctx.alpha for w in ctx.saved_tensors)),
            lambda ctx, inputs, output: (setattr(ctx, "alpha", inputs[0]), ctx.save_for_backward(*inputs[1:]))))),
        ("flipped sign", "FeedForward (sigmoid, workspace)", fn(wsp["sigmoid"], _wrap(FF.FeedForward, "FlippedFeedForward", neg))),
        ("dropped transpose (every ∂L/∂W_l transposed)", "FeedForward (tanh)",
         fn(ff["tanh"], _wrap(FF.FeedForward, "UntransposedFeedForward", feed_forward_transpose))),
        ("missing ½ (every gradient doubled)", "FeedForward (relu, workspace)",
         fn(wsp["relu"], _wrap(FF.FeedForward, "DoubledFeedForward", times2))),
        *_norm_mutants(by_name),
        ("flipped sign (θ ← θ + η g)", "GD", lambda: check_optimizer("GD", _SumGD)),
        ("no bias correction", "Adam", lambda: check_optimizer("Adam", _NoBiasCorrectionAdam)),
        ("max-norm over columns (outgoing weights), not rows", "GD + max-norm",
         lambda: check_optimizer("GD + max-norm", _ColumnMaxNormGD)),
    ]  # fmt: skip


MUTANTS = _mutants()


def run_mutants() -> list[tuple[str, str, Row]]:
    """Every planted bug with the row of checks run on it; a bug survives when its row passes."""
    return [(bug, piece, run()) for bug, piece, run in MUTANTS]
