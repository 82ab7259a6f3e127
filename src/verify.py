"""The proof, for the user: every hand-derived gradient checked against numbers and against PyTorch.

    python -m src.verify                       # one row per piece; exit 0 only if every row passes
    python -m src.verify --mutants             # plant classic backward bugs; show which check catches each
    python -m src.verify --function pkg.module:MyFunction --shapes 64x784 500x784 500 \\
        [--reference pkg.module:callable]      # the same checks for your own torch.autograd.Function

Columns (a row passes when no cell fails; ``—``: does not apply):

* ``gradcheck`` — :func:`torch.autograd.gradcheck` in float64: the backward against the numerical
  Jacobian (central differences);
* ``gradgradcheck`` — the same for the backward's own backward, where the piece is twice
  differentiable (the one-node ``FeedForward`` is ``once_differentiable``);
* ``fp32``, ``fp64`` — the largest |ours − PyTorch built-in| over the value and every input's
  gradient, on random inputs; it passes when below ``rtol·max|built-in| + atol``;
* ``extreme`` — the same in float32 on extreme inputs (logits ±1e4, saturated sigmoid and tanh,
  probabilities down to 1e-30, weights of 1e4); both must also stay finite;
* ``kink`` — the value at the non-differentiable point, against PyTorch's convention: ReLU′(0) and
  ∂|w|/∂w at w = 0 (L1);
* ``lockstep`` — GD and Adam against ``torch.optim.SGD`` / ``Adam`` for 25 steps (the fp32/fp64/extreme
  cells then hold the parameters' largest difference after them); for the whole net, 25 GD steps
  of the custom net against its ``nn.Sequential`` twin.

When a cell fails, the row's hint says what the numbers suggest: the ratio of our gradient to the
reference (≈ 2: a missing ½; ≈ the batch size: a sum for a mean; ≈ −1: a flipped sign) or a
transposed shape.

Mutants (``--mutants``) are subclasses of the Functions and optimizers whose ``backward`` / ``step``
carries one classic bug, planted in memory; they wrap or replace ``backward`` and never patch the
source, so they keep working whatever the Functions' internals become.

This module needs only torch (no Lightning); the tests call :func:`verify_all`, :func:`run_mutants`
and :func:`check_user_function` directly.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.gradcheck import GradcheckError

from . import functional as HF
from . import losses as HL
from . import optim as HO

__all__ = [
    "COLUMNS",
    "Cell",
    "Row",
    "FunctionSpec",
    "SPECS",
    "MUTANTS",
    "check_function",
    "verify_all",
    "run_mutants",
    "check_user_function",
    "main",
]

#: column key → header
COLUMNS = {
    "gradcheck": "gradcheck",
    "gradgrad": "gradgradcheck",
    "fp32": "max|Δ| fp32",
    "fp64": "max|Δ| fp64",
    "extreme": "extreme fp32",
    "kink": "kink",
    "lockstep": "lockstep",
}
TOL = {torch.float32: (1e-5, 1e-7), torch.float64: (1e-10, 1e-12)}  # (rtol of max|ref|, atol)
#: extreme inputs in float32: saturated tanh's 1 − t² cancels, and the two formulas (ours g − g·t·t,
#: torch's g·(1 − t²)) round differently, by up to ~5e-5 of the largest gradient; bugs are O(1) factors
EXTREME_TOL = (1e-3, 1e-6)
B = 6  # batch size of the checks' inputs: not 2, so "≈ batch size" and "≈ 2" cannot be confused
STEPS = 25  # lockstep steps


# ------------------------------------------------------------------ results
@dataclass
class Cell:
    """One check's outcome: ``ok`` True / False, or None where the check does not apply."""

    ok: Optional[bool]
    text: str = "—"
    hint: str = ""

    def show(self) -> str:
        if self.ok is None:
            return "—"
        mark = "ok" if self.ok else "FAIL"
        return f"{self.text} {mark}" if self.text else mark


NA = Cell(None)


@dataclass
class Row:
    piece: str
    cells: dict[str, Cell] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.cells.values())

    def failed_columns(self) -> list[str]:
        return [k for k in COLUMNS if self.cells.get(k, NA).ok is False]

    def hints(self) -> list[str]:
        seen, out = set(), []
        for k in COLUMNS:
            c = self.cells.get(k, NA)
            if c.ok is False and c.hint and c.hint not in seen:
                seen.add(c.hint)
                out.append(f"{COLUMNS[k]}: {c.hint}")
        return out


# -------------------------------------------------------------------- hints
_SHAPE_ERR = re.compile(r"got \[([\d, ]*)\] but expected shape compatible with \[([\d, ]*)\]")


def _shape_hint(got: Sequence[int], expected: Sequence[int]) -> str:
    got, expected = tuple(got), tuple(expected)
    if got == expected[::-1] and got != expected:
        return f"transposed shape: the gradient is {got} where the input is {expected} (a dropped or extra transpose)"
    return f"wrong shape: the gradient is {got} where the input is {expected}"


