"""``python -m src.verify --exercise NAME``: a learner's own derivative, checked and explained.

Each exercise is a stub in ``exercises/NAME.py`` that defines the same class or function as the
project's piece (``class Sigmoid(torch.autograd.Function)``, ``def backward_pass``, ``class
Adam``), with the forward given and the derivative left between the ``# ---- your code ----``
lines.  The checker loads the learner's file and goes in this order, stopping at the first stage
that fails:

1. **written?**  the stub as shipped raises ``NotImplementedError``: "not written yet", where to
   write what; any other exception: its one line and the ``file:line`` of the learner's code;
2. **shapes**, per output: expected (the input's shape) against got, naming a transposed product,
   a missing sum over the batch, a sum over the wrong dimension;
3. **values** in float64 against the project's own piece (which equals PyTorch's): which elements
   differ (the first few indices), and the likely mistake: a classic wrong answer of this
   exercise computed on the same inputs (σ(1+σ), no bias correction, …) or a clean ratio
   (:func:`~src.instruments.verification.hints.compare_hint`: a missing 1/B, a flipped sign, ½);
4. **the project's checks**: the row ``python -m src.verify`` prints for this piece, run on the
   learner's code (:func:`~src.instruments.verification.checks.check_function`: gradcheck, gradgradcheck,
   fp32, fp64, extreme inputs; :func:`~src.instruments.verification.checks.check_optimizer`: 25 steps in
   lockstep with ``torch.optim.Adam``).

Adding an exercise is one stub file and one entry of :data:`EXERCISES`: a
:class:`FunctionExercise` for any ``torch.autograd.Function`` (give it a
:class:`~src.instruments.verification.specs.FunctionSpec`: the project's class, the PyTorch reference,
the inputs), with its hints and its classic mistakes (:class:`Mistake`); a
:class:`NormBackwardExercise` for a backward written as a function that returns its gradients by
name (batch norm's graph walk and closed form, layer norm), graded one by one in the derivation's
order, the first wrong one diagnosed.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
import os
import textwrap
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ..hand import backprop as HB
from ..hand import functional as HF
from ..hand import losses as HL
from ..hand import norm as HN
from ..hand import optim as HO
from .verification.checks import TOL, _sizes, check_function, check_optimizer
from .verification.hints import compare_hint
from .verification.specs import B, NORM_EPS, SIZES, SPECS, FunctionSpec, _n, _net_params, _off_zero, _torch_net
from .verification.table import COLUMNS, Row

__all__ = ["EXERCISES", "Exercise", "ExerciseInputError", "FunctionExercise", "Mistake", "NormBackwardExercise",
           "Outcome", "check_exercise", "hints", "resolve", "solution"]  # fmt: skip

START, END = "# ---- your code: start ----", "# ---- your code: end ----"
DOCS = "docs/derivations.md"


class ExerciseInputError(ValueError):
    """A bad ``--exercise`` / ``--hint``: one line on stderr, exit status 2."""


@dataclass
class Mistake:
    """A classic wrong answer: its name, how to fix it, and what it computes on the check's inputs.

    ``compute`` takes what the exercise's check computes the right answer from (per kind: the
    Function's inputs and upstream gradient; the recursion's arguments; Adam's settings) and
    returns what the wrong code would return; the learner's answer "is" this mistake when it
    equals that.
    """

    name: str
    fix: str
    compute: Callable[..., Any]
    at: Optional[int] = None  # FunctionExercise: the output (input index) this mistake is about


@dataclass
class Outcome:
    """What the checker found: the report's lines, the verdict (``PASS …`` / ``FAIL …``) and what to do next."""

    lines: list[str]
    passed: bool
    verdict: str
    next: str


class _Stop(Exception):
    """Raised inside a check to end it with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.verdict)
        self.outcome = outcome


@dataclass(kw_only=True)
class Exercise:
    """One exercise: the stub's name and symbol, what it teaches, the help in tiers, the check."""

    name: str  # the command's NAME and the stub's file: exercises/NAME.py
    symbol: str  # what the stub defines: the same name as the project's piece
    write: str  # what the learner writes, for "not written yet"
    teaches: str  # one line, for the README and the listing
    section: str  # the anchor in ``page``
    solution: Sequence[Callable]  # the project's code for the piece: --solution prints their source
    hints: Sequence[str]  # --hint 1, 2, …: a nudge first, then the derivation's key step
    mistakes: Sequence[Mistake] = ()
    page: str = DOCS  # the page that derives it (batch norm's: docs/batchnorm.md)

    @property
    def doc(self) -> str:
        return f"{self.page}#{self.section}"

    def check(self, obj: Any, ctx: "_Context") -> list[str]:
        """The report's lines for the learner's ``obj``; :class:`_Stop` at the first stage that fails (each kind defines it)."""
        raise NotImplementedError


@dataclass
class _Context:
    """The learner's file, for messages: its path as shown, and the lines between the markers."""

    path: Path
    shown: str
    region: Optional[tuple[int, int]]
    exercise: Exercise

    @property
    def where(self) -> str:
        return f"{self.shown} lines {self.region[0]}–{self.region[1]}" if self.region else self.shown


# ------------------------------------------------------------ formatting
def _shape(t: Any) -> str:
    if isinstance(t, Tensor):
        return str(tuple(t.shape)) if t.dim() != 1 else f"({t.shape[0]},)"
    return "None" if t is None else f"a {type(t).__name__}, not a tensor"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _differing(ours: Tensor, ref: Tensor, rtol: float, atol: float, show: int = 3) -> str:
    """``"12 of 42 elements differ; first (0, 1): yours 0.3, expected 0.1; …"``."""
    bad = ~((ours - ref).abs() <= atol + rtol * float(ref.abs().max()))  # NaN counts as differing
    idx = bad.nonzero().tolist()
    first = "; ".join(
        f"at {tuple(i) if len(i) != 1 else f'({i[0]},)'}: yours {_num(float(ours[tuple(i)]))}, expected {_num(float(ref[tuple(i)]))}"
        for i in idx[:show]
    ) if ours.dim() else f"yours {_num(float(ours))}, expected {_num(float(ref))}"  # fmt: skip
    return f"{len(idx) if ours.dim() else 1} of {ours.numel()} elements differ; {first}"


def _close(a: Any, b: Any, rtol: float = 1e-9) -> bool:
    """Equal up to float64 rounding (different but equivalent formulas), same shape, both finite."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
        return False
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return False
    a, b = a.detach().double(), b.detach().double()
    return bool((a - b).abs().max() <= 1e-12 + rtol * float(b.abs().max())) if a.numel() else True


def _matches(ours: Tensor, ref: Tensor) -> bool:
    """Right, in float64: within the fp64 tolerance of ``python -m src.verify`` (rounding of an equivalent formula)."""
    return _close(ours, ref, rtol=TOL[torch.float64][0])


def _ratio(got: Tensor, ref: Tensor, sizes: Sequence[int]) -> str:
    """:func:`compare_hint` (a clean ratio: a missing 1/B, a flipped sign, ½), with a readable index where there is none."""
    hint = compare_hint(got, ref, sizes)
    if hint.startswith("not a constant factor") and got.shape == ref.shape and got.dim():
        flat = int((got - ref).abs().flatten().nan_to_num(math.inf).argmax())
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), got.shape))
        return ("not a constant multiple of the right values (so not a missing factor or a sign): the formula itself "
                f"differs; the largest difference is at {where if len(where) > 1 else f'({where[0]},)'}")  # fmt: skip
    return hint


def _shape_problem(got: Any, expected: tuple[int, ...], batch: int, name: str) -> str:
    """What a wrong gradient shape suggests."""
    of = name.split("∂")[-1]  # "∂L/∂W_2" → "W_2"
    if not isinstance(got, Tensor):
        return f"{name} must be a tensor of {of}'s shape {expected}"
    g = tuple(got.shape)
    if g == expected[::-1] and len(g) == 2:
        return ("transposed: (A B)ᵀ = Bᵀ Aᵀ, so the factors of this product are in the wrong order or one transpose is "
                "missing; the gradient has the shape of what it is the gradient of")  # fmt: skip
    if len(g) == len(expected) + 1 and g[0] == batch and g[1:] == expected:
        return (f"a missing sum over the batch: one row per example, (B, …); the parameter is shared by the B examples, "
                f"so its gradient is their sum over dim 0")  # fmt: skip
    if len(expected) == 1 and g == (batch,) and expected != (batch,):
        return "summed over the wrong dimension: over the features (dim 1); the sum runs over the batch (dim 0)"
    if g == (1, *expected):
        return "a kept dimension of size 1 (keepdim=True?): the gradient has the shape of what it is the gradient of"
    if g == () and expected != ():
        return "a scalar: summed over every dimension; keep the ones of the input's shape"
    return f"wrong shape: the gradient of {of} has {of}'s shape"


def _shape_table(lines: list[str], rows: Sequence[tuple[str, Any, Tensor]], batch: int) -> list[str]:
    """One line per gradient ``(name, got, the right one)``: expected against got; the names whose shape is wrong."""
    cells = [(n, str(tuple(r.shape)) if r.dim() != 1 else f"({r.shape[0]},)", _shape(t)) for n, t, r in rows]
    w = [max(len(c[k]) for c in cells) for k in range(3)]
    bad = []
    for (n, t, r), (_, exp, got) in zip(rows, cells):
        ok = isinstance(t, Tensor) and t.shape == r.shape
        lines.append(f"  {n.ljust(w[0])}  expected {exp.ljust(w[1])}  got {got.ljust(w[2])}  {'ok' if ok else 'FAIL'}")
        if ok:
            continue
        bad.append(n)
        if t is None:
            lines.append("    ↳ not computed (None)")
            continue
        problem = _shape_problem(t, tuple(r.shape), batch, n)
        if isinstance(t, Tensor) and t.dim() == 2 and t.shape == r.shape[::-1] and _close(t.t(), r):
            problem += " (its values are the right gradient's, transposed: only the product's order is wrong)"
        elif isinstance(t, Tensor) and t.dim() == r.dim() + 1 and t.shape[1:] == r.shape and _close(t.sum(0), r):
            problem += " (summed over dim 0 it would be right)"
        lines.append(f"    ↳ {problem}")
    return bad


def _location(err: BaseException, path: Path) -> tuple[str, str]:
    """``file:line`` of the learner's code where ``err`` was raised (else the deepest frame), and the line."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{_shown(Path(err.filename))}:{err.lineno}", (err.text or "").strip()
    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if _same_file(f.filename, path)]
    f = (mine or frames or [None])[-1]
    if f is None:
        return _shown(path), ""
    return f"{_shown(Path(f.filename))}:{f.lineno}", (f.line or "").strip()


