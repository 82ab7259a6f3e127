"""Argument checks at the math's public entries: one ``ValueError`` / ``TypeError`` naming the value and what is allowed.

The wrappers of :mod:`~src.hand.functional` and :mod:`~src.hand.losses` call these before any work
starts, so an input the hand-derived math does not handle the way PyTorch does is refused in one
line instead of giving a silently wrong value or gradient.  The rules, and what PyTorch does there:

* tensors are of a real floating dtype (float16, bfloat16, float32, float64): complex ones are
  refused (torch differentiates them with conjugated gradients; the derivatives here are real),
  integer and bool ones too (nothing to differentiate: ``torch.softmax``, ``F.cross_entropy`` and
  ``F.mse_loss`` raise for them, ``torch.sigmoid`` / ``tanh`` promote them to float, ``torch.relu``
  keeps integers and refuses bool);
* two tensors combined element by element (``mse_loss``, ``add``, one-hot targets) have the same
  shape and dtype: torch would broadcast (``F.mse_loss`` only warns) and promote;
* cross-entropy takes ``(B, C)`` or unbatched ``(C,)`` inputs, with targets either floating rows of
  the same shape (one-hot or probabilities) or int64 class indices of shape ``(B,)`` / ``()`` in
  ``[0, C)``, as ``F.cross_entropy``; ``(B, C, d…)`` inputs (torch's classes in dim 1) are refused.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_float",
    "check_linear",
    "check_same",
    "check_class_target",
    "check_weights",
    "check_alpha",
]

_FLOATING = "a real floating tensor (float16, bfloat16, float32 or float64)"


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """``ValueError`` naming ``value`` and the allowed names unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}")


def describe(x: Any) -> str:
    """``float32 (8, 1)`` for a tensor, the type's name for anything else (for the messages)."""
    if isinstance(x, Tensor):
        return f"{str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}"
    return type(x).__name__