def _error_hint(err: BaseException) -> str:
    msg = str(err)
    m = _SHAPE_ERR.search(msg)
    if m:
        parse = lambda s: tuple(int(v) for v in s.replace(" ", "").split(",") if v)  # noqa: E731
        return _shape_hint(parse(m.group(1)), parse(m.group(2)))
    first = msg.strip().splitlines()[0] if msg.strip() else type(err).__name__
    return f"{type(err).__name__}: {first[:160]}"


def ratio_hint(r: float, sizes: Sequence[int] = ()) -> str:
    """What a clean ratio ``ours / reference`` of two gradients suggests."""
    def near(a: float, b: float) -> bool:
        return abs(a - b) <= 0.02 * max(abs(b), 1e-12)

    if near(r, 1):
        return "ratio ≈ 1: rounding-level differences, not a formula error (loosen the tolerance?)"
    if abs(r) < 1e-6:
        return "ratio ≈ 0: the gradient does not arrive (dropped or detached)"
    if near(r, -1):
        return "ratio ≈ −1: a flipped sign"
    if near(r, 2):
        return "ratio ≈ 2: a missing ½ (or a factor 2 too many)"
    if near(r, 0.5):
        return "ratio ≈ ½: a ½ too many (or a missing factor 2)"
    for n in sorted(set(sizes), reverse=True):
        if n > 2 and near(r, n):
            return f"ratio ≈ {n}, the batch size or element count: a sum where the mean belongs"
        if n > 2 and near(r, 1 / n):
            return f"ratio ≈ 1/{n}: a mean where the sum belongs (or a second division by the batch size)"
    if near(r, -2) or near(r, -0.5):
        return f"ratio ≈ {r:.3g}: a flipped sign and a factor 2"
    return f"ours = {r:.4g} × the reference: a constant factor"


def compare_hint(ours: Tensor, ref: Tensor, sizes: Sequence[int] = ()) -> str:
    """Explain a mismatch between our tensor and the reference: shape, clean ratio, or neither."""
    if ours.shape != ref.shape:
        return _shape_hint(ours.shape, ref.shape)
    a, b = ours.detach().double().flatten(), ref.detach().double().flatten()
    bb = float(b @ b)
    if bb == 0 or not torch.isfinite(a).all():
        return "not finite" if not torch.isfinite(a).all() else "the reference is zero, ours is not"
    r = float(a @ b) / bb
    residual = float((a - r * b).norm())
    if residual <= 1e-3 * max(float(a.norm()), 1e-300):
        return ratio_hint(r, sizes)
    where = int((a - b).abs().argmax())
    return f"not a constant factor (best fit {r:.3g}×); largest difference at flat index {where}"


def directional(fn: Callable[..., Tensor], inputs: Sequence[Tensor], i: int, eps: float = 1e-6,
                seed: int = 7) -> Optional[tuple[float, float]]:  # fmt: skip
    """``(analytical, numerical)`` directional derivative of ``⟨fn(inputs), v⟩`` along a random ``u`` of input ``i``.

    Analytical: ``⟨∂⟨fn, v⟩/∂x_i, u⟩`` from the backward (0 where it gives no gradient);
    numerical: the central difference along ``u``.  ``None`` if the backward raised or returned
    a gradient of another shape.
    """
    gen = torch.Generator().manual_seed(seed)
    x = inputs[i]
    u = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    with torch.no_grad():
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        v = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        plus = [t if j != i else t + eps * u for j, t in enumerate(inputs)]
        minus = [t if j != i else t - eps * u for j, t in enumerate(inputs)]
        o1, o2 = fn(*plus), fn(*minus)
        o1, o2 = (o1[0], o2[0]) if isinstance(o1, tuple) else (o1, o2)
        numerical = float(((o1 - o2) / (2 * eps) * v).sum())
    try:
        with torch.enable_grad():
            out = fn(*inputs)
            out = out[0] if isinstance(out, tuple) else out
            if not out.requires_grad:
                return 0.0, numerical
            (g,) = torch.autograd.grad(out, [x], v, allow_unused=True)
    except RuntimeError:
        return None
    if g is None:
        return 0.0, numerical
    if g.shape != u.shape:
        return None
    return float((g * u).sum()), numerical


def directional_ratio(fn: Callable[..., Tensor], inputs: Sequence[Tensor], i: int, eps: float = 1e-6,
                      seed: int = 7) -> Optional[float]:  # fmt: skip
    """Analytical over numerical directional derivative (:func:`directional`): near 1 for a correct backward."""
    d = directional(fn, inputs, i, eps, seed)
    if d is None or d[1] == 0:
        return None
    return d[0] / d[1]


def _gradcheck_hint(fn: Callable[..., Tensor], inputs: Sequence[Tensor], sizes: Sequence[int], err: BaseException) -> str:
    if not isinstance(err, GradcheckError):
        return _error_hint(err)
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        r = directional_ratio(fn, inputs, i)
        if r is not None and abs(r - 1) > 1e-4:
            r2 = directional_ratio(fn, inputs, i, seed=8)  # a second direction: is it one constant factor?
            if r2 is None or abs(r2 - r) > 1e-3 * abs(r):
                return (f"input {i}: not a constant factor (ours/numerical is {r:.3g} along one random direction, "
                        f"{r2 if r2 is None else f'{r2:.3g}'} along another): the derivative's formula is wrong")  # fmt: skip
            return f"input {i}: " + ratio_hint(r, sizes)
    first = str(err).strip().splitlines()[0]
    return first[:160]