def _same_file(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _learner(ctx: _Context, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run the learner's code; a ``NotImplementedError`` from their file is "not written yet", any other error one FAIL line."""
    try:
        return fn(*args, **kw)
    except NotImplementedError as err:
        if any(_same_file(f.filename, ctx.path) for f in traceback.extract_tb(err.__traceback__)):
            raise _Stop(_not_written(ctx)) from None
        raise _Stop(_raised(ctx, err)) from None
    except Exception as err:  # the learner's code failing: one line, never a traceback
        raise _Stop(_raised(ctx, err)) from None


def _not_written(ctx: _Context) -> Outcome:
    ex = ctx.exercise
    at = f", lines {ctx.region[0]}–{ctx.region[1]} (between the \"your code\" lines)," if ctx.region else ""
    lines = [f"not written yet: open {ctx.shown}{at} and write {ex.write}"]
    return Outcome(lines, False, "FAIL: not written yet",
                   f"read {ex.doc}, write it, run this command again; stuck? add --hint")  # fmt: skip


def _raised(ctx: _Context, err: BaseException) -> Outcome:
    where, code = _location(err, ctx.path)
    return Outcome([], False, f"FAIL: {where}: {_one_line(err)}",
                   (f"fix that line (`{code}`)" if code else "fix it") + f"; {_shapes_note(ctx)}run this command again")  # fmt: skip


def _shapes_note(ctx: _Context) -> str:
    note = getattr(ctx.exercise, "shapes_note", "")
    return f"the shapes: {note}; " if note else ""


# ------------------------------------------------ the project's checks, briefly
def _row_summary(row: Row) -> str:
    cells = [(COLUMNS[k], c) for k, c in row.cells.items() if c.ok is not None]
    return " · ".join(f"{name} {c.show()}" for name, c in cells)


def _project_checks(lines: list[str], rows: Sequence[Row], what: str) -> None:
    """Append the project's rows (``python -m src.verify``'s columns); :class:`_Stop` if one fails."""
    lines.append(f"the project's checks ({what}):")
    for row in rows:
        lines.append(f"  {row.piece}: {_row_summary(row)}")
        lines += [f"    ↳ {h}" for h in row.hints()]
    bad = [r for r in rows if not r.passed]
    if bad:
        cols = sorted({COLUMNS[k] for r in bad for k in r.failed_columns()}, key=list(COLUMNS.values()).index)
        raise _Stop(Outcome(lines, False, f"FAIL: the values agree on the first inputs, but not {', '.join(cols)}",
                            "read the ↳ lines above: the failing inputs are larger or extreme (overflow? a formula "
                            "that recomputes what it could read from the output?); run this command again"))  # fmt: skip


# ---------------------------------------------------------- Functions
@dataclass(kw_only=True)
class FunctionExercise(Exercise):
    """A ``torch.autograd.Function`` whose ``backward`` the learner writes.

    ``spec`` is the project's :class:`~src.instruments.verification.specs.FunctionSpec` of the piece
    (its class, the PyTorch reference, the inputs): the values are compared with ``spec.cls``,
    and the learner's class is run through :func:`check_function` with it.  ``inputs`` names the
    Function's inputs (``x``, ``weight``, …) for the messages.  A :class:`Mistake`'s ``compute``
    takes ``(inputs, grad)`` and returns its wrong gradient of input ``at``.
    """

    spec: Callable[[], FunctionSpec]
    inputs: Sequence[str]
    shapes_note: str = ""

    def check(self, cls: Any, ctx: _Context) -> list[str]:
        from torch.autograd import Function

        if not (isinstance(cls, type) and issubclass(cls, Function)):
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol} in {ctx.shown} is not a torch.autograd.Function class",
                                f"keep the stub's `class {self.symbol}(Function)` and write only its backward"))  # fmt: skip
        spec = self.spec()
        xs = spec.inputs(torch.Generator().manual_seed(0))
        batch = xs[0].shape[0]
        with torch.enable_grad():
            out = _learner(ctx, spec.call, cls, *xs)
        gen = torch.Generator().manual_seed(5)
        # the upstream gradient: random, not ones, so a backward that forgets to multiply by it shows
        grad = (torch.randn(out.shape, generator=gen, dtype=out.dtype) if out.dim() else torch.tensor(0.7, dtype=out.dtype))
        node, given = out.grad_fn, grad.clone()
        with torch.no_grad():  # as autograd's engine calls backward
            res = _learner(ctx, cls.backward, node, given)
        if not torch.equal(given, grad):  # autograd may hand the same tensor to other nodes
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol}.backward wrote into grad (an in-place op on it)",
                                f"compute a new tensor (grad * …, not grad.mul_(…)): backward must never change its "
                                f"argument; fix {ctx.where}"))  # fmt: skip
        res = res if isinstance(res, tuple) else (res,)
        if len(res) < len(xs):
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol}.backward returns {len(res)} gradient(s); forward takes "
                                f"{len(xs)} inputs ({', '.join(self.inputs)})",
                                "return one gradient per input of forward, in order (None for one that needs none)"))  # fmt: skip
        want = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
        names = {i: f"∂L/∂{self.inputs[i]}" for i in want}
        with torch.enable_grad():  # the project's gradients and PyTorch's, for the same upstream gradient
            diff = [xs[i] for i in want]
            ours_ref = torch.autograd.grad(spec.call(spec.cls, *xs), diff, grad)
            torch_ref = torch.autograd.grad(spec.reference(*xs), diff, grad)
        lines = [f"shapes (B = {batch}):"]
        shape_bad = _shape_table(lines, [(names[i], res[i], ref) for i, ref in zip(want, ours_ref)], batch)
        if shape_bad:
            raise _Stop(Outcome(lines, False, f"FAIL: {', '.join(shape_bad)}: not the shape of {' and '.join(n.split('∂')[-1] for n in shape_bad)}",
                                f"fix {' and '.join(shape_bad)} in {ctx.where}; {_shapes_note(ctx)}run this command again"))  # fmt: skip
        agree = max(float((a - b).abs().max()) for a, b in zip(ours_ref, torch_ref))
        lines.append(f"values (float64, against the project's {spec.cls.__name__}; it and PyTorch's agree to {agree:.0e}):")
        width = max(len(n) for n in names.values())
        wrong = []
        for i, ref in zip(want, ours_ref):
            got = res[i].detach()
            if _matches(got, ref):
                lines.append(f"  {names[i].ljust(width)}  ok")
                continue
            wrong.append(names[i])
            rtol, atol = TOL[torch.float64]
            lines.append(f"  {names[i].ljust(width)}  FAIL: {_differing(got, ref, rtol, atol)}")
            lines.append(f"    ↳ likely: {self._diagnose(i, got, ref, xs, grad)}")
        if wrong:
            raise _Stop(Outcome(lines, False, f"FAIL: {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong",
                                f"fix {' and '.join(wrong)} in {ctx.where} (the ↳ line says what looks wrong); "
                                "run this command again; stuck? add --hint"))  # fmt: skip
        _project_checks(lines, [check_function(spec, cls)], "python -m src.verify's row for this piece, on your class")
        return lines

    def _diagnose(self, i: int, got: Tensor, ref: Tensor, xs: Sequence[Tensor], grad: Tensor) -> str:
        for m in self.mistakes:
            if m.at in (None, i) and _close(got, m.compute(xs, grad)):
                return f"{m.name}: {m.fix}"
        if grad.dim() == 0 or not torch.equal(grad, torch.ones_like(grad)):  # the upstream gradient not multiplied in
            with torch.enable_grad():
                diff = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
                spec = self.spec()
                plain = torch.autograd.grad(spec.call(spec.cls, *xs), diff, torch.ones_like(grad))
            k = [j for j, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad].index(i)
            if _close(got, plain[k]):
                return "the upstream gradient `grad` (backward's argument) is not multiplied in: the chain rule multiplies by it"
        return _ratio(got, ref, _sizes(list(xs)))


# ---------------------------------------------------------- backprop
def _recursion(delta: Tensor, weights: Sequence[Tensor], tape: HB.Tape, activation: str, *, g_prime: bool = True,
               bias: str = "sum") -> HB.Gradients:  # fmt: skip
    """:func:`src.hand.backprop.backward_pass` with a switch per classic mistake (the checker's wrong answers)."""
    g = HF.ACTIVATION_FUNCTIONS[activation]
    L = len(weights)
    dW, db = [None] * L, [None] * L
    for l in range(L, 0, -1):
        dW[l - 1] = delta.t().mm(tape.d[l - 1])
        db[l - 1] = delta.sum(0) if bias == "sum" else delta.mean(0)
        if l > 1:
            grad_d = delta.mm(weights[l - 1])
            delta = g.derivative(grad_d, tape.h[l - 2]) if g_prime else grad_d
    return HB.Gradients(delta.mm(weights[0]), dW, db)


