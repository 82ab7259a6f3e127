"""The course report's ``ParameterInitializer``: random, gaussian and glorot weights.

Weights are shaped ``(fan_out, fan_in)`` like :class:`torch.nn.Linear`.

========  ===========================================  ======================
method    weights                                      biases
========  ===========================================  ======================
random    U(−1/√fan_in, +1/√fan_in)  (nn.Linear's)     U(−1/√fan_in, +1/√fan_in)
gaussian  N(0, 1/fan_in)                               N(0, 1/fan_in)
glorot    U(−√(6/(fan_in+fan_out)), +√(…))             0
========  ===========================================  ======================

The glorot variance is ``bound²/3 = 2/(fan_in + fan_out)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["ParameterInitializer", "INITIALIZATIONS", "make_generator"]

INITIALIZATIONS = ("random", "gaussian", "glorot")


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A generator from an int seed; a generator or ``None`` passes through."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


class ParameterInitializer:
    """Draws the weights and biases of a fully connected net.

    ``ParameterInitializer("glorot").initialize_parameters(784, [500, 250, 100], 10, seed=0)``
    returns ``{"W1": (500, 784), "b1": (500,), …, "W4": (10, 100), "b4": (10,)}``.
    """

    def __init__(self, initialization: str = "glorot") -> None:
        if initialization not in INITIALIZATIONS:
            raise ValueError(
                f"initialization={initialization!r} is not supported; allowed: "
                + ", ".join(repr(m) for m in INITIALIZATIONS)
            )
        self.initialization = initialization

    def layer(
        self, fan_in: int, fan_out: int, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> tuple[Tensor, Tensor]:
        """One layer's ``(W, b)``: ``W`` is ``(fan_out, fan_in)``, ``b`` is ``(fan_out,)``."""
        w = torch.empty(fan_out, fan_in, dtype=dtype)
        b = torch.empty(fan_out, dtype=dtype)
        if self.initialization == "random":
            bound = 1.0 / math.sqrt(fan_in)
            w.uniform_(-bound, bound, generator=generator)
            b.uniform_(-bound, bound, generator=generator)
        elif self.initialization == "gaussian":
            std = 1.0 / math.sqrt(fan_in)
            w.normal_(0.0, std, generator=generator)
            b.normal_(0.0, std, generator=generator)
        else:  # glorot
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-bound, bound, generator=generator)
            b.zero_()
        return w, b

    def initialize_parameters(
        self,
        inputs: int,
        hidden_layers: Sequence[int],
        outputs: int,
        seed: int | torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Tensor]:
        """``{"W1", "b1", …, "W{L+1}", "b{L+1}"}`` for ``inputs → hidden_layers → outputs``.

        ``seed`` (an int or a :class:`torch.Generator`) makes the draw repeatable;
        ``None`` uses torch's global generator.
        """
        sizes = [inputs, *hidden_layers, outputs]
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
            raise ValueError(
                f"hidden_layers={list(hidden_layers)!r} is not allowed: every layer size must be an integer > 0 "
                f"(sizes {sizes})"
            )
        sizes = [int(s) for s in sizes]
        generator = make_generator(seed)
        params: dict[str, Tensor] = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            params[f"W{i}"], params[f"b{i}"] = self.layer(fan_in, fan_out, generator, dtype)
        return params

    def __repr__(self) -> str:
        return f"ParameterInitializer(initialization={self.initialization!r})"