# ------------------------------------------------------------------ checks
def _max_diff(ours: Sequence[Tensor], ref: Sequence[Tensor], dtype: torch.dtype, sizes: Sequence[int],
              tol: Optional[tuple[float, float]] = None) -> Cell:  # fmt: skip
    """Largest |ours − ref| over matching tensors; pass if below rtol·max|ref| + atol, all finite."""
    rtol, atol = tol or TOL[dtype]
    worst, hint, ok = 0.0, "", True
    for a, b in zip(ours, ref):
        if a is None or b is None:
            if (a is None) != (b is None):
                ok, hint = False, "a gradient is missing (None) on one side"
            continue
        if a.shape != b.shape:
            return Cell(False, "shape", _shape_hint(a.shape, b.shape))
        if not torch.isfinite(a).all():
            return Cell(False, "nan/inf", "ours is not finite where PyTorch's is" if torch.isfinite(b).all() else "neither is finite")
        d = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        worst = max(worst, d)
        if d > atol + rtol * float(b.double().abs().max()) and ok:
            ok, hint = False, compare_hint(a, b, sizes)
    return Cell(ok, f"{worst:.0e}", hint)


def _values_and_grads(fn: Callable[..., Tensor], inputs: Sequence[Tensor], v: Optional[Tensor]) -> list[Tensor]:
    """``[value, ∂⟨value, v⟩/∂input for each input that requires grad]``."""
    with torch.enable_grad():
        out = fn(*inputs)
        diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
        grads = torch.autograd.grad(out, diff, v if v is not None else None, allow_unused=True)
    return [out.detach(), *grads]


def _cast(inputs: Sequence[Any], dtype: torch.dtype) -> list[Any]:
    return [
        x.detach().to(dtype).requires_grad_(x.requires_grad) if isinstance(x, Tensor) and x.is_floating_point() else x
        for x in inputs
    ]


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

    def fn(self, cls: Optional[type] = None) -> Callable[..., Tensor]:
        cls = cls or self.cls
        return lambda *xs: self.call(cls, *xs)


def _sizes(inputs: Sequence[Tensor]) -> list[int]:
    shapes = [x.shape for x in inputs if isinstance(x, Tensor)]
    return [n for s in shapes for n in (s[0] if len(s) else 1, s.numel())]


def check_function(spec: FunctionSpec, cls: Optional[type] = None) -> Row:
    """Run every column that applies to ``spec`` (with ``cls`` in place of its Function class)."""
    start = time.perf_counter()
    fn, row = spec.fn(cls), Row(spec.name)
    check_fn = spec.gradcheck_call(cls or spec.cls) if spec.gradcheck_call else fn
    gen = torch.Generator().manual_seed(0)
    x64 = spec.inputs(gen)
    sizes = _sizes(x64)
    with torch.random.fork_rng(devices=[]):  # gradcheck's fast mode draws from the global generator
        torch.manual_seed(0)
        for key, check, applies in (
            ("gradcheck", torch.autograd.gradcheck, True),
            ("gradgrad", torch.autograd.gradgradcheck, spec.twice),
        ):
            if not applies:
                row.cells[key] = NA
                continue
            try:
                check(check_fn, x64, eps=1e-6, atol=1e-5, rtol=1e-3)
                row.cells[key] = Cell(True, "")
            except Exception as err:  # GradcheckError, or the engine refusing a gradient
                row.cells[key] = Cell(False, "", _gradcheck_hint(check_fn, x64, sizes, err))
    for dtype, key, maker in (
        (torch.float32, "fp32", spec.inputs),
        (torch.float64, "fp64", spec.inputs),
        (torch.float32, "extreme", spec.extreme),
    ):
        if maker is None:
            row.cells[key] = NA
            continue
        xs = _cast(maker(torch.Generator().manual_seed(1)), dtype)
        row.cells[key] = _compare(fn, spec.reference, xs, dtype, sizes, tol=EXTREME_TOL if key == "extreme" else None)
    row.cells["kink"] = _compare(fn, spec.reference, spec.kink(), torch.float64, sizes, exact=True) if spec.kink else NA
    row.cells["lockstep"] = NA
    row.seconds = time.perf_counter() - start
    return row


def _compare(fn, reference, xs, dtype, sizes, exact: bool = False, tol=None) -> Cell:
    gen = torch.Generator().manual_seed(2)
    try:
        with torch.no_grad():
            out = reference(*[x.detach() if isinstance(x, Tensor) else x for x in xs])
        v = torch.randn(out.shape, generator=gen, dtype=dtype) if out.dim() else None
        ref = _values_and_grads(reference, xs, v)
        ours = _values_and_grads(fn, xs, v)
    except Exception as err:  # the backward returned a gradient of the wrong shape, …
        return Cell(False, "error", _error_hint(err))
    if exact:  # the convention at the kink: the same value, not just close
        same = all((a is None and b is None) or (a is not None and b is not None and a.shape == b.shape and torch.equal(a, b))
                   for a, b in zip(ours, ref))  # fmt: skip
        return Cell(True, "same") if same else Cell(False, "differs", "the gradient at the kink differs from PyTorch's convention (ReLU′(0) = 0, ∂|w|/∂w = 0 at 0)")
    return _max_diff(ours, ref, dtype, sizes, tol)