def _gradients_as_list(res: Any, L: int) -> Optional[list[tuple[str, Any]]]:
    """``[("∂L/∂W_L", t), ("∂L/∂b_L", t), …, ("∂L/∂x", t)]``: top layer first, as the recursion goes."""
    try:
        x, W, b = (res.x, res.W, res.b) if hasattr(res, "W") else res
        W, b = list(W), list(b)
    except (TypeError, ValueError):
        return None
    if len(W) != L or len(b) != L:
        return None
    out = []
    for l in range(L, 0, -1):
        out += [(f"∂L/∂W_{l}", W[l - 1]), (f"∂L/∂b_{l}", b[l - 1])]
    return [*out, ("∂L/∂x", x)]


def _wrap_backward_pass(backward_pass: Callable, activation: str) -> type:
    """A Function whose forward is :func:`src.hand.backprop.forward_pass` and whose backward is ``backward_pass``.

    So the learner's recursion runs through :func:`check_function` (gradcheck, fp32, fp64, extreme)
    as the one-node net does.
    """
    from torch.autograd import Function
    from torch.autograd.function import once_differentiable

    def forward(ctx, x, *params):
        logits, tape = HB.forward_pass(x, params[0::2], params[1::2], activation)
        ctx.tape, ctx.weights = tape, params[0::2]
        return logits

    @once_differentiable
    def backward(ctx, grad):
        gr = backward_pass(grad, ctx.weights, ctx.tape, activation)
        return (gr.x, *(t for pair in zip(gr.W, gr.b) for t in pair))

    return type(f"YourBackprop_{activation}", (Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


def _net_spec(backward_pass: Callable, activation: str) -> FunctionSpec:
    """The small net of ``python -m src.verify``'s one-node rows, with the learner's ``backward_pass`` as its backward."""
    return FunctionSpec(f"the net ({activation}) with your backward_pass", _wrap_backward_pass(backward_pass, activation),
                        lambda c, x, *p: c.apply(x, *p), _torch_net(activation),
                        lambda g: [_off_zero(g, B, SIZES[0]), *_net_params(g)],
                        extreme=lambda g: [_n(g, B, SIZES[0], scale=30.0), *_net_params(g, scale=3.0)], twice=False)  # fmt: skip


@dataclass(kw_only=True)
class BackpropExercise(Exercise):
    """``backward_pass(delta, weights, tape, activation)``: the recursion, given :func:`src.hand.backprop.forward_pass`.

    A :class:`Mistake`'s ``compute`` takes ``(delta, weights, tape, activation)`` and returns
    :class:`~src.hand.backprop.Gradients`.
    """

    activations: Sequence[str] = ("sigmoid", "tanh", "relu")
    shapes_note: str = ""

    def check(self, fn: Any, ctx: _Context) -> list[str]:
        if not callable(fn):
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol} in {ctx.shown} is not a function",
                                f"keep the stub's `def {self.symbol}(delta, weights, tape, activation)`"))  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        x, params = _off_zero(gen, B, SIZES[0]).detach(), [p.detach() for p in _net_params(gen)]
        weights, biases = params[0::2], params[1::2]
        L = len(weights)
        delta = torch.randn(B, SIZES[-1], generator=gen, dtype=torch.float64)  # δ_L, as a loss would give
        lines: list[str] = []
        for activation in self.activations:
            _, tape = HB.forward_pass(x, weights, biases, activation)
            res = _learner(ctx, fn, delta, weights, tape, activation)
            got = _gradients_as_list(res, L)
            ref = _gradients_as_list(HB.backward_pass(delta, weights, tape, activation), L)
            if got is None:
                raise _Stop(Outcome(lines, False, f"FAIL: {self.symbol} returned {type(res).__name__}, not Gradients(x, W, b) "
                                    f"with one ∂L/∂W_l and one ∂L/∂b_l per layer ({L} each)",
                                    "end with `return Gradients(dx, dW, db)`, dW and db lists indexed l − 1"))  # fmt: skip
            expected = [(n, tuple(t.shape)) for n, t in ref]
            width = max(len(n) for n, _ in got)
            net = "×".join(map(str, SIZES))
            if activation == self.activations[0]:
                lines.append(f"shapes (a {net} net, B = {B}, {activation}):")
                bad = _shape_table(lines, [(n, t, r) for (n, t), (_, r) in zip(got, ref)], B)
                if bad:
                    raise _Stop(Outcome(lines, False, f"FAIL: {', '.join(bad)}: not the shape of {' and '.join(n.split('∂')[-1] for n in bad)}",
                                        f"fix {bad[0]} first, in {ctx.where}; {_shapes_note(ctx)}run this command again"))  # fmt: skip
            else:
                for (n, t), (_, exp) in zip(got, expected):
                    if not (isinstance(t, Tensor) and tuple(t.shape) == exp):
                        raise _Stop(Outcome(lines, False, f"FAIL: with {activation}, {n} has shape {_shape(t)}, expected {exp}",
                                            f"use `g` (the activation's Function), not one activation's formula; fix {ctx.where}"))  # fmt: skip
            right = [_matches(t.detach(), r) for (_, t), (_, r) in zip(got, ref)]
            if all(right) and activation != self.activations[0]:
                lines.append(f"values ({activation}): all {len(right)} ok")
                continue
            lines.append(f"values ({activation}, float64, top layer first, against src/hand/backprop.py's backward_pass):")
            first_bad = None
            for (n, t), (_, r), ok in zip(got, ref, right):
                if ok:
                    lines.append(f"  {n.ljust(width)}  ok")
                    continue
                rtol, atol = TOL[torch.float64]
                lines.append(f"  {n.ljust(width)}  FAIL: {_differing(t.detach(), r, rtol, atol)}")
                if first_bad is None:
                    first_bad = n
                    lines.append(f"    ↳ likely: {self._diagnose(got, ref, n, delta, weights, tape, activation)}")
            if first_bad:
                raise _Stop(Outcome(lines, False, f"FAIL: the first wrong gradient is {first_bad} ({activation})",
                                    f"fix it in {ctx.where} (the ↳ line says where the error enters); run this command again"))  # fmt: skip
        rows = [check_function(_net_spec(fn, activation)) for activation in self.activations]
        _project_checks(lines, rows, "the whole net, your recursion against nn.Sequential's autograd")
        return lines

    def _diagnose(self, got, ref, first_bad, delta, weights, tape, activation) -> str:
        for m in self.mistakes:
            wrong = _gradients_as_list(m.compute(delta, weights, tape, activation), len(weights))
            if all(_close(t, w) for (_, t), (_, w) in zip(got, wrong)):
                return f"{m.name}: {m.fix}"
        if activation != self.activations[0]:
            return (f"with {self.activations[0]} every gradient was right, with {activation} not: g' must be the "
                    "activation's own, g.derivative(grad, h), not one activation's formula written out")  # fmt: skip
        i = [n for n, _ in got].index(first_bad)
        hint = _ratio(got[i][1].detach(), ref[i][1], (B,))
        L = len(weights)
        if first_bad.startswith("∂L/∂b"):
            where = f"{first_bad} = Σ_batch δ (the ∂L/∂W beside it is right)"
        elif first_bad == f"∂L/∂W_{L}":
            where = f"∂L/∂W_{L} = δ_{L}ᵀ d_{L - 1}, at the top, where δ_{L} is given: the product itself"
        elif first_bad == "∂L/∂x":
            where = "∂L/∂x = δ_1 W_1, after the loop (every ∂L/∂W and ∂L/∂b is right)"
        else:
            l = int(first_bad.split("_")[1])
            where = (f"the layers above are right, so the error enters in δ_{l} = (δ_{l + 1} W_{l + 1}) ⊙ g'(z_{l}), "
                     f"g' read from h_{l} = tape.h[{l - 1}]")  # fmt: skip
        return f"{hint}. Where: {where}"


# ------------------------------------------------------------ Adam
def _adam_reference(params0: Sequence[Tensor], grads: Sequence[Sequence[Tensor]], lr: float, betas: tuple[float, float],
                    eps: float, mistake: str = "") -> list[list[Tensor]]:  # fmt: skip
    """The parameters after each step of Adam (with ``mistake``: one classic wrong version of it)."""
    b1, b2 = (betas[1], betas[0]) if mistake == "swapped betas" else betas
    ps = [p.clone() for p in params0]
    ms, vs = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    out = []
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            m_prev, v_prev = (0, 0) if mistake == "state not kept" else (ms[i], vs[i])
            ms[i], vs[i] = b1 * m_prev + (1 - b1) * g, b2 * v_prev + (1 - b2) * g * g
            m_hat = ms[i] if mistake in ("no bias correction", "v only") else ms[i] / (1 - b1**t)
            v_hat = vs[i] if mistake in ("no bias correction", "m only") else vs[i] / (1 - b2**t)
            denom = (v_hat + eps).sqrt() if mistake == "eps inside" else v_hat.sqrt() + eps
            step = lr * m_hat / denom
            ps[i] = ps[i] + step if mistake == "flipped sign" else ps[i] - step
        out.append([p.clone() for p in ps])
    return out


def _trajectory(cls: type, params0: Sequence[Tensor], grads: Sequence[Sequence[Tensor]], kw: dict) -> list[list[Tensor]]:
    """The parameters after each step of the optimizer ``cls`` fed ``grads``."""
    params = [p.clone().requires_grad_(True) for p in params0]
    opt, out = cls(params, **kw), []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


