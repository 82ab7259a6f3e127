"""``python -m src.verify --function``: the same checks for a user's own ``torch.autograd.Function``."""

from __future__ import annotations

import importlib
import math
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.gradcheck import GradcheckError

from .verification.checks import _cast, _compare, _sizes
from .verification.hints import _error_hint, _gradcheck_hint, directional, directional_ratio, ratio_hint
from .verification.specs import FunctionSpec
from .verification.table import COLUMNS, NA, Cell, Row

__all__ = ["UserInputError", "check_user_function", "load_object", "parse_shape"]


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


def _load_function(function: str) -> type:
    cls = load_object(function, "--function")
    if not (isinstance(cls, type) and issubclass(cls, Function)):
        raise UserInputError(
            f"--function={function!r} is not a torch.autograd.Function subclass (its type is {type(cls).__name__}; "
            "give the class, e.g. pkg.module:MyFunction, not an instance or its .apply)"
        )
    return cls


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def _output_shape(cls: type, make: Callable[[torch.Generator], list[Tensor]], shapes: Sequence[str]) -> torch.Size:
    """The shape of the Function's output on the inputs; :class:`UserInputError` if its forward refuses them."""
    try:
        with torch.no_grad():
            out = cls.apply(*make(torch.Generator().manual_seed(0)))
    except Exception as err:
        raise UserInputError(f"--shapes {' '.join(shapes)} do not fit {cls.__name__}: its forward raised {_first_line(err)}") from None
    if not isinstance(out, Tensor):
        raise UserInputError(f"{cls.__name__}.forward returned {type(out).__name__}; the checker needs one tensor")
    return out.shape


def _load_reference(reference: str) -> Callable:
    ref = load_object(reference, "--reference")
    if not callable(ref):
        raise UserInputError(f"--reference={reference!r} is a {type(ref).__name__}, not a callable")
    return ref


def _check_reference(ref: Callable, reference: str, make: Callable[[torch.Generator], list[Tensor]], name: str,
                     shape: torch.Size) -> None:  # fmt: skip
    """:class:`UserInputError` unless ``--reference`` accepts the inputs and returns the Function's shape."""
    try:
        with torch.no_grad():
            r = ref(*make(torch.Generator().manual_seed(0)))
    except Exception as err:
        raise UserInputError(f"--reference={reference!r} does not accept the --shapes inputs: {type(err).__name__}: {err}") from None
    if not isinstance(r, Tensor) or r.shape != shape:
        raise UserInputError(
            f"--reference={reference!r} returns shape {tuple(getattr(r, 'shape', ()))}, but {name} returns {tuple(shape)}"
        )


def _verdict(name: str, row: Row, with_reference: bool) -> str:
    failed = row.failed_columns()
    if failed:
        return f"FAIL: {name}'s backward is wrong (failed: {', '.join(COLUMNS[k] for k in failed)})"
    checked = "the numerical Jacobian" + (" and the reference" if with_reference else "")
    return f"PASS: {name}'s backward agrees with {checked}"


def check_user_function(function: str, shapes: Sequence[str], reference: Optional[str] = None) -> tuple[Row, str]:
    """Check a user's Function with random float64 inputs of ``shapes``; ``(row, verdict)``.

    Raises :class:`UserInputError` (one line) for a module that does not import, a name that is
    not a Function, or shapes that do not fit it.
    """
    cls = _load_function(function)
    if not shapes:
        raise UserInputError("--shapes is needed with --function: one shape per input, e.g. --shapes 64x784 500x784 500")
    dims = [parse_shape(s) for s in shapes]
    ref = _load_reference(reference) if reference else None

    def make(g: torch.Generator) -> list[Tensor]:
        return [torch.randn(d, generator=g, dtype=torch.float64).requires_grad_(True) for d in dims]

    shape = _output_shape(cls, make, shapes)
    if ref is not None:
        _check_reference(ref, reference, make, cls.__name__, shape)
    big = sum(math.prod(d) for d in dims) > 2000  # full Jacobians would take minutes: random projections
    spec = FunctionSpec(cls.__name__, cls, lambda c, *xs: c.apply(*xs), ref or (lambda *xs: cls.apply(*xs)), make)
    row = _user_row(spec, big, ref is not None)
    return row, _verdict(cls.__name__, row, ref is not None)


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
        except Exception:  # the backward itself raised (any exception a learner's code raises): gradcheck says which
            return False
    return any(g is not None for g in second)


def _backward_projection(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> Callable[..., Tensor]:
    """The backward as a function of the inputs: ``xs ↦ ⟨∂⟨fn(xs), v⟩/∂xs, w⟩`` for fixed random ``v``, ``w``."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        shape = fn(*inputs).shape
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    ws = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in inputs]

    def projection(*xs: Tensor) -> Tensor:
        with torch.enable_grad():
            xs = [x if x.requires_grad else x.detach().requires_grad_(True) for x in xs]
            gs = torch.autograd.grad(fn(*xs), xs, v, create_graph=True, allow_unused=True)
        return sum((g * w).sum() for g, w in zip(gs, ws) if g is not None)

    return projection


def _projected_check(fn: Callable[..., Tensor], inputs: Sequence[Tensor], sizes: Sequence[int], second: bool = False) -> Cell:
    """gradcheck by random projections, for inputs too large for full Jacobians.

    For each input, the analytical ``⟨∂⟨f, v⟩/∂x, u⟩`` against the central difference along ``u``,
    for two random directions (torch's own ``fast_mode`` does the same but, on a failure, rebuilds
    the full Jacobians to report them, which for 64×784 inputs takes longer than anyone waits).
    ``second``: the same for the scalar ``⟨∂⟨f, v⟩/∂inputs, w⟩``, i.e. the backward's own backward.
    """
    target = _backward_projection(fn, inputs) if second else fn
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        for seed in (7, 8):
            d = directional(target, inputs, i, seed=seed)
            if d is None:
                return Cell(False, "fast", f"input {i}: {_backward_error(target, inputs)}")
            a, n = d
            if abs(a - n) <= 1e-5 + 1e-3 * abs(n):
                continue
            r, r2 = (a / n if n else None), directional_ratio(target, inputs, i, seed=15 - seed)
            if r is not None and r2 is not None and abs(r2 - r) <= 1e-3 * abs(r):
                return Cell(False, "fast", f"input {i}: " + ratio_hint(r, sizes))
            return Cell(False, "fast", f"input {i}: not a constant factor (ours/numerical {r if r is None else f'{r:.3g}'} "
                                       f"and {r2 if r2 is None else f'{r2:.3g}'} along two random directions)")  # fmt: skip
    return Cell(True, "fast")


def _backward_error(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> str:
    """The one line of what the backward raised (any exception), else that its gradient had the wrong shape."""
    try:
        with torch.enable_grad():
            out = fn(*inputs)
            torch.autograd.grad(out, [x for x in inputs if x.requires_grad], torch.ones_like(out), allow_unused=True)
    except Exception as err:
        return _error_hint(err)
    return "the backward returned a gradient of the wrong shape"


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