# ------------------------------------------------------------------- specs
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
    ws = HF.Workspace() if workspace else None  # reused by the calls of this row, as in training

    def call(cls: type, x: Tensor, *p: Tensor) -> Tensor:
        if ws is None:
            return cls.apply(x, *_ff_extras(cls, activation, None), *p)[0]
        with torch.no_grad():  # a step before this one has filled the buffers: this call reuses them
            cls.apply(x.detach() + 1, *_ff_extras(cls, activation, ws), *(q.detach() for q in p))
        return cls.apply(x, *_ff_extras(cls, activation, ws), *p)[0].clone()  # the buffer is rewritten next call

    def fresh(cls: type) -> Callable[..., Tensor]:
        # gradcheck runs many forwards before each backward, which a reused workspace forbids
        # (autograd's version counters raise): one fresh workspace per call runs the same in-place code
        return lambda x, *p: cls.apply(x, *_ff_extras(cls, activation, HF.Workspace()), *p)[0].clone()

    return FunctionSpec(
        f"FeedForward ({activation}, one node{', workspace' if workspace else ''})",
        HF.FeedForward,
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
        *(_feed_forward_spec(a, workspace=True) for a in ("sigmoid", "tanh", "relu") if hasattr(HF, "Workspace")),
        FunctionSpec("MSELoss", HL.MSELoss, lambda cls, p, t: cls.apply(p, t), F.mse_loss,
                     lambda g: [_n(g, B, 4), _n(g, B, 4, grad=False)],
                     extreme=lambda g: [_n(g, B, 4, scale=1e4), _n(g, B, 4, grad=False)]),
        FunctionSpec("CrossEntropy (probabilities)", HL.CrossEntropy, lambda cls, p, t: cls.apply(p, t),
                     lambda p, t: F.nll_loss(p.log(), t.argmax(-1)),
                     lambda g: [_probs(g), _onehot(g)],
                     extreme=lambda g: [_probs(g, scale=12.0), _onehot(g)]),  # probabilities down to ~1e-30
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


SPECS = _specs()


# ---------------------------------------------------------------- optimizers
def _lockstep(ours_cls: type, ref_cls: type, kw: dict, dtype: torch.dtype, grad_scale: float = 1.0,
              steps: int = STEPS) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:  # fmt: skip
    """Same start, each side's own gradients of the same loss; ``(initial, ours, torch's)`` after ``steps``."""
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(5, 4, generator=gen, dtype=dtype), torch.randn(5, generator=gen, dtype=dtype)]
    x = torch.randn(7, 4, generator=gen, dtype=dtype)
    sides = []
    for cls in (ours_cls, ref_cls):
        params = [p.clone().requires_grad_(True) for p in init]
        opt = cls(params, **kw)
        for _ in range(steps):
            opt.zero_grad()
            (torch.tanh(x @ params[0].t() + params[1]).pow(2).sum() * grad_scale).backward()
            opt.step()
        sides.append([p.detach() for p in params])
    return init, sides[0], sides[1]


OPTIMIZER_SETTINGS = {
    "GD": (HO.GD, torch.optim.SGD, [dict(lr=0.1), dict(lr=1e-3)]),
    "Adam": (HO.Adam, torch.optim.Adam, [dict(lr=1e-2), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)]),
}


def check_optimizer(name: str, ours_cls: Optional[type] = None) -> Row:
    """GD or Adam in lockstep with torch.optim for 25 steps (fp32, fp64, and gradients of 1e4 and 1e-4 scale)."""
    start = time.perf_counter()
    base, ref_cls, settings = OPTIMIZER_SETTINGS[name]
    ours_cls = ours_cls or base
    row = Row(f"{name} (vs torch.optim, {STEPS} steps)", {"gradcheck": NA, "gradgrad": NA, "kink": NA})
    for key, dtype, scales in (("fp32", torch.float32, (1.0,)), ("fp64", torch.float64, (1.0,)),
                               ("extreme", torch.float32, (1e4, 1e-4))):  # fmt: skip
        cells = []
        for kw in settings:
            for s in scales:
                init, ours, ref = _lockstep(ours_cls, ref_cls, kw, dtype, s)
                cell = _max_diff(ours, ref, dtype, (), EXTREME_TOL if key == "extreme" else None)
                if cell.ok is False:  # what the first step says: its ratio to torch's first step
                    i1, o1, r1 = _lockstep(ours_cls, ref_cls, kw, torch.float64, s, steps=1)
                    step_ours = torch.cat([(a - b).flatten() for a, b in zip(o1, i1)])
                    step_ref = torch.cat([(a - b).flatten() for a, b in zip(r1, i1)])
                    cell.hint = "first step: " + (_adam_hint(kw, step_ours, step_ref) or compare_hint(step_ours, step_ref))
                cells.append(cell)
        bad = [c for c in cells if c.ok is False]
        worst = max(float(c.text) if c.text[0].isdigit() else math.inf for c in cells)
        row.cells[key] = bad[0] if bad else Cell(True, f"{worst:.0e}")
    ok = all(row.cells[k].ok for k in ("fp32", "fp64", "extreme"))
    row.cells["lockstep"] = Cell(ok, f"{len(settings)}×{STEPS}")
    row.seconds = time.perf_counter() - start
    return row