@dataclass(kw_only=True)
class OptimizerExercise(Exercise):
    """A ``torch.optim.Optimizer`` whose update the learner writes (Adam).

    The check feeds the same gradients to the learner's optimizer and to the project's for a few
    steps, then runs :func:`check_optimizer` (25 steps in lockstep with ``torch.optim``).  A
    :class:`Mistake`'s ``compute`` takes ``(params0, grads, lr, betas, eps)`` and returns the
    parameters after each step.
    """

    project: type  # the project's optimizer: the reference
    verify_name: str  # the row of OPTIMIZER_SETTINGS to run
    kw: dict = field(default_factory=dict)
    steps: int = 4
    shapes_note: str = ""

    def check(self, cls: Any, ctx: _Context) -> list[str]:
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol} in {ctx.shown} is not a torch.optim.Optimizer class",
                                f"keep the stub's `class {self.symbol}(Optimizer)` and write only its update"))  # fmt: skip
        gen = torch.Generator().manual_seed(3)
        params0 = [torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
        scales = (1e-2, 3e-2, 5e-3, 2e-2, 1e-2, 4e-2)[: self.steps]  # |g| ~ ε·100: ε matters a little, not much
        grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) * s for p in params0] for s in scales]
        params = [p.clone().requires_grad_(True) for p in params0]
        opt = _learner(ctx, cls, params, **self.kw)
        ref = _trajectory(self.project, params0, grads, self.kw)
        names = ["W (5, 4)", "b (5,)"]
        lines = [f"{self.steps} steps on W (5, 4) and b (5,), float64, {', '.join(f'{k}={v}' for k, v in self.kw.items())}, "
                 f"against the project's {self.project.__name__} (src/hand/optim.py):"]  # fmt: skip
        for t, gs in enumerate(grads, 1):
            before = [p.detach().clone() for p in params]
            for p, g in zip(params, gs):
                p.grad = g.clone()
            _learner(ctx, opt.step)
            for i, p in enumerate(params):
                if tuple(p.shape) != tuple(params0[i].shape) or p.dtype != params0[i].dtype:
                    raise _Stop(Outcome(lines, False, f"FAIL: after step {t}, {names[i]} has shape {tuple(p.shape)}, {p.dtype}",
                                        f"update p in place without changing its shape; fix {ctx.where}"))  # fmt: skip
            if t == 1 and all(torch.equal(p.detach(), b) for p, b in zip(params, before)):
                lines.append("  step 1: the parameters did not move")
                raise _Stop(Outcome(lines, False, "FAIL: step() leaves the parameters as they were",
                                    "update p in place (p.add_(…), p.addcdiv_(…)): `p = p - …` makes a new tensor "
                                    f"and the optimizer's parameter keeps its old value; fix {ctx.where}"))  # fmt: skip
            bad = [i for i, p in enumerate(params) if not _matches(p.detach(), ref[t - 1][i])]
            if not bad:
                lines.append(f"  step {t}: ok")
                continue
            i = bad[0]
            ours, want = params[i].detach(), ref[t - 1][i]
            rtol, atol = TOL[torch.float64]
            lines.append(f"  step {t}: {names[i]} FAIL: {_differing(ours, want, rtol, atol)}")
            learner_run = None
            for m in self.mistakes:
                wrong = m.compute(params0, grads[:t], **self.kw)
                if all(_close(p.detach(), w) for p, w in zip(params, wrong[t - 1])):
                    learner_run = f"{m.name}: {m.fix}"
                    break
            if learner_run is None and not torch.isfinite(ours).all():
                learner_run = "not finite: a square root of a negative number (v sums g², never negative) or a division by zero (1 − βᵗ with t = 0?)"
            elif learner_run is None:
                learner_run = ("your step against the right one: " + _ratio(ours - before[i], want - before[i], ())
                               + ("" if t == 1 else f"; steps 1–{t - 1} were right: look at what carries over between steps"))  # fmt: skip
            lines.append(f"    ↳ likely: {learner_run}")
            raise _Stop(Outcome(lines, False, f"FAIL: step {t} of {names[i]} is wrong",
                                f"fix it in {ctx.where} (the ↳ line says what looks wrong); run this command again"))  # fmt: skip
        _project_checks(lines, [check_optimizer(self.verify_name, cls)], "python -m src.verify's Adam row, on your class")
        return lines


# ------------------------------------------------ batch norm and layer norm (src/hand/norm.py)
def _as_gradients(res: Any, keys: Sequence[str], returns: Sequence[str]) -> Optional[dict[str, Any]]:
    """The learner's result by name: a dict with ``keys`` (the graph walk), or a tuple in the order ``returns``."""
    if isinstance(res, dict):
        return {k: res[k] for k in keys} if all(k in res for k in keys) else None
    if isinstance(res, (tuple, list)) and len(res) == len(returns) and set(keys) <= set(returns):
        return dict(zip(returns, res))
    return None


def _wrap_norm_backward(fn: Callable, forward: Callable, returns: Sequence[str]) -> type:
    """A Function with the project's ``forward`` (``x, γ, β, ε``) whose backward is the learner's ``fn(g, x, γ, ε)``.

    So the learner's backward runs through :func:`check_function` (gradcheck, gradgradcheck, fp32,
    fp64, extreme) as the project's normalization does.
    """
    from torch.autograd import Function

    def forward_(ctx, x, gamma, beta, eps):
        ctx.save_for_backward(x, gamma)
        ctx.eps = eps
        return forward(x, gamma, beta, eps)

    def backward(ctx, grad):  # twice differentiable when fn recomputes x̂ from x with torch ops, as the stubs do
        x, gamma = ctx.saved_tensors
        d = _as_gradients(fn(grad, x, gamma, ctx.eps), ("dx", "dgamma", "dbeta"), returns)
        return d["dx"], d["dgamma"], d["dbeta"], None

    return type(f"Your_{getattr(fn, '__name__', 'backward')}", (Function,),
                {"forward": staticmethod(forward_), "backward": staticmethod(backward)})  # fmt: skip


def _term_hint(d: Tensor, x_hat: Tensor, dim: int) -> str:
    """Which term of ∂L/∂x the difference ``d`` (yours − right) lies along: the mean term or the x̂ term (docs/batchnorm.md §4)."""
    size = float(d.abs().max())
    along = "every row of a column (feature)" if dim == 0 else "every feature of a row"
    if float((d - d.mean(dim, keepdim=True)).abs().max()) <= 1e-6 * size:
        return (f"∂L/∂x is off by the same amount in {along}: the mean term −(1/N) Σ ĝ (the path through μ) is missing "
                "or wrong")  # fmt: skip
    c = (d * x_hat).sum(dim, keepdim=True) / (x_hat * x_hat).sum(dim, keepdim=True)
    if float((d - c * x_hat).abs().max()) <= 1e-6 * size:
        return f"∂L/∂x is off by a multiple of x̂ in {along}: the term −(1/N) x̂ Σ(ĝ·x̂) (the path through σ²) is missing or wrong"
    return ""


@dataclass(kw_only=True)
class NormBackwardExercise(Exercise):
    """A normalization's backward as a function ``(g, x, gamma, eps) → gradients``, as ``src/hand/norm.py`` writes it.

    ``outputs`` are ``(key, label)`` in the order the derivation computes them; the learner
    returns a dict with these keys (the graph walk's intermediates, as
    :func:`~src.hand.norm.batch_norm_graph_walk`) or a tuple in the order ``returns`` (as
    :func:`~src.hand.norm.batch_norm_backward`).  Each is compared with ``reference`` (the project's
    function), nn-zero-to-hero's ``cmp`` one line each, and the FIRST wrong one is diagnosed: the
    ones above it are right, so that is where the error enters.  A :class:`Mistake`'s ``compute``
    takes ``(g, x, gamma, eps, ref)``, ``ref`` the right outputs by key (a wrong node computed from
    right ones upstream), and returns its wrong value of output ``at`` (an index into ``outputs``).
    Then ``spec``'s row of ``python -m src.verify`` runs with the learner's function as the backward.
    """

    spec: Callable[[], FunctionSpec]
    reference: Callable[..., Any]
    outputs: Sequence[tuple[str, str]]
    returns: Sequence[str] = ("dx", "dgamma", "dbeta")
    dim: int = 0  # the dim the statistics run over: 0 batch norm (each feature over the batch), 1 layer norm
    notes: dict = field(default_factory=dict)  # key → a line shown when that output is right
    shapes_note: str = ""

    def check(self, fn: Any, ctx: _Context) -> list[str]:
        if not callable(fn):
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol} in {ctx.shown} is not a function",
                                f"keep the stub's `def {self.symbol}(g, x, gamma, eps)`"))  # fmt: skip
        spec = self.spec()
        x, gamma = (t.detach() for t in spec.inputs(torch.Generator().manual_seed(0))[:2])
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)  # ∂L/∂y, random
        args = (g, x, gamma, NORM_EPS)
        keys = [k for k, _ in self.outputs]
        res = _learner(ctx, fn, *args)
        got, ref = _as_gradients(res, keys, self.returns), _as_gradients(self.reference(*args), keys, self.returns)
        if got is None:
            want = f"a dict with {', '.join(keys)}" if isinstance(res, dict) else f"the tuple ({', '.join(self.returns)})"
            raise _Stop(Outcome([], False, f"FAIL: {self.symbol} returned {type(res).__name__}, not {want}",
                                f"keep the stub's return line; fill every name in {ctx.where}"))  # fmt: skip
        labels = {k: f"{k.ljust(max(map(len, keys)))}  {lab}" for k, lab in self.outputs}  # "dvar  ∂L/∂σ²"
        lines = [f"shapes (B = {x.shape[0]}, F = {x.shape[1]}):"]
        bad = _shape_table(lines, [(labels[k], got[k], ref[k]) for k in keys], x.shape[0])
        labels = {k: lab.ljust(max(map(len, labels.values()))) for k, lab in labels.items()}
        if bad:
            raise _Stop(Outcome(lines, False, f"FAIL: {bad[0].split()[0]} has the wrong shape",
                                f"fix {bad[0].split()[0]} first, in {ctx.where}; {_shapes_note(ctx)}run this command again"))  # fmt: skip
        lines.append(f"values (float64, in the order of the derivation, against src/hand/norm.py's {self.reference.__name__}):")
        first = None
        for i, k in enumerate(keys):
            t = got[k].detach()
            if _matches(t, ref[k]):
                diff = float((t - ref[k]).abs().max()) if t.numel() else 0.0
                lines.append(f"  {labels[k]}  ok ({'exact' if diff == 0 else f'max diff {diff:.0e}'})")
                lines += [f"    ↳ {self.notes[k]}"] if k in self.notes else []
                continue
            rtol, atol = TOL[torch.float64]
            lines.append(f"  {labels[k]}  FAIL: {_differing(t, ref[k], rtol, atol)}")
            if first is None:
                first = k
                lines.append(f"    ↳ likely: {self._diagnose(i, t, ref, args)}")
        if first:
            raise _Stop(Outcome(lines, False, f"FAIL: the first wrong gradient is {first}",
                                f"fix {first} in {ctx.where} (the ones above it are right; the ↳ line says what looks "
                                "wrong); run this command again; stuck? add --hint"))  # fmt: skip
        yours = replace(spec, name=f"{spec.name} with your {self.symbol}")
        _project_checks(lines, [check_function(yours, _wrap_norm_backward(fn, spec.cls.forward, self.returns))],
                        "python -m src.verify's row for this piece, your function as its backward")  # fmt: skip
        return lines

    def _diagnose(self, i: int, got: Tensor, ref: dict[str, Tensor], args: tuple) -> str:
        for m in self.mistakes:
            if m.at == i and _close(got, m.compute(*args, ref)):
                return f"{m.name}: {m.fix}"
        key = self.outputs[i][0]
        where = f"every gradient above {key} is right, so the error is in its own line" if i else ""
        if key == "dx" and torch.isfinite(got).all():
            terms = _term_hint(got - ref[key], HN.normalize(args[1], self.dim, args[3])[0], self.dim)
            if terms:
                return f"{terms}; {where}" if where else terms
        hint = _ratio(got, ref[key], args[1].shape)
        return f"{hint}; {where}" if where else hint


