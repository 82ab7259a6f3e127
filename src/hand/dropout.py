"""Inverted dropout as a hand-derived Function, and the seeded random stream of its masks.

    python -m src.train fit --config configs/best.yaml   # dropout 0.2 on the hidden layers

Training multiplies each hidden output by a random mask that keeps a unit with probability
``q = 1 − p`` and scales the kept ones by ``1/q`` ("inverted" dropout), so the expected output
equals the input and evaluation needs no rescaling: dropout is simply off there.

The masks come from a dedicated :class:`torch.Generator` (:class:`MaskStream`), seeded from the
run's seed and saved in every checkpoint, so a resumed run draws the same masks as one that was
never interrupted, whatever else uses the global random state.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable


__all__ = ["Dropout", "MaskStream", "dropout", "dropout_mask", "check_dropout"]


def check_dropout(p: Any, name: str = "dropout") -> float:
    """``p`` if it is a drop probability dropout can use (0 ≤ p < 1), else a ``ValueError`` naming it."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(
            f"{name}={p!r} is not allowed; the drop probability must be a number with 0 <= p < 1 "
            "(0 turns dropout off; 1 would drop every unit)"
        )
    return float(p)


class Dropout(Function):
    """Inverted dropout at a given mask: ``y = x ⊙ m`` with ``m = b / q``, ``b ~ Bernoulli(q)``, ``q = 1 − p``.

    ``m`` is drawn outside (:func:`dropout_mask`) and enters as a constant, so the Function is
    linear in ``x`` with a diagonal Jacobian ``∂y_i/∂x_j = δ_ij m_i``::

        ∂L/∂x = g ⊙ m          (batch, features)

    the same scaled mask as the forward: a dropped unit (``m_i = 0``) passes no gradient, a kept one
    passes ``g_i / q``.  The mask gets no gradient (it is not a function of anything trained).
    """

    @staticmethod
    def forward(x: Tensor, mask: Tensor) -> Tensor:
        return x * mask  # (batch, features)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, mask = inputs
        ctx.save_for_backward(mask)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout_mask(like: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """The scaled mask ``b / (1 − p)``, ``b ~ Bernoulli(1 − p)``, shaped and typed like ``like``.

    Drawn exactly as ``torch.nn.functional.dropout`` draws its noise on the CPU
    (``empty_like(x).bernoulli_(1 − p).div_(1 − p)``), so from the same generator state both give
    the same mask, bit for bit (``tests/test_dropout.py``).
    """
    q = 1.0 - p
    return torch.empty_like(like).bernoulli_(q, generator=generator).div_(q)


def dropout(x: Tensor, p: float, training: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """Inverted dropout with a hand-derived backward (see :class:`Dropout`); the identity when off."""
    if not training or p == 0:
        return x
    return Dropout.apply(x, dropout_mask(x, p, generator))


class MaskStream:
    """The random stream of the dropout masks: a :class:`torch.Generator` seeded once, checkpointed.

    The generator is made on the device of the first tensor it draws for (the CPU in this project;
    a CUDA tensor needs a CUDA generator), and its state travels as a plain ``uint8`` tensor in
    ``state_dict`` (loadable with ``weights_only=True``).  A state loaded before the first draw
    is applied when the generator is made.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._gen: Optional[torch.Generator] = None
        self._pending: Optional[Tensor] = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != torch.device(device):
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            if self._pending is not None:
                gen.set_state(self._pending)
            self._gen = gen
        return self._gen

    def state_dict(self) -> dict[str, Any]:
        if self._gen is None:
            return {"seed": self.seed, "state": self._pending}
        return {"seed": self.seed, "state": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._pending = state["state"]
        if self._gen is not None:
            if self._pending is None:
                self._gen.manual_seed(self.seed)
            else:
                self._gen.set_state(self._pending)