def _adam_hint(kw: dict, ours: Tensor, ref: Tensor) -> str:
    """Adam's first step without bias correction is (1−β₁)/√(1−β₂) times the corrected one (|g| ≫ ε)."""
    if "lr" not in kw:
        return ""
    b1, b2 = kw.get("betas", (0.9, 0.999))
    r = float(ours @ ref) / max(float(ref @ ref), 1e-300)
    expected = (1 - b1) / math.sqrt(1 - b2)
    if abs(r - expected) < 0.02 * expected and abs(expected - 1) > 0.05:
        return f"ratio ≈ (1−β₁)/√(1−β₂) = {expected:.3g}: Adam without bias correction"
    return ""


# ----------------------------------------------------------------- the net
def check_net(activation: str) -> Row:
    """The custom net (fused one-node and per-op) against its nn.Sequential twin: value, gradients, 25 GD steps."""
    from .models import FeedForwardNet, SequentialNet  # noqa: PLC0415 (src.models imports src.init only)

    start = time.perf_counter()
    row = Row(f"FeedForwardNet ({activation}) vs nn.Sequential twin", {"gradgrad": NA, "kink": NA})
    hidden, sizes = list(SIZES[1:-1]), (B,)

    def build(dtype: torch.dtype, fused: bool = True):
        kw = dict(inputs=SIZES[0], hidden_layers=hidden, outputs=SIZES[-1], activation=activation, seed=0, dtype=dtype)
        return FeedForwardNet(fused=fused, **kw), SequentialNet(**kw)

    def loss_ours(net, x, t):
        return HL.CrossEntropyLoss().from_logits(net.logits(x), t, net.weights())

    def loss_twin(net, x, t):
        return F.cross_entropy(net.logits(x), t.argmax(-1))

    gen = torch.Generator().manual_seed(4)
    x64, t64 = torch.randn(B, SIZES[0], generator=gen, dtype=torch.float64), _onehot(gen, SIZES[-1])
    # gradcheck of the whole loss as a function of the custom net's parameters (fp64)
    net, _ = build(torch.float64)
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]

    def loss_of(*ps):
        return HL.softmax_cross_entropy(HF.feed_forward(x64, activation, list(ps)), t64)

    try:
        torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-5, rtol=1e-3)
        row.cells["gradcheck"] = Cell(True, "")
    except Exception as err:
        row.cells["gradcheck"] = Cell(False, "", _gradcheck_hint(loss_of, params, sizes, err))
    for key, dtype, scale in (("fp32", torch.float32, 1.0), ("fp64", torch.float64, 1.0), ("extreme", torch.float32, 30.0)):
        x, t = (x64 * scale).to(dtype), t64.to(dtype)
        worst = []
        for fused, workspace in ((True, True), (True, False), (False, False)):
            ours, twin = build(dtype, fused)
            if workspace and hasattr(HF, "Workspace"):
                ours.workspace = HF.Workspace()  # the training path: buffers reused from step to step
            lo, lt = loss_ours(ours, x, t), loss_twin(twin, x, t)
            go = torch.autograd.grad(lo, list(ours.parameters()))
            gt = torch.autograd.grad(lt, list(twin.parameters()))
            worst.append(_max_diff([lo.detach(), *go], [lt.detach(), *gt], dtype, sizes, EXTREME_TOL if key == "extreme" else None))
        bad = [c for c in worst if c.ok is False]
        row.cells[key] = bad[0] if bad else Cell(True, f"{max(float(c.text) for c in worst):.0e}")
    # 25 steps: our GD on our loss, torch's SGD on torch's loss; plain, and as training runs them
    # (the workspace, and the step taken inside backward by post-accumulate-grad hooks)
    cells = []
    for fast in (False, True):
        ours, twin = build(torch.float64)
        opt_o, opt_t = HO.GD(ours.parameters(), lr=0.5), torch.optim.SGD(twin.parameters(), lr=0.5)
        in_backward = fast and hasattr(opt_o, "step_in_backward")
        if in_backward:
            ours.workspace = HF.Workspace() if hasattr(HF, "Workspace") else None
            opt_o.step_in_backward()
        for _ in range(STEPS):
            for net_, opt, loss in ((ours, opt_o, loss_ours), (twin, opt_t, loss_twin)):
                opt.zero_grad()
                loss(net_, x64, t64).backward()
                if not (in_backward and opt is opt_o):
                    opt.step()
        if in_backward:
            opt_o.step_in_backward(False)
        ps_o, ps_t = [p.detach() for p in ours.parameters()], [p.detach() for p in twin.parameters()]
        cells.append(_max_diff(ps_o, ps_t, torch.float64, sizes))
    bad = [c for c in cells if c.ok is False]
    row.cells["lockstep"] = bad[0] if bad else Cell(True, f"{max(float(c.text) for c in cells):.0e}")
    row.seconds = time.perf_counter() - start
    return row