# ------------------------------------------------------------ the exercises
def _spec(name: str) -> Callable[[], FunctionSpec]:
    return lambda: next(s for s in SPECS if s.name == name)


def _sig(xs: Sequence[Tensor]) -> Tensor:
    return torch.sigmoid(xs[0]).detach()


def _th(xs: Sequence[Tensor]) -> Tensor:
    return torch.tanh(xs[0]).detach()


def _probs(xs: Sequence[Tensor]) -> Tensor:
    return torch.softmax(xs[0].detach(), -1)


def _bn(x: Tensor, eps: float, correction: int = 0, with_eps: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm's forward nodes ``(x − μ, σ⁻¹, x̂)``, shapes (B, F), (F,), (B, F); ``correction=1``: the unbiased variance."""
    x_mu = x - x.mean(0)
    inv_std = ((x_mu * x_mu).sum(0) / (x.shape[0] - correction) + (eps if with_eps else 0.0)) ** -0.5
    return x_mu, inv_std, x_mu * inv_std


def _walk_dx(g: Tensor, x: Tensor, gamma: Tensor, eps: float, r: dict, *, paths: str = "x̂ σ² μ", var_by: int = 0,
             mean_by: int = 0) -> Tensor:  # fmt: skip
    """The graph walk's ∂L/∂x with only ``paths`` (a wrong answer drops one) and ``var_by``/``mean_by`` for the 1/B (0: B)."""
    x_mu, inv_std, _ = _bn(x, eps)
    B = x.shape[0]
    dx = r["dx_hat"] * inv_std if "x̂" in paths else torch.zeros_like(x)
    dx = dx + r["dvar"] * 2.0 * x_mu / (var_by or B) if "σ²" in paths else dx
    return dx + r["dmean"] / (mean_by or B) if "μ" in paths else dx


def _closed_dx(g: Tensor, x: Tensor, gamma: Tensor, eps: float, *, mistake: str = "") -> Tensor:
    """Batch norm's closed-form ∂L/∂x (:func:`src.hand.norm.batch_norm_backward`), or one classic wrong version of it."""
    B = x.shape[0]
    _, inv_std, x_hat = _bn(x, eps)
    scale = (1.0 if mistake == "no gamma" else gamma) * inv_std / (1 if mistake == "no 1/B" else B)
    sum_g = 0 if mistake == "no mean term" else g.sum(0)
    sum_gx = 0 if mistake == "no x̂ term" else (g * x_hat).sum(0)
    if mistake == "no 1/B on the sums":
        return gamma * inv_std * (g - sum_g - x_hat * sum_gx)
    return scale * (B * g - sum_g - x_hat * sum_gx)


def _ln_x_hat(x: Tensor, eps: float, correction: int = 0) -> Tensor:
    """Layer norm's x̂ (B, F), each row over its F features; ``correction=1``: the unbiased variance."""
    x_mu = x - x.mean(1, keepdim=True)
    return x_mu * ((x_mu * x_mu).sum(1, keepdim=True) / (x.shape[1] - correction) + eps) ** -0.5


def _ln_dx(g: Tensor, x: Tensor, gamma: Tensor, eps: float, *, mistake: str = "") -> Tensor:
    """Layer norm's ∂L/∂x (:func:`src.hand.norm.layer_norm_backward`), or one classic wrong version of it."""
    F = x.shape[1]
    x_hat, inv_std = HN.normalize(x, 1, eps)  # (B, F), (B, 1)
    g_hat = g if mistake in ("no gamma", "gamma outside") else g * gamma  # ∂L/∂x̂
    sum_g = 0 if mistake == "no mean term" else g_hat.sum(1, keepdim=True)
    sum_gx = 0 if mistake == "no x̂ term" else (g_hat * x_hat).sum(1, keepdim=True)
    out = (inv_std / (1 if mistake == "no 1/F" else F)) * (F * g_hat - sum_g - x_hat * sum_gx)
    return out * gamma if mistake == "gamma outside" else out


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        FunctionExercise(
            name="sigmoid", symbol="Sigmoid", spec=_spec("Sigmoid"), inputs=("x",), section="sigmoid",
            write="Sigmoid.backward: return ∂L/∂x = grad ⊙ σ'(x), written with the saved output y = σ(x)",
            teaches="the chain rule for one elementwise op; a derivative written with the op's own output",
            solution=(HF.Sigmoid.backward, HF.Sigmoid.derivative),
            hints=(
                "Write σ'(x) with σ(x) alone (the stub saves y = σ(x), not x), then multiply by the upstream gradient "
                "grad: ∂L/∂x = ∂L/∂y · dy/dx, element by element.",
                "σ(x) = 1/(1 + e^{−x}), so σ'(x) = e^{−x}/(1 + e^{−x})² = σ(x) · e^{−x}/(1 + e^{−x}), and "
                "e^{−x}/(1 + e^{−x}) = 1 − σ(x). So σ'(x) = σ(x)(1 − σ(x)) = y(1 − y), and ∂L/∂x = grad ⊙ y ⊙ (1 − y).",
            ),
            mistakes=(
                Mistake("σ(1+σ) for σ(1−σ)", "σ'(x) = σ(x)(1 − σ(x)): the second factor is 1 − y, with a minus",
                        lambda xs, g: g * _sig(xs) * (1 + _sig(xs))),
                Mistake("a flipped sign", "σ'(x) = y(1 − y) is positive: σ is increasing",
                        lambda xs, g: -g * _sig(xs) * (1 - _sig(xs))),
                Mistake("σ applied to the saved output again: σ(y)(1 − σ(y))",
                        "y already is σ(x): σ'(x) = y(1 − y), no second torch.sigmoid",
                        lambda xs, g: g * torch.sigmoid(_sig(xs)) * (1 - torch.sigmoid(_sig(xs)))),
                Mistake("a factor missing: grad ⊙ (1 − y)", "σ'(x) = y(1 − y): both factors",
                        lambda xs, g: g * (1 - _sig(xs))),
                Mistake("a factor missing: grad ⊙ y", "σ'(x) = y(1 − y): both factors", lambda xs, g: g * _sig(xs)),
            ),
        ),
        FunctionExercise(
            name="tanh", symbol="Tanh", spec=_spec("Tanh"), inputs=("x",), section="tanh",
            write="Tanh.backward: return ∂L/∂x = grad ⊙ tanh'(x), written with the saved output y = tanh(x)",
            teaches="the same pattern as sigmoid, from the quotient rule: a derivative from the output alone",
            solution=(HF.Tanh.backward, HF.Tanh.derivative),
            hints=(
                "As for sigmoid: tanh'(x) can be written with tanh(x) itself, so the saved output y is all you need; "
                "then multiply by grad.",
                "tanh x = sinh x / cosh x; the quotient rule gives tanh'(x) = (cosh²x − sinh²x)/cosh²x = 1 − tanh²x. "
                "So ∂L/∂x = grad ⊙ (1 − y²).",
            ),
            mistakes=(
                Mistake("1 + y² for 1 − y²", "tanh'(x) = 1 − tanh²(x): a minus (tanh' ≤ 1, largest at 0)",
                        lambda xs, g: g * (1 + _th(xs) ** 2)),
                Mistake("a flipped sign", "tanh'(x) = 1 − y² is positive: tanh is increasing",
                        lambda xs, g: -g * (1 - _th(xs) ** 2)),
                Mistake("(1 − y) for 1 − y²", "tanh'(x) = 1 − y·y: the square is missing", lambda xs, g: g * (1 - _th(xs))),
                Mistake("sigmoid's derivative y(1 − y)", "that is σ'; tanh'(x) = 1 − y²",
                        lambda xs, g: g * _th(xs) * (1 - _th(xs))),
                Mistake("tanh applied to the saved output again: 1 − tanh²(y)", "y already is tanh(x): 1 − y²",
                        lambda xs, g: g * (1 - torch.tanh(_th(xs)) ** 2)),
            ),
        ),
        FunctionExercise(
            name="linear", symbol="Linear", spec=_spec("Linear"), inputs=("x", "weight", "bias"), section="the-affine-layer",
            write="Linear.backward: grad_x, grad_weight, grad_bias (∂L/∂x, ∂L/∂W, ∂L/∂b) from grad = ∂L/∂y",
            teaches="matrix calculus by shapes: ∂L/∂x = g W, ∂L/∂W = gᵀ x, and a shared bias sums over the batch",
            shapes_note=f"x ({B}, 5), weight (3, 5), bias (3,), grad ({B}, 3); each gradient has its input's shape",
            solution=(HF.Linear.backward,),
            hints=(
                "Write the shapes first: x (B, in), W (out, in), b (out,), grad = ∂L/∂y (B, out). Each gradient has "
                "the shape of its input, and there is one way to multiply grad with W or with x that gives it.",
                "y_bj = Σ_i x_bi W_ji + b_j. So ∂L/∂x_bi = Σ_j grad_bj W_ji = (grad W)_bi; ∂L/∂W_ji = Σ_b grad_bj x_bi "
                "= (gradᵀ x)_ji; ∂L/∂b_j = Σ_b grad_bj: b is added to every row, so its gradient sums over the batch.",
            ),
            mistakes=(
                Mistake("a mean over the batch for the bias", "∂L/∂b = Σ_batch grad: a sum (each example adds its own "
                        "share; any 1/B is already inside grad)", lambda xs, g: g.mean(0), at=2),
                Mistake("a flipped sign", "∂L/∂x = grad W, with no minus", lambda xs, g: -g.mm(xs[1].detach()), at=0),
                Mistake("a flipped sign", "∂L/∂W = gradᵀ x, with no minus", lambda xs, g: -g.t().mm(xs[0].detach()), at=1),
            ),
        ),
        FunctionExercise(
            name="softmax_cross_entropy", symbol="SoftmaxCrossEntropy", spec=_spec("SoftmaxCrossEntropy (logits)"),
            inputs=("logits", "target"), section="softmax-cross-entropy",
            write="SoftmaxCrossEntropy.backward: grad_logits = ∂L/∂z for the mean loss over the batch",
            teaches="why softmax and cross-entropy are fused: the Jacobian collapses to (ŷ − t)/B",
            shapes_note=f"logits ({B}, 4), target ({B}, 4) one-hot rows, grad () a scalar; ∂L/∂z is ({B}, 4)",
            solution=(HL.SoftmaxCrossEntropy.backward,),
            hints=(
                "Do not differentiate the softmax and the log separately: with log ŷ = z − logsumexp(z) (as forward "
                "computes it), ∂ log ŷ_k / ∂z_j = δ_kj − ŷ_j. L is a mean over the B rows, and grad (a scalar) "
                "multiplies everything.",
                "L = −(1/B) Σ_b Σ_k t_bk log ŷ_bk, so ∂L/∂z_bj = −(1/B) Σ_k t_bk (δ_kj − ŷ_bj) = (ŷ_bj Σ_k t_bk − t_bj)/B "
                "= (ŷ_bj − t_bj)/B, since each row of t sums to 1. So grad_logits = (softmax(z) − t) · grad / B, "
                "the softmax taken over each row (dim −1).",
            ),
            mistakes=(
                Mistake("a missing 1/B (the sum's gradient, not the mean's)", "L is the mean over the B rows: divide "
                        "by B = logits.shape[0]", lambda xs, g: (_probs(xs) - xs[1]) * g, at=0),
                Mistake("a flipped sign: (t − ŷ)/B", "∂L/∂z = (ŷ − t)/B: the prediction minus the target",
                        lambda xs, g: (xs[1] - _probs(xs)) * g / xs[0].shape[0], at=0),
                Mistake("softmax over the whole batch, not each row", "normalize each row: "
                        "torch.softmax(logits, dim=-1), or exp(z) / exp(z).sum(-1, keepdim=True)",
                        lambda xs, g: (xs[0].detach().exp() / xs[0].detach().exp().sum() - xs[1]) * g / xs[0].shape[0], at=0),
                Mistake("exp(z) − t, with no normalization", "ŷ = softmax(z) = exp(z) / Σ_k exp(z_k), each row",
                        lambda xs, g: (xs[0].detach().exp() - xs[1]) * g / xs[0].shape[0], at=0),
                Mistake("z − t: the logits, not the probabilities", "∂L/∂z = (softmax(z) − t)/B",
                        lambda xs, g: (xs[0].detach() - xs[1]) * g / xs[0].shape[0], at=0),
            ),
        ),
        BackpropExercise(
            name="backprop", symbol="backward_pass", section="the-whole-net",
            write="backward_pass: the loop from the top layer down, filling dW, db and dx",
            teaches="the backprop recursion δ_(l−1) = (δ_l W_l) ⊙ g'(z_(l−1)) and every layer's ∂W, ∂b from it",
            shapes_note=f"a {'×'.join(map(str, SIZES))} net at B = {B}: δ_l ({B}, n_l), W_l (n_l, n_(l−1)), "
                        "tape.d[l−1] = d_(l−1) (B, n_(l−1)), tape.h[l−2] = h_(l−1) (B, n_(l−1))",
            solution=(HB.backward_pass,),
            hints=(
                "Go from the top layer l = L down to 1. At layer l, δ_l = ∂L/∂z_l (B, n_l) gives the affine layer's "
                "gradients (the linear exercise, with d_(l−1) = tape.d[l−1] as its input x) and δ_(l−1) for the layer "
                "below. Lists are 0-based: W_l is weights[l−1] and ∂L/∂W_l goes into dW[l−1].",
                "∂L/∂W_l = δ_lᵀ d_(l−1), ∂L/∂b_l = Σ_batch δ_l, and for l > 1: δ_(l−1) = (δ_l W_l) ⊙ g'(z_(l−1)), which "
                "is g.derivative(δ_l W_l, tape.h[l−2]) (g' read from h_(l−1) = g(z_(l−1)), as in the sigmoid exercise). "
                "After the loop, ∂L/∂x = δ_1 W_1.",
            ),
            mistakes=(
                Mistake("g' left out: δ_(l−1) = δ_l W_l", "the chain rule passes through the activation too: "
                        "δ_(l−1) = (δ_l W_l) ⊙ g'(z_(l−1)), i.e. g.derivative(δ_l W_l, tape.h[l−2])",
                        lambda d, w, tape, a: _recursion(d, w, tape, a, g_prime=False)),
                Mistake("a mean over the batch for the biases", "∂L/∂b_l = Σ_batch δ_l: a sum (the loss's 1/B is "
                        "already inside δ)", lambda d, w, tape, a: _recursion(d, w, tape, a, bias="mean")),
            ),
        ),
        OptimizerExercise(
            name="adam", symbol="Adam", section="adam", project=HO.Adam, verify_name="Adam",
            kw=dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-4),
            write="Adam.step's update: the moments m and v, their bias correction, the step on p (in place)",
            teaches="state kept between steps, and why Adam divides by 1 − βᵗ (bias correction) early on",
            solution=(HO.Adam._update_each,),
            hints=(
                "Per parameter, three things: update the moments m and v in place (they live in self.state between "
                "steps), correct their bias (they start at zero, so early on they are too small), then move p in "
                "place against the gradient.",
                "m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²; m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ); θ ← θ − η m̂/(√v̂ + ε). "
                "At t = 1, m = (1 − β₁)g, so m̂ = g: without the correction the first steps are off by "
                "(1 − β₁)/√(1 − β₂) ≈ 3.16.",
            ),
            mistakes=(
                Mistake("Adam without bias correction", "divide by 1 − βᵗ: m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ) "
                        "(t = state['step'])", lambda *a, **k: _adam_reference(*a, **k, mistake="no bias correction")),
                Mistake("only m is bias-corrected", "v̂ = v/(1 − β₂ᵗ) too",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="m only")),
                Mistake("only v is bias-corrected", "m̂ = m/(1 − β₁ᵗ) too",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="v only")),
                Mistake("the state is not kept: m and v start from zero at every step", "`m = beta1 * m + …` makes a "
                        "new tensor and self.state keeps the old one: update in place (m.mul_(beta1).add_(g, "
                        "alpha=1 - beta1)) or store it back (state['exp_avg'] = m)",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="state not kept")),
                Mistake("a flipped sign (θ ← θ + …)", "the step goes against the gradient: θ ← θ − η m̂/(√v̂ + ε)",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="flipped sign")),
                Mistake("ε inside the square root", "√v̂ + ε, not √(v̂ + ε)",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="eps inside")),
                Mistake("β₁ and β₂ swapped", "m, the first moment, decays with β₁ = 0.9; v with β₂ = 0.999",
                        lambda *a, **k: _adam_reference(*a, **k, mistake="swapped betas")),
            ),
        ),
        NormBackwardExercise(
            name="batchnorm_staged", symbol="batch_norm_graph_walk", spec=_spec("BatchNorm (train mode)"),
            reference=HN.batch_norm_graph_walk, page="docs/batchnorm.md", section="2-backward-through-the-graph-the-graph-walk",
            outputs=(("dbeta", "∂L/∂β"), ("dgamma", "∂L/∂γ"), ("dx_hat", "∂L/∂x̂"), ("dvar", "∂L/∂σ²"),
                     ("dmean_via_x_hat", "x̂'s part of ∂L/∂μ"), ("dmean_via_var", "σ²'s part of ∂L/∂μ"),
                     ("dmean", "∂L/∂μ"), ("dx", "∂L/∂x")),
            notes={"dmean_via_var": "the \"fourth term\": 0 up to rounding, because Σ_b (x − μ) = 0 "
                                    "(docs/batchnorm.md#3-the-fourth-term-is-zero)"},
            write="batch_norm_graph_walk: every intermediate gradient, node by node from y back to x (dbeta, dgamma, "
                  "dx_hat, dvar, dmean_via_x_hat, dmean_via_var, dmean, dx)",
            teaches="batch norm's backward walked through the graph, node by node: a node used by several paths sums "
                    "their gradients, and a shared statistic sums over the batch",
            shapes_note=f"x, g = ∂L/∂y, x − μ, x̂ and ∂L/∂x̂, ∂L/∂x ({B}, 5); μ, σ², σ⁻¹, γ and their gradients (5,)",
            solution=(HN.batch_norm_graph_walk,),
            hints=(
                "Walk back in the order of the dict, one node at a time: β and γ (y = γ x̂ + β), then x̂, then σ², then μ "
                "(two paths: through x̂ and through σ²), then x (three paths: through x̂, σ² and μ). At each node: the "
                "gradient arriving from above times the local derivative; a node of shape (F,) (μ, σ², γ, β) is shared "
                "by the B rows, so its gradient sums over the batch (dim 0).",
                "∂L/∂β = Σ_b g, ∂L/∂γ = Σ_b g x̂, ∂L/∂x̂ = g γ. σ² enters x̂ through (σ² + ε)^(−½), whose derivative is "
                "−½ (σ² + ε)^(−3/2) = −½ σ⁻³: ∂L/∂σ² = Σ_b ∂L/∂x̂ · (x − μ) · (−½) σ⁻³.",
                "μ: through x̂, ∂x̂/∂μ = −σ⁻¹, so Σ_b ∂L/∂x̂ · (−σ⁻¹); through σ², ∂σ²/∂μ = (−2/B) Σ_b (x − μ), which "
                "is 0 (why?). x: ∂L/∂x = ∂L/∂x̂ σ⁻¹ + ∂L/∂σ² · 2(x − μ)/B + ∂L/∂μ / B, the three paths, each with its "
                "local derivative (∂x̂/∂x = σ⁻¹, ∂σ²/∂x = 2(x − μ)/B, ∂μ/∂x = 1/B).",
            ),
            mistakes=(
                Mistake("a mean over the batch for β", "β is added to every row: ∂L/∂β = Σ_b g, a sum (any 1/B is "
                        "already inside g)", lambda g, x, gm, e, r: g.mean(0), at=0),
                Mistake("Σ_b g, without x̂", "y = γ x̂ + β, so ∂y/∂γ = x̂: ∂L/∂γ = Σ_b g ⊙ x̂",
                        lambda g, x, gm, e, r: g.sum(0), at=1),
                Mistake("x − μ for x̂", "γ multiplies x̂ = (x − μ)σ⁻¹: ∂L/∂γ = Σ_b g ⊙ x̂",
                        lambda g, x, gm, e, r: (g * _bn(x, e)[0]).sum(0), at=1),
                Mistake("γ forgotten: ∂L/∂x̂ = g", "y = γ x̂ + β, so ∂L/∂x̂ = g ⊙ γ",
                        lambda g, x, gm, e, r: g, at=2),
                Mistake("(σ² + ε)^(−½) for (σ² + ε)^(−3/2)", "the power rule lowers the exponent by one: "
                        "d/dσ² (σ² + ε)^(−½) = −½ (σ² + ε)^(−3/2) = −½ σ⁻³ (inv_std**3)",
                        lambda g, x, gm, e, r: (r["dx_hat"] * _bn(x, e)[0]).sum(0) * -0.5 * _bn(x, e)[1], at=3),
                Mistake("a flipped sign", "the power rule brings down the exponent −½: the factor is −½ σ⁻³",
                        lambda g, x, gm, e, r: -r["dvar"], at=3),
                Mistake("the ½ missing", "the power rule brings down the exponent −½: the factor is −½ σ⁻³",
                        lambda g, x, gm, e, r: 2 * r["dvar"], at=3),
                Mistake("x̂ for x − μ", "x̂ = (x − μ)(σ² + ε)^(−½): its derivative in σ² carries x − μ, not x̂",
                        lambda g, x, gm, e, r: (r["dx_hat"] * _bn(x, e)[2]).sum(0) * -0.5 * _bn(x, e)[1] ** 3, at=3),
                Mistake("g for ∂L/∂x̂", "σ² reaches L through x̂: the gradient arriving is dx_hat = g γ, not g",
                        lambda g, x, gm, e, r: (g * _bn(x, e)[0]).sum(0) * -0.5 * _bn(x, e)[1] ** 3, at=3),
                Mistake("a flipped sign", "x̂ = (x − μ)σ⁻¹, so ∂x̂/∂μ = −σ⁻¹: Σ_b ∂L/∂x̂ · (−σ⁻¹)",
                        lambda g, x, gm, e, r: -r["dmean_via_x_hat"], at=4),
                Mistake("a mean over the batch", "μ enters every row's x̂: the rows' contributions add, Σ_b",
                        lambda g, x, gm, e, r: r["dmean_via_x_hat"] / x.shape[0], at=4),
                Mistake("the sum Σ_b (x − μ) left out", "σ² = (1/B) Σ_b (x − μ)², so ∂σ²/∂μ = (−2/B) Σ_b (x − μ): "
                        "keep the sum (it is 0)", lambda g, x, gm, e, r: r["dvar"] * (-2.0 / x.shape[0]), at=5),
                Mistake("only the path through σ²", "∂L/∂μ sums the gradients of every path leaving μ: through x̂ and "
                        "through σ²", lambda g, x, gm, e, r: r["dmean_via_var"], at=6),
                Mistake("the path through μ left out", "x reaches L three ways; add ∂L/∂μ · ∂μ/∂x = ∂L/∂μ / B",
                        lambda *a: _walk_dx(*a, paths="x̂ σ²"), at=7),
                Mistake("the path through σ² left out", "x reaches L three ways; add ∂L/∂σ² · ∂σ²/∂x = ∂L/∂σ² · 2(x − μ)/B",
                        lambda *a: _walk_dx(*a, paths="x̂ μ"), at=7),
                Mistake("only the path through x̂", "x reaches L three ways: through x̂ (∂L/∂x̂ σ⁻¹), through σ² "
                        "(∂L/∂σ² · 2(x − μ)/B) and through μ (∂L/∂μ / B)", lambda *a: _walk_dx(*a, paths="x̂"), at=7),
                Mistake("a missing 1/B in the path through μ", "μ = (1/B) Σ_b x, so ∂μ/∂x = 1/B: ∂L/∂μ / B",
                        lambda *a: _walk_dx(*a, mean_by=1), at=7),
                Mistake("a missing 1/B in the path through σ²", "σ² = (1/B) Σ_b (x − μ)², so ∂σ²/∂x = 2(x − μ)/B",
                        lambda *a: _walk_dx(*a, var_by=1), at=7),
                Mistake("B − 1 for B in the path through σ² (the unbiased variance)", "the forward's σ² divides by B "
                        "(the biased variance): ∂σ²/∂x = 2(x − μ)/B", lambda *a: _walk_dx(*a, var_by=a[1].shape[0] - 1), at=7),
            ),
        ),
        NormBackwardExercise(
            name="batchnorm", symbol="batch_norm_backward", spec=_spec("BatchNorm (train mode)"),
            reference=HN.batch_norm_backward, page="docs/batchnorm.md", section="4-the-simplification-into-the-closed-form",
            outputs=(("dbeta", "∂L/∂β"), ("dgamma", "∂L/∂γ"), ("dx", "∂L/∂x")),
            write="batch_norm_backward: x̂ and σ⁻¹ from x (as forward), then ∂L/∂β, ∂L/∂γ and ∂L/∂x in one expression",
            teaches="the graph walk simplified on paper into one expression: what is left of ∂L/∂x is g without its "
                    "mean and without its component along x̂",
            shapes_note=f"x, g = ∂L/∂y, x̂ and ∂L/∂x ({B}, 5); γ, σ⁻¹, ∂L/∂γ and ∂L/∂β (5,)",
            solution=(HN.batch_norm_backward, HN.normalize),
            hints=(
                "Recompute x̂ and σ⁻¹ from x as forward does (the biased variance, ÷ B). Then take the graph walk "
                "(the previous exercise) and substitute ∂L/∂σ² and ∂L/∂μ into ∂L/∂x, writing x − μ as x̂/σ⁻¹. "
                "∂L/∂x becomes one line, and it reuses ∂L/∂β = Σ_b g and ∂L/∂γ = Σ_b g x̂.",
                "With ĝ = γ g: ∂L/∂σ² = −½ σ⁻² Σ_b ĝ x̂ and ∂L/∂μ = −σ⁻¹ Σ_b ĝ (the fourth term is 0). Substituted: "
                "∂L/∂x = (γσ⁻¹/B)(B g − Σ_b g − x̂ Σ_b g x̂); γ leaves the sums because it is one number per column.",
            ),
            mistakes=(
                Mistake("a mean over the batch for β", "∂L/∂β = Σ_b g: a sum", lambda g, x, gm, e, r: g.mean(0), at=0),
                Mistake("the unbiased variance (÷ (B − 1)) in x̂", "the forward normalizes with the biased variance, ÷ B: "
                        "torch.var(x, 0) divides by B − 1 unless given correction=0 (unbiased=False)",
                        lambda g, x, gm, e, r: (g * _bn(x, e, correction=1)[2]).sum(0), at=1),
                Mistake("ε left out: 1/√σ² for 1/√(σ² + ε)", "x̂ = (x − μ)/√(σ² + ε), as forward: keep the ε",
                        lambda g, x, gm, e, r: (g * _bn(x, e, with_eps=False)[2]).sum(0), at=1),
                Mistake("Σ_b g, without x̂", "∂L/∂γ = Σ_b g ⊙ x̂", lambda g, x, gm, e, r: g.sum(0), at=1),
                Mistake("the mean term dropped: − Σ_b g", "the path through μ leaves −(1/B) Σ_b g in every row: "
                        "(γσ⁻¹/B)(B g − Σ_b g − x̂ Σ_b g x̂)", lambda g, x, gm, e, r: _closed_dx(g, x, gm, e, mistake="no mean term"), at=2),
                Mistake("the Σ(g·x̂) term dropped: − x̂ Σ_b g x̂", "the path through σ² leaves −(1/B) x̂ Σ_b g x̂: "
                        "(γσ⁻¹/B)(B g − Σ_b g − x̂ Σ_b g x̂)", lambda g, x, gm, e, r: _closed_dx(g, x, gm, e, mistake="no x̂ term"), at=2),
                Mistake("γ forgotten", "∂L/∂x̂ = γ g, so ∂L/∂x carries the factor γ (one per feature): (γσ⁻¹/B)(…)",
                        lambda g, x, gm, e, r: _closed_dx(g, x, gm, e, mistake="no gamma"), at=2),
                Mistake("a missing 1/B", "the bracket B g − Σ_b g − x̂ Σ_b g x̂ is B times the gradient: (γσ⁻¹/B)(…)",
                        lambda g, x, gm, e, r: _closed_dx(g, x, gm, e, mistake="no 1/B"), at=2),
                Mistake("a missing 1/B on the two sums", "the sums come from the means μ and σ²: "
                        "γσ⁻¹ (g − (1/B) Σ_b g − (1/B) x̂ Σ_b g x̂)",
                        lambda g, x, gm, e, r: _closed_dx(g, x, gm, e, mistake="no 1/B on the sums"), at=2),
            ),
        ),
        NormBackwardExercise(
            name="layernorm", symbol="layer_norm_backward", spec=_spec("LayerNorm"), dim=1,
            reference=HN.layer_norm_backward, page="docs/batchnorm.md", section="6-layer-normalization",
            outputs=(("dbeta", "∂L/∂β"), ("dgamma", "∂L/∂γ"), ("dx", "∂L/∂x")),
            write="layer_norm_backward: x̂ and σ⁻¹ per row (as forward), then ∂L/∂β, ∂L/∂γ and ∂L/∂x",
            teaches="batch norm's derivation over the other dim: statistics per row, and γ, which now varies along "
                    "the sums, stays inside them",
            shapes_note=f"x, g = ∂L/∂y, x̂ and ∂L/∂x ({B}, 5); μ, σ⁻¹ ({B}, 1), one per row; γ, ∂L/∂γ and ∂L/∂β (5,)",
            solution=(HN.layer_norm_backward, HN.normalize),
            hints=(
                "The batch norm derivation, transposed: μ and σ² are per row, (B, 1), the sums of ∂L/∂x run over the F "
                "features (dim 1, keepdim=True) and N = F. But γ varies along the features, so it cannot leave those "
                "sums: work with ĝ = ∂L/∂x̂ = γ ⊙ g. γ and β are still per feature, shared by the rows.",
                "∂L/∂x = (σ⁻¹/F)(F ĝ − Σ_j ĝ − x̂ Σ_j ĝ x̂), the sums over dim 1 with keepdim=True; "
                "∂L/∂γ = Σ_b g x̂ and ∂L/∂β = Σ_b g sum over the batch (dim 0).",
            ),
            mistakes=(
                Mistake("a mean over the batch for β", "∂L/∂β = Σ_b g: a sum", lambda g, x, gm, e, r: g.mean(0), at=0),
                Mistake("the unbiased variance (÷ (F − 1)) in x̂", "the forward normalizes with the biased variance, ÷ F",
                        lambda g, x, gm, e, r: (g * _ln_x_hat(x, e, correction=1)).sum(0), at=1),
                Mistake("γ outside the sums (batch norm's form)", "in layer norm the sums run over the features, along "
                        "which γ varies: ĝ = γ ⊙ g goes inside them", lambda *a: _ln_dx(*a[:4], mistake="gamma outside"), at=2),
                Mistake("the statistics over the batch (batch norm's backward)", "layer norm normalizes each row over its "
                        "F features: the sums run over dim 1", lambda g, x, gm, e, r: HN.batch_norm_backward(g, x, gm, e)[0], at=2),
                Mistake("the mean term dropped: − Σ_j ĝ", "(σ⁻¹/F)(F ĝ − Σ_j ĝ − x̂ Σ_j ĝ x̂)",
                        lambda *a: _ln_dx(*a[:4], mistake="no mean term"), at=2),
                Mistake("the Σ(ĝ·x̂) term dropped", "(σ⁻¹/F)(F ĝ − Σ_j ĝ − x̂ Σ_j ĝ x̂)",
                        lambda *a: _ln_dx(*a[:4], mistake="no x̂ term"), at=2),
                Mistake("γ forgotten", "∂L/∂x̂ = ĝ = γ ⊙ g", lambda *a: _ln_dx(*a[:4], mistake="no gamma"), at=2),
                Mistake("a missing 1/F", "the bracket F ĝ − Σ_j ĝ − x̂ Σ_j ĝ x̂ is F times the gradient: (σ⁻¹/F)(…)",
                        lambda *a: _ln_dx(*a[:4], mistake="no 1/F"), at=2),
            ),
        ),
    ]
}  # fmt: skip


