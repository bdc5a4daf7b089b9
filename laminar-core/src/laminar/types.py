"""Small typing helpers that flows use."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def unwrap(value: T | None, default: T | None = None) -> T:
    """``value`` if it is not ``None``, else ``default``; ``ValueError`` if both are ``None``.

    Narrows ``Optional`` for type checkers: ``unwrap(self.index)``, ``unwrap(self.index, 0)``.
    """
    if value is not None:
        return value
    if default is not None:
        return default
    raise ValueError("unwrap() got None and no default; pass one as unwrap(value, default)")