def verify_all() -> list[Row]:
    """One row per hand-derived piece: every Function, loss, penalty, GD, Adam, and the whole net."""
    rows = [check_function(s) for s in SPECS]
    rows += [check_optimizer(n) for n in OPTIMIZER_SETTINGS]
    rows += [check_net(a) for a in ("sigmoid", "tanh", "relu")]
    return rows


# ------------------------------------------------------------------ mutants
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


def _mutants() -> list[tuple[str, str, Callable[[], Row]]]:
    """``(bug, piece, run)``: each planted bug, the piece it goes into, and the checks of that piece on it."""
    spec = {s.cls.__name__ if not s.name.startswith("FeedForward") else s.name: s for s in SPECS}
    wsp = {a: spec.get(f"FeedForward ({a}, one node, workspace)", spec[f"FeedForward ({a}, one node)"]) for a in ("sigmoid", "relu")}
    ff = {a: spec[f"FeedForward ({a}, one node)"] for a in ("sigmoid", "tanh", "relu")}

    def fn(s: FunctionSpec, cls: type) -> Callable[[], Row]:
        return lambda: check_function(s, cls)

    neg = _map(lambda g, ctx: -g)
    transpose_w = _map(lambda g, ctx: g.t(), which=[1])
    # FeedForward's gradients: (x, activation, [workspace,] W1, b1, W2, b2, …): transpose every weight's
    first = 1 + len(_ff_extras(HF.FeedForward, "tanh", None))
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
        ("missing ½ (∂P/∂W = 2αW)", "L2Penalty", fn(spec["L2Penalty"], _wrap(HL.L2Penalty, "NoHalfL2", times2))),
        ("sign(0) = 1 at the kink", "L1Penalty",
         fn(spec["L1Penalty"], _replace(HL.L1Penalty, "KinkL1",
            lambda ctx, g: (None, *(torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * g * ctx.alpha for w in ctx.saved_tensors)),
            lambda ctx, inputs, output: (setattr(ctx, "alpha", inputs[0]), ctx.save_for_backward(*inputs[1:]))))),
        ("flipped sign", "FeedForward (sigmoid, workspace)", fn(wsp["sigmoid"], _wrap(HF.FeedForward, "FlippedFeedForward", neg))),
        ("dropped transpose (every ∂L/∂W_l transposed)", "FeedForward (tanh)",
         fn(ff["tanh"], _wrap(HF.FeedForward, "UntransposedFeedForward", feed_forward_transpose))),
        ("missing ½ (every gradient doubled)", "FeedForward (relu, workspace)",
         fn(wsp["relu"], _wrap(HF.FeedForward, "DoubledFeedForward", times2))),
        ("flipped sign (θ ← θ + η g)", "GD", lambda: check_optimizer("GD", _SumGD)),
        ("no bias correction", "Adam", lambda: check_optimizer("Adam", _NoBiasCorrectionAdam)),
    ]  # fmt: skip


MUTANTS = _mutants()


def run_mutants() -> list[tuple[str, str, Row]]:
    """Every planted bug with the row of checks run on it; a bug survives when its row passes."""
    return [(bug, piece, run()) for bug, piece, run in MUTANTS]


# ------------------------------------------------------------ user function
class UserInputError(ValueError):
    """A bad ``--function`` / ``--shapes`` / ``--reference``: one line, exit status 2."""


def load_object(spec: str, option: str) -> Any:
    """``pkg.module:Name`` → the object; :class:`UserInputError` naming what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserInputError(f"{option}={spec!r} is not allowed; write it as pkg.module:Name")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module's own code failing
        raise UserInputError(
            f"{option}={spec!r}: module {module_name!r} does not import ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserInputError(f"{option}={spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    """``"64x784"`` → ``(64, 784)``; ``"500"`` → ``(500,)``."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise UserInputError(f"--shapes: {text!r} is not allowed; a shape is positive sizes joined by x, e.g. 64x784 or 500")
    return shape


