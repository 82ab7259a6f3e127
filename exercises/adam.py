"""Exercise 6 of 6: Adam's step, with bias correction.      Check: python -m src.verify --exercise adam

For each parameter θ with gradient g, at its step t = 1, 2, … (Kingma & Ba, 2015):

    m ← β₁ m + (1 − β₁) g          the first moment   (state["exp_avg"])
    v ← β₂ v + (1 − β₂) g²         the second moment  (state["exp_avg_sq"])
    m̂ = m / (1 − β₁ᵗ),   v̂ = v / (1 − β₂ᵗ)        the bias correction
    θ ← θ − η m̂ / (√v̂ + ε)

Write the update inside ``step``: m and v must carry over to the next step (they live in
``self.state[p]``), and ``p`` is updated in place (``p.add_``, ``p.addcdiv_``: ``p = p − …``
would make a new tensor and leave the parameter as it was).  Every tensor here has p's shape.

The derivation: docs/derivations.md#adam.   Stuck?  python -m src.verify --exercise adam --hint
"""

import torch
from torch.optim import Optimizer


class Adam(Optimizer):
    """Adam with bias correction; the project's piece: ``src.hand.optim.Adam``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's training step lives inside the closure
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:  # the first step of p
                    state["step"] = 0  # t
                    state["exp_avg"] = torch.zeros_like(p)  # m
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                # ---- your code: start ----
                raise NotImplementedError("update m and v in place, correct their bias, then step p in place")
                # ---- your code: end ----
        return loss
