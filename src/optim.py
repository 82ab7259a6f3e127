"""Hand-written gradient descent and Adam, as :class:`torch.optim.Optimizer` subclasses.

They keep their per-parameter state in ``self.state`` (so Lightning checkpoints
carry it) and run the closure Lightning passes to ``step`` (the training step
lives inside it).  Updates are in place and use the ``torch._foreach_*`` ops,
which apply one arithmetic op to the whole list of parameters at once.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["GD", "Adam", "OPTIMIZERS"]


def _check_lr(lr: float) -> float:
    lr = float(lr)
    if not lr > 0 or math.isinf(lr):  # also rejects NaN
        raise ValueError(f"lr={lr!r} must be a positive finite number")
    return lr


def _with_grads(group: dict) -> tuple[list[Tensor], list[Tensor]]:
    params = [p for p in group["params"] if p.grad is not None]
    return params, [p.grad for p in params]


class GD(Optimizer):
    """Plain (mini-batch) gradient descent, the seed's ``gradient_descent``::

        θ ← θ − η ∇θ L

    Equal to ``torch.optim.SGD(params, lr)`` with no momentum and no weight decay
    (weight penalties live in the loss, see :mod:`src.losses`).
    """

    def __init__(self, params: Iterable, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": _check_lr(lr)})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = _with_grads(group)
            if params:
                torch._foreach_add_(params, grads, alpha=-group["lr"])
        return loss


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015), the seed's ``adam``.

    For each parameter θ with gradient g at step t = 1, 2, …::

        m ← β₁ m + (1 − β₁) g            first moment  (state "exp_avg")
        v ← β₂ v + (1 − β₂) g²           second moment (state "exp_avg_sq")
        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η m̂ / (√v̂ + ε)

    Equal to ``torch.optim.Adam`` with its defaults (no amsgrad, no weight decay).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
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
        super().__init__(params, {"lr": _check_lr(lr), "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = _with_grads(group)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            exp_avgs, exp_avg_sqs = [], []
            for p in params:
                state = self.state[p]
                if not state:  # lazily created on the first step
                    state["step"] = 0  # number of updates made so far (t)
                    state["exp_avg"] = torch.zeros_like(p)  # m, first moment of g
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v, second moment of g
                state["step"] += 1
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            # All parameters of a group step together, so they share t.
            t = self.state[params[0]]["step"]
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t

            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m ← β₁m + (1−β₁)g
            torch._foreach_mul_(exp_avg_sqs, beta2)  # v ← β₂v + (1−β₂)g²
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)  # √v̂ + ε = √v / √(1−β₂ᵗ) + ε
            torch._foreach_div_(denom, math.sqrt(bias_correction2))
            torch._foreach_add_(denom, group["eps"])
            # θ ← θ − (η / (1−β₁ᵗ)) m / (√v̂ + ε)
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-group["lr"] / bias_correction1)
        return loss


#: Optimizer name (as used by configs and the CLI) → hand-written class.
OPTIMIZERS = {"gd": GD, "adam": Adam}