def check_user_function(function: str, shapes: Sequence[str], reference: Optional[str] = None) -> tuple[Row, str]:
    """Check a user's Function with random float64 inputs of ``shapes``; ``(row, verdict)``.

    Raises :class:`UserInputError` (one line) for a module that does not import, a name that is
    not a Function, or shapes that do not fit it.
    """
    cls = load_object(function, "--function")
    if not (isinstance(cls, type) and issubclass(cls, Function)):
        raise UserInputError(
            f"--function={function!r} is not a torch.autograd.Function subclass (its type is {type(cls).__name__}; "
            "give the class, e.g. pkg.module:MyFunction, not an instance or its .apply)"
        )
    if not shapes:
        raise UserInputError("--shapes is needed with --function: one shape per input, e.g. --shapes 64x784 500x784 500")
    dims = [parse_shape(s) for s in shapes]
    ref = load_object(reference, "--reference") if reference else None
    if ref is not None and not callable(ref):
        raise UserInputError(f"--reference={reference!r} is a {type(ref).__name__}, not a callable")
    gen = torch.Generator().manual_seed(0)

    def make(g: torch.Generator) -> list[Tensor]:
        return [torch.randn(d, generator=g, dtype=torch.float64).requires_grad_(True) for d in dims]

    try:
        with torch.no_grad():
            out = cls.apply(*make(gen))
    except Exception as err:
        raise UserInputError(
            f"--shapes {' '.join(shapes)} do not fit {cls.__name__}: its forward raised "
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        ) from None
    if not isinstance(out, Tensor):
        raise UserInputError(f"{cls.__name__}.forward returned {type(out).__name__}; the checker needs one tensor")
    if ref is not None:
        try:
            with torch.no_grad():
                r = ref(*make(torch.Generator().manual_seed(0)))
        except Exception as err:
            raise UserInputError(f"--reference={reference!r} does not accept the --shapes inputs: {type(err).__name__}: {err}") from None
        if not isinstance(r, Tensor) or r.shape != out.shape:
            raise UserInputError(
                f"--reference={reference!r} returns shape {tuple(getattr(r, 'shape', ()))}, "
                f"but {cls.__name__} returns {tuple(out.shape)}"
            )
    big = sum(math.prod(d) for d in dims) > 2000  # full Jacobians would take minutes: random projections
    spec = FunctionSpec(cls.__name__, cls, lambda c, *xs: c.apply(*xs), ref or (lambda *xs: cls.apply(*xs)), make)
    row = _user_row(spec, big, ref is not None)
    failed = row.failed_columns()
    if failed:
        verdict = f"FAIL: {cls.__name__}'s backward is wrong (failed: {', '.join(COLUMNS[k] for k in failed)})"
    else:
        checked = "the numerical Jacobian" + (" and the reference" if ref is not None else "")
        verdict = f"PASS: {cls.__name__}'s backward agrees with {checked}"
    return row, verdict


def _twice_differentiable(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> bool:
    """Does the backward build a graph (False for ``once_differentiable``)?"""
    with torch.enable_grad():
        out = fn(*inputs)
        v = torch.ones_like(out).requires_grad_(True)  # gradgradcheck differentiates through g too
        try:
            gs = [g for g in torch.autograd.grad(out, list(inputs), v, create_graph=True, allow_unused=True)
                  if g is not None and g.requires_grad]  # fmt: skip
            if not gs:
                return False
            # once_differentiable marks its gradients as requiring grad, through a node that gives
            # nothing back: a real backward is linear in v, so its gradient depends on v at least
            second = torch.autograd.grad(sum(g.sum() for g in gs), [*inputs, v], allow_unused=True)
        except RuntimeError as err:
            return "once_differentiable" not in str(err)
    return any(g is not None for g in second)


def _projected_check(fn: Callable[..., Tensor], inputs: Sequence[Tensor], sizes: Sequence[int], second: bool = False) -> Cell:
    """gradcheck by random projections, for inputs too large for full Jacobians.

    For each input, the analytical ``⟨∂⟨f, v⟩/∂x, u⟩`` against the central difference along ``u``,
    for two random directions (torch's own ``fast_mode`` does the same but, on a failure, rebuilds
    the full Jacobians to report them, which for 64×784 inputs takes longer than anyone waits).
    ``second``: the same for the scalar ``⟨∂⟨f, v⟩/∂inputs, w⟩``, i.e. the backward's own backward.
    """
    target = fn
    if second:
        gen = torch.Generator().manual_seed(11)
        with torch.no_grad():
            shape = fn(*inputs).shape
        v = torch.randn(shape, generator=gen, dtype=torch.float64)
        ws = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in inputs]

        def target(*xs: Tensor) -> Tensor:  # noqa: F811 (the backward as a function of the inputs)
            with torch.enable_grad():
                xs = [x if x.requires_grad else x.detach().requires_grad_(True) for x in xs]
                gs = torch.autograd.grad(fn(*xs), xs, v, create_graph=True, allow_unused=True)
            return sum((g * w).sum() for g, w in zip(gs, ws) if g is not None)

    for i, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        for seed in (7, 8):
            d = directional(target, inputs, i, seed=seed)
            if d is None:
                return Cell(False, "fast", f"input {i}: the backward raised or returned a gradient of the wrong shape")
            a, n = d
            if abs(a - n) <= 1e-5 + 1e-3 * abs(n):
                continue
            r, r2 = (a / n if n else None), directional_ratio(target, inputs, i, seed=15 - seed)
            if r is not None and r2 is not None and abs(r2 - r) <= 1e-3 * abs(r):
                return Cell(False, "fast", f"input {i}: " + ratio_hint(r, sizes))
            return Cell(False, "fast", f"input {i}: not a constant factor (ours/numerical {r if r is None else f'{r:.3g}'} "
                                       f"and {r2 if r2 is None else f'{r2:.3g}'} along two random directions)")  # fmt: skip
    return Cell(True, "fast")


