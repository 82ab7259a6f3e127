"""Hand-written gradient descent and Adam, as :class:`torch.optim.Optimizer` subclasses.

They keep their per-parameter state in ``self.state`` (so Lightning checkpoints carry it) and
run the closure Lightning passes to ``step`` (the training step lives inside it).  Updates are
in place.  Each update is written twice, the same arithmetic op for op, as torch/optim/adam.py
keeps ``_single_tensor_adam`` beside ``_multi_tensor_adam``:

* ``_update_each``: a loop over the parameters, the math of the class docstring line by line
  (read this one);
* ``_update_foreach``: the same ops applied to the whole list of parameters at once
  (``torch._foreach_*``, fewer kernel launches).

``foreach`` (default ``True``, what training uses; ``None``, torch.optim's default, means the same)
chooses between them; ``tests/test_optim.py``
proves them equal to the last bit.  :meth:`~HandOptimizer.step` applies them after ``backward``, as
every ``torch.optim`` optimizer, over all parameters with a gradient.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["HandOptimizer", "GD", "Adam", "OPTIMIZERS", "max_norm_"]


def _check_lr(lr: float) -> float:
    lr = float(lr)
    if not lr > 0 or math.isinf(lr):  # also rejects NaN
        raise ValueError(f"lr={lr!r} must be a positive finite number")
    return lr


def _check_foreach(foreach: bool | None) -> bool:
    """``foreach`` as ``torch.optim`` takes it: ``None`` (torch's default) is the implementation's choice, the foreach form."""
    if foreach is None:
        return True
    if not isinstance(foreach, bool):
        raise TypeError(
            f"foreach={foreach!r} must be True (the foreach form), False (the loop over parameters) "
            "or None (the implementation's choice: the foreach form)"
        )
    return foreach


def _check_max_norm(max_norm: float | None) -> float | None:
    if max_norm is None:
        return None
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not 0 < max_norm < math.inf:
        raise ValueError(f"max_norm={max_norm!r} must be a positive finite number, or None for no constraint")
    return float(max_norm)


def max_norm_(weight: Tensor, c: float) -> Tensor:
    """Srivastava et al.'s max-norm constraint, in place: each unit's incoming weights onto the ball ``‖w‖₂ ≤ c``.

    ``weight`` is ``(out, in)`` like ``nn.Linear``'s, so unit ``i``'s incoming weights are row ``i``::

        w_i ← w_i · min(1, c / ‖w_i‖₂)  =  w_i · c / max(‖w_i‖₂, c)

    a projection, not a gradient: rows inside the ball stay as they are (the factor is exactly 1).
    """
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)  # (out, 1)
    return weight.mul_(norms.clamp_min_(c).reciprocal_().mul_(c))


class HandOptimizer(Optimizer):
    """What GD and Adam share: the closure protocol and the ``foreach`` switch."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = [], []  # the parameters with a gradient, and their gradients
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
            if params:
                self._update(group, params, grads)
        return loss

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        """One update of ``params``: the foreach form if the group says so, else the loop.

        A single parameter always takes the loop: a foreach over one tensor is the same arithmetic
        with only the list's overhead added.
        """
        if group["foreach"] and len(params) > 1:
            self._update_foreach(group, params, grads)
        else:
            self._update_each(group, params, grads)
        if group["max_norm"] is not None:  # after the update: project each weight matrix's rows (biases stay free)
            for p in params:
                if p.dim() == 2:
                    max_norm_(p, group["max_norm"])

    def _update_each(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        raise NotImplementedError

    def _update_foreach(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        raise NotImplementedError

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # load_state_dict comes here too
        for group in self.param_groups:
            group.setdefault("foreach", True)  # a state saved before the switch existed
            group.setdefault("max_norm", None)  # … or before the max-norm constraint


class GD(HandOptimizer):
    """Plain (mini-batch) gradient descent, the course report's ``gradient_descent``::

        θ ← θ − η ∇θ L

    Equal to ``torch.optim.SGD(params, lr)`` with no momentum and no weight decay
    (weight penalties live in the loss, see :mod:`src.hand.losses`).  ``max_norm`` c projects each
    weight matrix's rows onto ``‖w‖₂ ≤ c`` after every update (:func:`max_norm_`; ``None``: off).
    """

    def __init__(
        self, params: Iterable, lr: float = 0.1, foreach: bool | None = True, max_norm: float | None = None
    ) -> None:
        defaults = {"lr": _check_lr(lr), "foreach": _check_foreach(foreach), "max_norm": _check_max_norm(max_norm)}
        super().__init__(params, defaults)

    def _update_each(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        for p, g in zip(params, grads):
            p.add_(g, alpha=-group["lr"])  # θ ← θ − η g

    def _update_foreach(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class Adam(HandOptimizer):
    """Adam with bias correction (Kingma & Ba, 2015), the course report's ``adam``.

    For each parameter θ with gradient g at its step t = 1, 2, …::

        m ← β₁ m + (1 − β₁) g            first moment  (state "exp_avg")
        v ← β₂ v + (1 − β₂) g²           second moment (state "exp_avg_sq")
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η m̂ / (√v̂ + ε)

    t counts the updates of *that* parameter (state "step"), as in ``torch.optim.Adam``: a
    parameter that first gets a gradient later (a layer unfrozen after a few steps) starts its
    bias correction at t = 1 then.  Equal to ``torch.optim.Adam`` with its defaults (no amsgrad,
    no weight decay).  ``max_norm`` as in :class:`GD`: the projection after each update.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        foreach: bool | None = True,
        max_norm: float | None = None,
    ) -> None:
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2:
            raise ValueError(f"betas={betas!r} must hold two numbers")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas[{i}]={beta!r} must be in [0, 1)")
        eps = float(eps)
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be > 0")
        defaults = {"lr": _check_lr(lr), "betas": betas, "eps": eps, "foreach": _check_foreach(foreach)}
        defaults["max_norm"] = _check_max_norm(max_norm)
        super().__init__(params, defaults)

    def _state(self, p: Tensor) -> dict:
        """``p``'s state, created on its first update."""
        state = self.state[p]
        if not state:
            state["step"] = 0  # t: updates of this parameter so far
            state["exp_avg"] = torch.zeros_like(p)  # m, first moment of g
            state["exp_avg_sq"] = torch.zeros_like(p)  # v, second moment of g
        return state

    def _update_each(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        for p, g in zip(params, grads):
            state = self._state(p)
            state["step"] += 1
            t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t
            m.lerp_(g, 1 - beta1)  # m ← β₁m + (1−β₁)g
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v ← β₂v + (1−β₂)g²
            # √v̂ + ε = √v / √(1−β₂ᵗ) + ε
            denom = v.sqrt().div_(math.sqrt(bias_correction2)).add_(group["eps"])
            # θ ← θ − (η / (1−β₁ᵗ)) m / (√v̂ + ε)
            p.addcdiv_(m, denom, value=-group["lr"] / bias_correction1)

    def _update_foreach(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        # Parameters at the same step t share the bias correction: one set of foreach ops each.
        by_step: dict[int, tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]] = {}
        for p, g in zip(params, grads):
            state = self._state(p)
            state["step"] += 1
            bucket = by_step.setdefault(state["step"], ([], [], [], []))
            for lst, t in zip(bucket, (p, g, state["exp_avg"], state["exp_avg_sq"])):
                lst.append(t)
        beta1, beta2 = group["betas"]
        for t, (ps, gs, exp_avgs, exp_avg_sqs) in by_step.items():
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t
            torch._foreach_lerp_(exp_avgs, gs, 1 - beta1)  # m ← β₁m + (1−β₁)g
            torch._foreach_mul_(exp_avg_sqs, beta2)  # v ← β₂v + (1−β₂)g²
            torch._foreach_addcmul_(exp_avg_sqs, gs, gs, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)  # √v̂ + ε = √v / √(1−β₂ᵗ) + ε
            torch._foreach_div_(denom, math.sqrt(bias_correction2))
            torch._foreach_add_(denom, group["eps"])
            # θ ← θ − (η / (1−β₁ᵗ)) m / (√v̂ + ε)
            torch._foreach_addcdiv_(ps, exp_avgs, denom, value=-group["lr"] / bias_correction1)


#: Optimizer name (as used by configs and the CLI) → hand-written class.
OPTIMIZERS = {"gd": GD, "adam": Adam}
