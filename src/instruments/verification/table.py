"""The table of ``python -m src.verify``: its columns, and one :class:`Row` of :class:`Cell` s per checked piece.

What each column checks is in the package's docstring (:mod:`src.instruments.verification`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["COLUMNS", "Cell", "NA", "Row"]

#: column key → header
COLUMNS = {
    "gradcheck": "gradcheck",
    "gradgrad": "gradgradcheck",
    "fp32": "max|Δ| fp32",
    "fp64": "max|Δ| fp64",
    "extreme": "extreme fp32",
    "kink": "kink",
    "lockstep": "lockstep",
}


@dataclass
class Cell:
    """One check's outcome: ``ok`` True / False, or None where the check does not apply."""

    ok: Optional[bool]
    text: str = "—"
    hint: str = ""

    def show(self) -> str:
        if self.ok is None:
            return "—"
        mark = "ok" if self.ok else "FAIL"
        return f"{self.text} {mark}" if self.text else mark


NA = Cell(None)


@dataclass
class Row:
    piece: str
    cells: dict[str, Cell] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.cells.values())

    def failed_columns(self) -> list[str]:
        return [k for k in COLUMNS if self.cells.get(k, NA).ok is False]

    def hints(self) -> list[str]:
        seen, out = set(), []
        for k in COLUMNS:
            c = self.cells.get(k, NA)
            if c.ok is False and c.hint and c.hint not in seen:
                seen.add(c.hint)
                out.append(f"{COLUMNS[k]}: {c.hint}")
        return out