# ------------------------------------------------------------ the command's parts
def _allowed() -> str:
    return ", ".join(EXERCISES)


def resolve(arg: str) -> tuple[Exercise, Path]:
    """``NAME`` → ``exercises/NAME.py`` (from the current folder); ``path/to/NAME.py`` → that file.

    The file's name says which exercise it is.  :class:`ExerciseInputError` (one line) for a name
    that is not an exercise or a file that does not exist.
    """
    is_path = arg.endswith(".py") or os.sep in arg or "/" in arg
    name = Path(arg).stem if is_path else arg
    if name not in EXERCISES:
        close = difflib.get_close_matches(name, EXERCISES, n=1)
        what = f"--exercise {arg!r}" + (f" (a file named {name}.py)" if is_path else "")
        raise ExerciseInputError(f"{what} is not an exercise{f' (did you mean {close[0]}?)' if close else ''}; "
                                 f"allowed: {_allowed()} (or a file named after one, e.g. path/to/sigmoid.py)")  # fmt: skip
    path = Path(arg) if is_path else Path("exercises") / f"{name}.py"
    return EXERCISES[name], path


def _need_file(ex: Exercise, path: Path) -> None:
    if not path.is_file():
        raise ExerciseInputError(f"--exercise {ex.name}: {path} does not exist here ({Path.cwd()}); run from the "
                                 f"folder that holds exercises/, or give the file: --exercise path/to/{ex.name}.py")  # fmt: skip


