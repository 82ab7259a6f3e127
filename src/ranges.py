"""The configuration's numeric ranges, as jsonargparse types: the CLI checks them while parsing and names the value.

:data:`FinitePositiveFloat` (lr, eps), :data:`FiniteNonNegativeFloat` (alpha, the elastic field's
strength), :data:`UnitIntervalCO` (Adam's betas, dropout, the augmentation's shift),
:data:`HalfTurnDegrees` (the augmentation's rotation); sizes use jsonargparse's ``PositiveInt``.
The model (:mod:`src.system.module`) and the data (:mod:`src.data.mnist`) declare them in their signatures.
"""

from __future__ import annotations

import math

from jsonargparse.typing import restricted_number_type

__all__ = ["FinitePositiveFloat", "FiniteNonNegativeFloat", "UnitIntervalCO", "HalfTurnDegrees"]

FinitePositiveFloat = restricted_number_type("FinitePositiveFloat", float, [(">", 0), ("<", math.inf)])
FiniteNonNegativeFloat = restricted_number_type("FiniteNonNegativeFloat", float, [(">=", 0), ("<", math.inf)])
UnitIntervalCO = restricted_number_type("UnitIntervalCO", float, [(">=", 0), ("<", 1)])  # [0, 1)
HalfTurnDegrees = restricted_number_type("HalfTurnDegrees", float, [(">=", 0), ("<=", 180)])  # [0, 180]
