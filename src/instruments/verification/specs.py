"""What is checked: per hand-derived Function the PyTorch built-in it mirrors and the inputs it is checked on
(:class:`FunctionSpec`, :data:`SPECS`), and per optimizer the ``torch.optim`` reference and its
settings (:data:`OPTIMIZER_SETTINGS`).  How they are checked is :mod:`~src.instruments.verification.checks`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...hand import functional as HF
from ...hand import fused as FF
from ...hand import losses as HL
from ...hand import norm as HN
from ...hand import optim as HO
from .hints import _values_and_grads

__all__ = ["B", "FunctionSpec", "NORM_EPS", "OPTIMIZER_SETTINGS", "SIZES", "SPECS"]

B = 6  # batch size of the checks' inputs: not 2, so "≈ batch size" and "≈ 2" cannot be confused


@dataclass
class FunctionSpec:
    """How to check one hand-derived piece against PyTorch.

    ``call(cls, *inputs)`` applies the Function class ``cls`` (so a mutant subclass can take its
    place); ``reference(*inputs)`` is the PyTorch built-in it mirrors; the ``*_inputs`` makers
    return float64 tensors (those that require grad are differentiated).
    """

    name: str
    cls: type
    call: Callable[..., Tensor]
    reference: Callable[..., Tensor]
    inputs: Callable[[torch.Generator], list[Tensor]]
    extreme: Optional[Callable[[torch.Generator], list[Tensor]]] = None
    kink: Optional[Callable[[], list[Tensor]]] = None
    twice: bool = True
    #: ``cls → function`` for gradcheck where it must differ from :meth:`fn` (FeedForward's workspace)
    gradcheck_call: Optional[Callable[[type], Callable[..., Tensor]]] = None
    #: ``(fn, reference, float64 inputs) → hint`` for a failing row where the generic ratio hints say
    #: little (the normalizations: which term of the derivation is off); "" leaves the generic ones
    hint: Optional[Callable[[Callable[..., Tensor], Callable[..., Tensor], list[Tensor]], str]] = None

    def fn(self, cls: Optional[type] = None) -> Callable[..., Tensor]:
        cls = cls or self.cls
        return lambda *xs: self.call(cls, *xs)


def _n(gen: torch.Generator, *shape: int, scale: float = 1.0, grad: bool = True) -> Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(grad)


def _off_zero(gen: torch.Generator, *shape: int) -> Tensor:
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return (x + 0.1 * torch.sign(x)).requires_grad_(True)


def _onehot(gen: torch.Generator, k: int = 4) -> Tensor:
    labels = torch.arange(B) % k  # every class present, no random draw needed
    return F.one_hot(labels[torch.randperm(B, generator=gen)], k).double()


def _probs(gen: torch.Generator, k: int = 4, scale: float = 1.0) -> Tensor:
    return torch.softmax(torch.randn(B, k, generator=gen, dtype=torch.float64) * scale, -1).requires_grad_(True)


def _extreme_row(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64).repeat(B, 1).requires_grad_(True)


SIZES = (5, 4, 3, 4)  # the small net: 5 inputs, hidden 4 and 3, 4 classes (no two neighbours equal)
_TORCH_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda x: x}


def _net_params(gen: torch.Generator, scale: float = 1.0) -> list[Tensor]:
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        params += [_n(gen, fan_out, fan_in, scale=scale / math.sqrt(fan_in)), _n(gen, fan_out, scale=0.1)]
    return params


def _torch_net(activation: str) -> Callable[..., Tensor]:
    act = _TORCH_ACT[activation]

    def net(x: Tensor, *params: Tensor) -> Tensor:
        h = x
        for i in range(0, len(params), 2):
            h = F.linear(h, params[i], params[i + 1])
            if i + 2 < len(params):
                h = act(h)
        return h

    return net


def _ff_extras(cls: type, activation: str, workspace: Any) -> list[Any]:
    """The non-tensor arguments FeedForward takes between ``x`` and the parameters, by name."""
    names = [p.name for p in inspect.signature(cls.forward).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    # workspace: None = fresh tensors; masks (dropout, issue 13): None = no dropout
    return [activation if n == "activation" else None if n == "masks" else workspace for n in names[1:]]


def _feed_forward_spec(activation: str, workspace: bool = False) -> FunctionSpec:
    ws = FF.Workspace() if workspace else None  # reused by the calls of this row, as in training

    def call(cls: type, x: Tensor, *p: Tensor) -> Tensor:
        if ws is None:
            return cls.apply(x, *_ff_extras(cls, activation, None), *p)[0]
        with torch.no_grad():  # a step before this one has filled the buffers: this call reuses them
            cls.apply(x.detach() + 1, *_ff_extras(cls, activation, ws), *(q.detach() for q in p))
        return cls.apply(x, *_ff_extras(cls, activation, ws), *p)[0].clone()  # the buffer is rewritten next call

    def fresh(cls: type) -> Callable[..., Tensor]:
        # gradcheck runs many forwards before each backward, which a reused workspace forbids
        # (autograd's version counters raise): one fresh workspace per call runs the same in-place code
        return lambda x, *p: cls.apply(x, *_ff_extras(cls, activation, FF.Workspace()), *p)[0].clone()

    return FunctionSpec(
        f"FeedForward ({activation}, one node{', workspace' if workspace else ''})",
        FF.FeedForward,
        call,
        _torch_net(activation),
        lambda g: [_off_zero(g, B, SIZES[0]), *_net_params(g)],
        extreme=lambda g: [_n(g, B, SIZES[0], scale=30.0), *_net_params(g, scale=3.0)],
        twice=False,  # once_differentiable: its hidden outputs leave the graph
        gradcheck_call=fresh if workspace else None,
    )


def _specs() -> list[FunctionSpec]:
    alpha = 0.3
    act = lambda cls, x: cls.apply(x)  # noqa: E731
    return [
        FunctionSpec("Linear", HF.Linear, lambda cls, x, w, b: cls.apply(x, w, b), F.linear,
                     lambda g: [_n(g, B, 5), _n(g, 3, 5), _n(g, 3)],
                     extreme=lambda g: [_n(g, B, 5, scale=1e4), _n(g, 3, 5, scale=1e2), _n(g, 3, scale=1e4)]),
        FunctionSpec("ReLU", HF.ReLU, act, torch.relu, lambda g: [_off_zero(g, B, 7)],
                     extreme=lambda g: [_extreme_row(-1e4, -1.0, 1e-3, 1.0, 1e4)],
                     kink=lambda: [_extreme_row(-1.0, 0.0, 1.0)]),
        FunctionSpec("Sigmoid", HF.Sigmoid, act, torch.sigmoid, lambda g: [_n(g, B, 7)],
                     extreme=lambda g: [_extreme_row(-100.0, -30.0, -10.0, 0.0, 10.0, 30.0, 100.0)]),
        FunctionSpec("Tanh", HF.Tanh, act, torch.tanh, lambda g: [_n(g, B, 7)],
                     extreme=lambda g: [_extreme_row(-100.0, -20.0, -5.0, 0.0, 5.0, 20.0, 100.0)]),
        FunctionSpec("Softmax", HF.Softmax, act, lambda x: torch.softmax(x, -1), lambda g: [_n(g, B, 7)],
                     extreme=lambda g: [_n(g, B, 7, scale=1e4)]),
        FunctionSpec("Identity", HF.Identity, act, lambda x: x.view_as(x), lambda g: [_n(g, B, 7)],
                     extreme=lambda g: [_n(g, B, 7, scale=1e30)]),
        *(_feed_forward_spec(a) for a in ("sigmoid", "tanh", "relu")),
        *(_feed_forward_spec(a, workspace=True) for a in ("sigmoid", "tanh", "relu")),
        FunctionSpec("MSELoss", HL.MSELoss, lambda cls, p, t: cls.apply(p, t), F.mse_loss,
                     lambda g: [_n(g, B, 4), _n(g, B, 4, grad=False)],
                     extreme=lambda g: [_n(g, B, 4, scale=1e4), _n(g, B, 4, grad=False)]),
        FunctionSpec("CrossEntropy (probabilities)", HL.CrossEntropy, lambda cls, p, t: cls.apply(p, t),
                     lambda p, t: F.nll_loss(p.log(), t.argmax(-1)),
                     lambda g: [_probs(g), _onehot(g)],
                     extreme=lambda g: [_probs(g, scale=12.0), _onehot(g)]),  # probabilities down to ~1e-30
        FunctionSpec("SoftmaxCrossEntropy (class indices)", HL.SoftmaxCrossEntropy,
                     lambda cls, z, y: cls.apply(z, HL.one_hot_rows(y, z)), F.cross_entropy,
                     lambda g: [_n(g, B, 4), _onehot(g).argmax(-1)],  # int64 labels (B,), as F.cross_entropy takes
                     extreme=lambda g: [_n(g, B, 4, scale=1e4), _onehot(g).argmax(-1)]),
        FunctionSpec("SoftmaxCrossEntropy (label smoothing 0.1)", HL.SoftmaxCrossEntropy,
                     lambda cls, z, y: cls.apply(z, HL.one_hot_rows(y, z), 0.1),
                     lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1),
                     lambda g: [_n(g, B, 4), _onehot(g).argmax(-1)],
                     extreme=lambda g: [_n(g, B, 4, scale=1e4), _onehot(g).argmax(-1)]),
        FunctionSpec("SoftmaxCrossEntropy (logits)", HL.SoftmaxCrossEntropy, lambda cls, z, t: cls.apply(z, t),
                     F.cross_entropy, lambda g: [_n(g, B, 4), _onehot(g)],
                     extreme=lambda g: [_n(g, B, 4, scale=1e4), _onehot(g)]),
        FunctionSpec("L1Penalty", HL.L1Penalty, lambda cls, *w: cls.apply(alpha, *w),
                     lambda *w: alpha * sum(x.abs().sum() for x in w),
                     lambda g: [_off_zero(g, 3, 5), _off_zero(g, 4, 3)],
                     extreme=lambda g: [_n(g, 3, 5, scale=1e4), _n(g, 4, 3, scale=1e4)],
                     kink=lambda: [_extreme_row(-1.0, 0.0, 2.0)]),
        FunctionSpec("L2Penalty", HL.L2Penalty, lambda cls, *w: cls.apply(alpha, *w),
                     lambda *w: 0.5 * alpha * sum((x * x).sum() for x in w),
                     lambda g: [_n(g, 3, 5), _n(g, 4, 3)],
                     extreme=lambda g: [_n(g, 3, 5, scale=1e4), _n(g, 4, 3, scale=1e4)]),
        FunctionSpec("Add (loss + penalty)", HL.Add, lambda cls, a, b: cls.apply(a, b), torch.add,
                     lambda g: [_n(g, B, 3), _n(g, B, 3)]),
    ]  # fmt: skip


# ------------------------------------------------- batch norm and layer norm (src/hand/norm.py)
NORM_EPS = 1e-5  # F.batch_norm's and F.layer_norm's default


def _norm_inputs(gen: torch.Generator, running: bool = False, x_scale: Any = 1.0, x_shift: Any = 0.0) -> list[Tensor]:
    """``x (B, 5)``, ``γ`` in [0.5, 1.5) (away from 0), ``β``; with ``running``, a running mean and variance (constants)."""
    x = (torch.randn(B, 5, generator=gen, dtype=torch.float64) * x_scale + x_shift).requires_grad_(True)
    gamma = (torch.rand(5, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    xs = [x, gamma, _n(gen, 5)]
    if running:
        xs += [torch.randn(5, generator=gen, dtype=torch.float64), torch.rand(5, generator=gen, dtype=torch.float64) + 0.5]
    return xs


#: extreme x: per feature, scales from 1e-3 (variance below ε) to 1e4 and offsets up to 1e4
_NORM_SCALE = torch.tensor([1e4, 1e-3, 3.0, 1e2, 1.0], dtype=torch.float64)
_NORM_SHIFT = torch.tensor([1e4, 5.0, -1e3, 0.0, 1e4], dtype=torch.float64)


def _norm_hint(dim: int, train: bool = True) -> Callable[[Callable[..., Tensor], Callable[..., Tensor], list[Tensor]], str]:
    """What a failing normalization's numbers say, term by term of its derivation (``docs/batchnorm.md``).

    ``dim``: the dim the statistics run over (0: batch norm, each feature over the batch; 1: layer
    norm, each row over its features).  Looks at the value first, then at ``∂L/∂x − reference``.
    """
    along = "every row of a feature (column)" if dim == 0 else "every feature of a row"

    def hint(fn: Callable[..., Tensor], reference: Callable[..., Tensor], xs: list[Tensor]) -> str:
        x, gamma, beta = xs[:3]
        n = x.shape[dim]
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
        try:
            ours, ref = _values_and_grads(fn, xs, v), _values_and_grads(reference, xs, v)
        except Exception:  # noqa: BLE001  the generic hints have said what went wrong
            return ""
        (y, dx), (y_ref, dx_ref) = ours[:2], ref[:2]
        close = lambda a, b: float((a - b).abs().max()) <= 1e-8 * max(float(b.abs().max()), 1e-300)  # noqa: E731
        if not close(y, y_ref):
            if not train:
                with torch.no_grad():
                    y_batch = F.batch_norm(x, None, None, gamma, beta, training=True, eps=NORM_EPS)
                if close(y, y_batch):
                    return "evaluation mode normalized with the batch's statistics; it uses the running mean and variance"
            a, b = (y - beta).detach().flatten(), (y_ref - beta).detach().flatten()
            r = float(a @ b) / max(float(b @ b), 1e-300)
            unbiased = math.sqrt((n - 1) / n)
            if abs(r - unbiased) < 0.02 * unbiased and float((a - r * b).norm()) <= 1e-3 * float(a.norm()):
                return (f"x̂ is {r:.3g} ≈ √((N−1)/N) of the reference's (N = {n}): the unbiased variance (÷ (N−1)) "
                        "in the normalization, where the biased one (÷ N) belongs")  # fmt: skip
            return ""
        if dx is None or dx_ref is None or dx.shape != dx_ref.shape:
            return ""
        d = (dx - dx_ref).detach()
        size = float(d.abs().max())
        if size <= 1e-8 * float(dx_ref.abs().max()):
            return ""
        if float((d - d.mean(dim, keepdim=True)).abs().max()) <= 1e-6 * size:
            return (f"∂L/∂x is off by the same amount in {along}: the mean term −(1/N) Σ ĝ "
                    "(the path through μ) is missing or wrong")  # fmt: skip
        x_hat = HN.normalize(x.detach(), dim, NORM_EPS)[0]
        c = (d * x_hat).sum(dim, keepdim=True) / (x_hat * x_hat).sum(dim, keepdim=True)
        if float((d - c * x_hat).abs().max()) <= 1e-6 * size:
            return (f"∂L/∂x is off by a multiple of x̂ in {along}: the term −(1/N) x̂ Σ(ĝ·x̂) "
                    "(the path through σ²) is missing or wrong")  # fmt: skip
        if dim == 1:  # the error gone when γ is one number: γ was taken out of sums over the features
            flat = [x, gamma.detach().mean().expand_as(gamma).clone().requires_grad_(True), *xs[2:]]
            if close(_values_and_grads(fn, flat, v)[1], _values_and_grads(reference, flat, v)[1]):
                return ("∂L/∂x is right when γ is the same for every feature: γ varies along the sums of layer norm "
                        "and must stay inside them (ĝ = γ·g, not γ outside as in batch norm)")  # fmt: skip
        return ""

    return hint


def _norm_specs() -> list[FunctionSpec]:
    eps = NORM_EPS
    return [
        FunctionSpec("BatchNorm (train mode)", HN.BatchNorm, lambda cls, x, g, b: cls.apply(x, g, b, eps),
                     lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=eps),
                     lambda gen: _norm_inputs(gen),
                     extreme=lambda gen: _norm_inputs(gen, x_scale=_NORM_SCALE, x_shift=_NORM_SHIFT),
                     hint=_norm_hint(0)),
        FunctionSpec("BatchNorm (eval mode)", HN.BatchNormEval, lambda cls, x, g, b, m, v: cls.apply(x, g, b, m, v, eps),
                     lambda x, g, b, m, v: F.batch_norm(x, m, v, g, b, training=False, eps=eps),
                     lambda gen: _norm_inputs(gen, running=True),
                     extreme=lambda gen: _norm_inputs(gen, running=True, x_scale=_NORM_SCALE, x_shift=_NORM_SHIFT),
                     hint=_norm_hint(0, train=False)),
        FunctionSpec("LayerNorm", HN.LayerNorm, lambda cls, x, g, b: cls.apply(x, g, b, eps),
                     lambda x, g, b: F.layer_norm(x, (x.shape[1],), g, b, eps=eps),
                     lambda gen: _norm_inputs(gen),
                     extreme=lambda gen: _norm_inputs(gen, x_scale=_NORM_SCALE, x_shift=_NORM_SHIFT),
                     hint=_norm_hint(1)),
    ]  # fmt: skip


SPECS = [*_specs(), *_norm_specs()]


# ---------------------------------------------------------------- optimizers
def _projected(cls: type) -> type:
    """torch.optim's ``cls`` followed by the max-norm projection of every weight matrix: the reference for ``max_norm``.

    The projection itself (:func:`src.hand.optim.max_norm_`) is tested against ``torch.renorm``;
    this row checks where it goes: after each update, on weight matrices only.
    """

    class Projected(cls):
        def __init__(self, params, max_norm: float, **kw) -> None:
            super().__init__(params, **kw)
            self.max_norm = max_norm

        @torch.no_grad()
        def step(self, closure=None):
            loss = super().step(closure)
            for p in (p for g in self.param_groups for p in g["params"] if p.dim() == 2):
                HO.max_norm_(p, self.max_norm)
            return loss

    Projected.__name__ = f"Projected{cls.__name__}"
    return Projected


OPTIMIZER_SETTINGS = {
    "GD": (HO.GD, torch.optim.SGD, [dict(lr=0.1), dict(lr=1e-3)]),
    "Adam": (HO.Adam, torch.optim.Adam, [dict(lr=1e-2), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)]),
    # the weights start with row norms of about 2: a bound of 1 projects from the first step on
    "GD + max-norm": (HO.GD, _projected(torch.optim.SGD), [dict(lr=0.1, max_norm=1.0)]),
    "Adam + max-norm": (HO.Adam, _projected(torch.optim.Adam), [dict(lr=1e-2, max_norm=1.0)]),
}