def check_float(fn: str, x: Any, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is a tensor of a real floating dtype."""
    if isinstance(x, Tensor) and x.is_floating_point():  # False for complex, integer and bool tensors
        return
    why = ""
    if isinstance(x, Tensor) and x.is_complex():
        why = "; complex tensors are not supported (the hand-derived derivatives are real ones)"
    raise TypeError(f"{fn}: {name} must be {_FLOATING}; got {describe(x)}{why}")


def _dtype_error(fn: str, names: Sequence[str], tensors: Sequence[Tensor]) -> TypeError:
    """The error for tensors of more than one dtype (built only when there is one)."""
    words = [f"{n} {str(x.dtype).removeprefix('torch.')}" for n, x in zip(names, tensors)]
    return TypeError(f"{fn}: {_and(list(names))} must share one dtype; got {_and(words)} (convert with .to(dtype))")


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def check_linear(x: Any, weight: Any, bias: Any) -> None:
    """``x (batch, in)``, ``weight (out, in)``, ``bias (out,)``, floating, one dtype."""
    check_float("linear", x, "x")
    check_float("linear", weight, "weight")
    check_float("linear", bias, "bias")
    if x.dim() != 2 or weight.dim() != 2 or bias.dim() != 1 or x.shape[1] != weight.shape[1] or bias.shape[0] != weight.shape[0]:
        raise ValueError(
            "linear takes x (batch, in_features), weight (out_features, in_features) and bias (out_features,); "
            f"got x {tuple(x.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)} "
            "(F.linear also maps x of other shapes over its last dim: reshape x to (-1, in_features) first)"
        )
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise _dtype_error("linear", ("x", "weight", "bias"), (x, weight, bias))


def check_same(fn: str, a: Any, b: Any, names: tuple[str, str] = ("pred", "target")) -> None:
    """Both floating, the same shape and dtype: no broadcasting, no promotion."""
    check_float(fn, a, names[0])
    check_float(fn, b, names[1])
    if a.shape != b.shape:
        try:
            torch_would = f"torch would broadcast them to {tuple(torch.broadcast_shapes(a.shape, b.shape))}"
        except RuntimeError:
            torch_would = "torch refuses them too"
        raise ValueError(
            f"{fn} takes {names[0]} and {names[1]} of the same shape; got {names[0]} {tuple(a.shape)} and "
            f"{names[1]} {tuple(b.shape)} ({torch_would}); give both the same shape"
        )
    if a.dtype != b.dtype:
        raise _dtype_error(fn, names, (a, b))


def check_class_target(fn: str, x: Any, target: Any, name: str) -> bool:
    """Check a cross-entropy pair; ``True`` when ``target`` holds class indices, ``False`` when it holds rows.

    ``x`` is ``(B, C)`` or unbatched ``(C,)``; ``target`` is floating rows of ``x``'s shape and dtype
    (one-hot or probabilities) or int64 class indices of shape ``x.shape[:-1]`` in ``[0, C)``.
    """
    check_float(fn, x, name)
    if x.dim() not in (1, 2):
        hint = ""
        if x.dim() > 2:  # F.cross_entropy's (B, C, d…): the classes in dim 1, the loss a mean over B·d…
            hint = (f"; F.cross_entropy would take dim 1 as the classes: move them last and flatten, "
                    f"{name}.movedim(1, -1).reshape(-1, {x.shape[1]}), and the target to match")  # fmt: skip
        raise ValueError(f"{fn} takes {name} (batch, classes) or unbatched (classes,); got {name} {tuple(x.shape)}{hint}")
    if isinstance(target, Tensor) and target.is_floating_point():  # one-hot or probability rows
        if target.shape != x.shape:
            raise ValueError(
                f"{fn}: a floating target holds one-hot or probability rows shaped like {name} {tuple(x.shape)}; "
                f"got target {tuple(target.shape)} (class indices are int64 of shape {tuple(x.shape[:-1])})"
            )
        if target.dtype != x.dtype:
            raise _dtype_error(fn, (name, "target"), (x, target))
        return False
    rows, classes = tuple(x.shape[:-1]), x.shape[-1]
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or tuple(target.shape) != rows:
        wanted = (f"{fn} takes a target of one-hot or probability rows (floating, {tuple(x.shape)}) "
                  f"or int64 class indices {rows}; got target {describe(target)}")  # fmt: skip
        if not isinstance(target, Tensor) or target.dtype != torch.int64:
            raise TypeError(wanted + " (convert class indices with .long())")
        raise ValueError(wanted + f" (F.one_hot gives int64 rows: convert them with .to({name}.dtype))")
    bad = target[(target < 0) | (target >= classes)]
    if bad.numel():
        raise ValueError(
            f"{fn}: class index {int(bad.flatten()[0])} is out of range [0, {classes}) for {name} {tuple(x.shape)} "
            "(F.cross_entropy's ignore_index is not supported: drop those rows)"
        )
    return True


def check_weights(fn: str, weights: Any) -> list[Tensor]:
    """The weight matrices of a penalty as a list: a non-empty iterable of floating tensors of one dtype."""
    if isinstance(weights, Tensor) or not isinstance(weights, Iterable):
        raise TypeError(f"{fn}: weights must be a list of weight tensors; got {describe(weights)} (wrap one tensor as [W])")
    weights = list(weights)
    if not weights:
        raise ValueError(f"{fn}: weights is empty; it takes at least one weight tensor")
    check_float(fn, weights[0], "weights[0]")
    dtype = weights[0].dtype
    for i, w in enumerate(weights):
        if not (isinstance(w, Tensor) and w.dtype == dtype):  # the same dtype as a floating one: floating
            check_float(fn, w, f"weights[{i}]")
            raise _dtype_error(fn, ("weights[0]", f"weights[{i}]"), (weights[0], w))
    return weights


def check_smoothing(label_smoothing: Any) -> float:
    """Label smoothing ε as a float in [0, 1], as ``F.cross_entropy`` takes it (``ValueError`` / ``TypeError`` naming it)."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing={label_smoothing!r} must be a real number in [0, 1]; got {describe(label_smoothing)}")
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1] (0 = off)")
    return label_smoothing


def check_alpha(alpha: Any) -> float:
    """A penalty's strength α as a float: a finite real number ≥ 0 (``ValueError`` / ``TypeError`` naming it)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha={alpha!r} must be a real number >= 0; got {describe(alpha)}")
    alpha = float(alpha)
    if not (alpha >= 0 and math.isfinite(alpha)):  # `not >=` also rejects NaN
        raise ValueError(f"alpha={alpha!r} must be a finite number >= 0")
    return alpha
