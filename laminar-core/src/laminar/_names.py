"""Validation of names that become storage paths, so nothing escapes a datastore's root."""

from __future__ import annotations

import functools
import re

from laminar.errors import InvalidName

_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")


def validate(name: str, *, what: str) -> str:
    """Return ``name`` if it is a safe single path component, else raise :class:`InvalidName`.

    Safe: 1-200 characters of letters, digits, ``_``, ``.`` and ``-``, not starting with ``.`` or ``-``.
    """
    if isinstance(name, str) and _is_safe(name):
        return name
    raise InvalidName(
        f"{what} {name!r} cannot be used as a storage name: use 1-200 letters, digits, '_', '.' or '-',"
        " starting with a letter, digit or '_' (no '/', '..', NUL or absolute paths)."
    )


def is_valid(name: str) -> bool:
    """Whether ``name`` would pass :func:`validate` (for skipping entries that are not Laminar's)."""
    return isinstance(name, str) and _is_safe(name)


@functools.lru_cache(maxsize=4096)
def _is_safe(name: str) -> bool:
    return _SAFE.fullmatch(name) is not None