def _user_row(spec: FunctionSpec, big: bool, with_ref: bool) -> Row:
    start = time.perf_counter()
    fn, row = spec.fn(), Row(spec.name, {"extreme": NA, "kink": NA, "lockstep": NA})
    x64 = spec.inputs(torch.Generator().manual_seed(0))
    sizes = _sizes(x64)
    twice = _twice_differentiable(fn, x64)
    if big:
        row.cells["gradcheck"] = _projected_check(fn, x64, sizes)
        row.cells["gradgrad"] = _projected_check(fn, x64, sizes, second=True) if twice else NA
    else:
        try:
            torch.autograd.gradcheck(fn, x64, eps=1e-6, atol=1e-5, rtol=1e-3)
            row.cells["gradcheck"] = Cell(True, "")
        except Exception as err:
            row.cells["gradcheck"] = Cell(False, "", _gradcheck_hint(fn, x64, sizes, err))
        try:
            if twice:  # once_differentiable (the backward builds no graph): does not apply
                torch.autograd.gradgradcheck(fn, x64, eps=1e-6, atol=1e-5, rtol=1e-3)
            row.cells["gradgrad"] = Cell(True, "") if twice else NA
        except Exception as err:
            hint = "the backward's own backward disagrees with its numerical Jacobian" if isinstance(err, GradcheckError) else _error_hint(err)
            row.cells["gradgrad"] = Cell(False, "", hint)
    for dtype, key in ((torch.float32, "fp32"), (torch.float64, "fp64")):
        if with_ref:
            row.cells[key] = _compare(fn, spec.reference, _cast(spec.inputs(torch.Generator().manual_seed(1)), dtype), dtype, sizes)
        else:
            row.cells[key] = NA
    row.seconds = time.perf_counter() - start
    return row


# --------------------------------------------------------------------- CLI
def format_table(rows: Sequence[Row], first: str = "piece") -> str:
    head = [first, *COLUMNS.values(), "result"]
    body = [[r.piece, *(r.cells.get(k, NA).show() for k in COLUMNS), "pass" if r.passed else "FAIL"] for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    fmt = lambda line: "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()  # noqa: E731
    out = [fmt(head), fmt(["-" * w for w in widths])]
    for r, line in zip(rows, body):
        out.append(fmt(line))
        out += [f"    ↳ {h}" for h in r.hints()]
    return "\n".join(out)


def _print_verify() -> int:
    start = time.perf_counter()
    rows = verify_all()
    print(format_table(rows))
    bad = [r.piece for r in rows if not r.passed]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} pieces pass ({time.perf_counter() - start:.1f} s)"
          + (f"; FAILED: {', '.join(bad)}" if bad else ""))  # fmt: skip
    return 1 if bad else 0


def _print_mutants() -> int:
    start = time.perf_counter()
    results = run_mutants()
    head = ["piece", "planted bug", "caught by", "hint"]
    body = []
    for bug, piece, row in results:
        caught = row.failed_columns()
        hint = row.hints()[0].split(": ", 1)[1] if row.hints() else ""
        body.append([piece, bug, ", ".join(COLUMNS[k] for k in caught) if caught else "SURVIVED", hint])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(3)]
    fmt = lambda line: "  ".join(c.ljust(w) for c, w in zip(line[:3], widths)) + "  " + line[3]  # noqa: E731
    print(fmt(head))
    print(fmt(["-" * w for w in widths] + ["-" * 4]))
    for line in body:
        print(fmt(line).rstrip())
    survived = [b for b in body if b[2] == "SURVIVED"]
    print(f"\n{len(body) - len(survived)} of {len(body)} mutants caught ({time.perf_counter() - start:.1f} s)"
          + (f"; SURVIVED: {'; '.join(f'{b[0]}: {b[1]}' for b in survived)}" if survived else ""))  # fmt: skip
    return 1 if survived else 0


def _print_user(function: str, shapes: Sequence[str], reference: Optional[str]) -> int:
    row, verdict = check_user_function(function, shapes, reference)
    print(format_table([row], first="function"))
    if row.cells["fp64"].ok is None:
        print("\n(no --reference: only the numerical Jacobian is checked; give --reference pkg.module:callable "
              "to compare values and gradients with an implementation you trust)")  # fmt: skip
    print(f"\nverdict: {verdict}")
    return 0 if row.passed else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.verify",
        description="Check every hand-derived gradient against gradcheck and PyTorch (exit 0 only if all pass); "
        "--mutants plants classic backward bugs; --function checks your own torch.autograd.Function.",
    )
    parser.add_argument("--mutants", action="store_true", help="plant each classic backward bug and show which check catches it")
    parser.add_argument("--function", metavar="pkg.module:MyFunction", help="check your own Function")
    parser.add_argument("--shapes", nargs="+", metavar="AxB", help="one shape per input of --function, e.g. 64x784 500x784 500")
    parser.add_argument("--reference", metavar="pkg.module:callable", help="compare --function with this implementation")
    args = parser.parse_args(argv)
    if (args.shapes or args.reference) and not args.function:
        parser.error("--shapes and --reference go with --function")
    if args.function and args.mutants:
        parser.error("--mutants and --function are separate runs")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.function:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # `python -m` puts the current folder first anyway; imports from here
        try:
            return _print_user(args.function, args.shapes or [], args.reference)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return _print_mutants() if args.mutants else _print_verify()


if __name__ == "__main__":
    sys.exit(main())
