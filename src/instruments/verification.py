"""The checks behind ``python -m src.verify``: every hand-derived piece against numbers and against PyTorch.

Read in this order: :class:`FunctionSpec` and :data:`SPECS` (per Function: how to call it, the
PyTorch built-in it mirrors, the inputs it is checked on), :func:`check_function` (the columns
below, for one spec), :func:`check_optimizer` (GD and Adam), :func:`check_net` (the whole net),
:func:`verify_all` (one :class:`Row` per piece).  The hints come first in the file: what a
failing cell's numbers suggest.

Columns (:data:`COLUMNS`; a row passes when no cell fails; ``—``: does not apply):

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

When a cell fails, its hint says what the numbers suggest: the ratio of our gradient to the
reference (≈ 2: a missing ½; ≈ the batch size: a sum for a mean; ≈ −1: a flipped sign) or a
transposed shape.

Beside this file: :mod:`~src.instruments.mutants` (the planted bugs of ``--mutants``) and
:mod:`~src.instruments.custom_function` (``--function``: a user's own Function); the command
(arguments, the printed tables, the exit status) is :mod:`src.verify`.  Torch only, no Lightning.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

from ..hand import functional as HF
from ..hand import fused as FF
from ..hand import losses as HL
from ..hand import norm as HN
from ..hand import optim as HO
from ..hand.nets import FeedForwardNet, SequentialNet

__all__ = ["COLUMNS", "Cell", "Row", "FunctionSpec", "SPECS", "check_function", "check_optimizer", "check_net", "verify_all"]

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
    except Exception:  # the engine refusing a gradient, or whatever a learner's backward raised
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


def _worst(cells: Sequence[Cell]) -> Cell:
    """The first failing cell, else a passing one with the largest difference of all."""
    bad = [c for c in cells if c.ok is False]
    return bad[0] if bad else Cell(True, f"{max(float(c.text) for c in cells):.0e}")


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
    #: ``(fn, reference, float64 inputs) → hint`` for a failing row where the generic ratio hints say
    #: little (the normalizations: which term of the derivation is off); "" leaves the generic ones
    hint: Optional[Callable[[Callable[..., Tensor], Callable[..., Tensor], list[Tensor]], str]] = None

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
    if spec.hint is not None and not row.passed:
        hint = spec.hint(fn, spec.reference, x64)
        for cell in row.cells.values():
            if cell.ok is False and hint:
                cell.hint = hint
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
        row.cells[key] = _worst(cells)
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
def _nets(activation: str, dtype: torch.dtype, fused: bool = True) -> tuple[FeedForwardNet, SequentialNet]:
    """The custom net on :data:`SIZES` and its ``nn.Sequential`` twin, built from the same seed (same weights)."""
    kw = dict(inputs=SIZES[0], hidden_layers=list(SIZES[1:-1]), outputs=SIZES[-1], activation=activation, seed=0, dtype=dtype)
    return FeedForwardNet(fused=fused, **kw), SequentialNet(**kw)


def _loss_ours(net: FeedForwardNet, x: Tensor, t: Tensor) -> Tensor:
    return HL.CrossEntropyLoss().from_logits(net.logits(x), t, net.weights())


def _loss_twin(net: SequentialNet, x: Tensor, t: Tensor) -> Tensor:
    return F.cross_entropy(net.logits(x), t.argmax(-1))


def _net_gradcheck(activation: str, x: Tensor, t: Tensor) -> Cell:
    """gradcheck of the whole loss as a function of the custom net's parameters (fp64)."""
    net, _ = _nets(activation, torch.float64)
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]

    def loss_of(*ps: Tensor) -> Tensor:
        return HL.softmax_cross_entropy(FF.feed_forward(x, activation, list(ps)), t)

    try:
        torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-5, rtol=1e-3)
        return Cell(True, "")
    except Exception as err:
        return Cell(False, "", _gradcheck_hint(loss_of, params, (B,), err))


def _net_against_twin(activation: str, x: Tensor, t: Tensor, tol: Optional[tuple[float, float]]) -> Cell:
    """Loss and every gradient of the custom net against the twin's, in ``x``'s dtype: the one node
    with the training path's reused workspace, the one node with fresh tensors, and per op."""
    cells = []
    for fused, workspace in ((True, True), (True, False), (False, False)):
        ours, twin = _nets(activation, x.dtype, fused)
        if workspace:
            ours.workspace = FF.Workspace()  # the training path: buffers reused from step to step
        lo, lt = _loss_ours(ours, x, t), _loss_twin(twin, x, t)
        go = torch.autograd.grad(lo, list(ours.parameters()))
        gt = torch.autograd.grad(lt, list(twin.parameters()))
        cells.append(_max_diff([lo.detach(), *go], [lt.detach(), *gt], x.dtype, (B,), tol))
    return _worst(cells)


def _net_lockstep(activation: str, x: Tensor, t: Tensor, as_training: bool) -> Cell:
    """25 steps: our GD on our loss, torch's SGD on torch's loss; the parameters' largest difference.

    ``as_training``: as fit runs them, with the workspace (buffers reused from step to step).
    """
    ours, twin = _nets(activation, torch.float64)
    opt_o, opt_t = HO.GD(ours.parameters(), lr=0.5), torch.optim.SGD(twin.parameters(), lr=0.5)
    if as_training:
        ours.workspace = FF.Workspace()
    for _ in range(STEPS):
        for net, opt, loss in ((ours, opt_o, _loss_ours), (twin, opt_t, _loss_twin)):
            opt.zero_grad()
            loss(net, x, t).backward()
            opt.step()
    ps_o, ps_t = [p.detach() for p in ours.parameters()], [p.detach() for p in twin.parameters()]
    return _max_diff(ps_o, ps_t, torch.float64, (B,))


def check_net(activation: str) -> Row:
    """The custom net (fused one-node and per-op) against its nn.Sequential twin: value, gradients, 25 GD steps."""
    start = time.perf_counter()
    row = Row(f"FeedForwardNet ({activation}) vs nn.Sequential twin", {"gradgrad": NA, "kink": NA})
    gen = torch.Generator().manual_seed(4)
    x64, t64 = torch.randn(B, SIZES[0], generator=gen, dtype=torch.float64), _onehot(gen, SIZES[-1])
    row.cells["gradcheck"] = _net_gradcheck(activation, x64, t64)
    for key, dtype, scale in (("fp32", torch.float32, 1.0), ("fp64", torch.float64, 1.0), ("extreme", torch.float32, 30.0)):
        tol = EXTREME_TOL if key == "extreme" else None
        row.cells[key] = _net_against_twin(activation, (x64 * scale).to(dtype), t64.to(dtype), tol)
    row.cells["lockstep"] = _worst([_net_lockstep(activation, x64, t64, as_training) for as_training in (False, True)])
    row.seconds = time.perf_counter() - start
    return row


def verify_all() -> list[Row]:
    """One row per hand-derived piece: every Function, loss, penalty, GD, Adam, and the whole net."""
    rows = [check_function(s) for s in SPECS]
    rows += [check_optimizer(n) for n in OPTIMIZER_SETTINGS]
    rows += [check_net(a) for a in ("sigmoid", "tanh", "relu")]
    return rows
