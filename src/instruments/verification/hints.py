"""What a failing cell's numbers suggest: the ratio of our gradient to the reference (≈ 2: a missing ½;
≈ the batch size: a sum for a mean; ≈ −1: a flipped sign), a transposed shape, Adam without its bias
correction.  The checks (:mod:`~src.instruments.verification.checks`) put them on their cells.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

__all__ = ["compare_hint", "directional", "directional_ratio", "ratio_hint"]

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


def _values_and_grads(fn: Callable[..., Tensor], inputs: Sequence[Tensor], v: Optional[Tensor]) -> list[Tensor]:
    """``[value, ∂⟨value, v⟩/∂input for each input that requires grad]``."""
    with torch.enable_grad():
        out = fn(*inputs)
        diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
        grads = torch.autograd.grad(out, diff, v if v is not None else None, allow_unused=True)
    return [out.detach(), *grads]


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
