"""Small typing helpers that flows use."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def unwrap(value: T | None, message: str = "expected a value, got None") -> T:
    """Return ``value``, raising ``ValueError`` if it is ``None`` (narrows ``Optional`` for type checkers)."""
    if value is None:
        raise ValueError(message)
    return value
