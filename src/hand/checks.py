"""Argument checks at the math's public entries: one ``ValueError`` naming the value and what is allowed."""

from __future__ import annotations

from typing import Sequence

__all__ = ["check_choice"]


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """``ValueError`` naming ``value`` and the allowed names unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}")