def hints(ex: Exercise, level: int) -> str:
    """Hints 1 … ``level`` of ``ex``, one paragraph each."""
    if not 1 <= level <= len(ex.hints):
        raise ExerciseInputError(f"--hint {level} is not allowed for {ex.name}: its hints are 1 to {len(ex.hints)} "
                                 "(then --solution)")  # fmt: skip
    out = [f"hint {i} of {len(ex.hints)} ({ex.name}): {h}" for i, h in enumerate(ex.hints[:level], 1)]
    more = (f"more: --hint {level + 1}" if level < len(ex.hints) else "the whole answer: --solution") + f"; the derivation: {ex.doc}"
    return "\n\n".join(out) + f"\n\n{more}"


def solution(ex: Exercise) -> str:
    """The project's own code for the piece (the source of each of ``ex.solution``), with file and line."""
    parts = []
    for obj in ex.solution:
        fn = inspect.unwrap(obj)
        src, line = inspect.getsourcelines(fn)
        path = _shown(Path(inspect.getsourcefile(fn)))
        parts.append(f"# {path}:{line}  {fn.__qualname__}\n" + textwrap.dedent("".join(src)).rstrip())
    return "\n\n".join(parts) + f"\n\nthe derivation: {ex.doc}"


def _load(ex: Exercise, path: Path) -> tuple[Any, _Context]:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    starts = [i + 1 for i, l in enumerate(text) if l.strip() == START]
    ends = [i + 1 for i, l in enumerate(text) if l.strip() == END]
    region = (starts[0], ends[0]) if starts and ends and starts[0] < ends[0] else None
    ctx = _Context(path, _shown(path), region, ex)
    spec = importlib.util.spec_from_file_location(f"_exercise_{ex.name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except NotImplementedError:  # a stub that raises at import: as written, not our stubs
        raise _Stop(_not_written(ctx)) from None
    except Exception as err:  # SyntaxError, an ImportError, …: where, in one line
        raise _Stop(_raised(ctx, err)) from None
    if not hasattr(module, ex.symbol):
        raise _Stop(Outcome([], False, f"FAIL: {ctx.shown} defines no {ex.symbol}",
                            f"keep the stub's name {ex.symbol}: the checker looks for it (the project's piece has the same name)"))  # fmt: skip
    return getattr(module, ex.symbol), ctx


def check_exercise(ex: Exercise, path: Path) -> Outcome:
    """Load the learner's ``path`` and check it: an :class:`Outcome` (never raises for the learner's code)."""
    _need_file(ex, path)
    head = f"exercise {ex.name}: {ex.symbol} in {_shown(path)} ({ex.teaches})"
    try:
        obj, ctx = _load(ex, path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            lines = ex.check(obj, ctx)
    except _Stop as stop:
        stop.outcome.lines.insert(0, head)
        return stop.outcome
    names = list(EXERCISES)
    nxt = names[names.index(ex.name) + 1] if ex.name != names[-1] else None
    return Outcome([head, *lines], True, f"PASS: {ex.symbol} in {ctx.shown} agrees with the project's and with PyTorch",
                   (f"the next exercise: python -m src.verify --exercise {nxt}" if nxt else
                    "that was the last exercise: compare yours with the project's (--solution), then train the net "
                    "you derived: python -m src.train fit"))  # fmt: skip
