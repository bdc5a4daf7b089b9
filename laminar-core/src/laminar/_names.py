"""Validation of names that become storage paths, so nothing escapes a datastore's root."""

from __future__ import annotations

import functools
import re

from laminar.errors import InvalidName

_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
#: Names a Windows client or an SMB share cannot keep apart from others (a store may live on one):
#: the device names Windows reserves in every directory, with or without an extension (``CON``,
#: ``nul.txt``, ``COM1`` ...), and names ending in ``.`` or a space, which Windows strips (``name.``
#: and ``name`` would share one directory).
_RESERVED = re.compile(
    r"(?i)(CON|PRN|AUX|NUL|COM[1-9\u00b9\u00b2\u00b3]|LPT[1-9\u00b9\u00b2\u00b3])(\..*)?|.*[. ]"
)
_SHOWN = 100  # characters of a rejected name quoted in the message


def validate(name: str, *, what: str) -> str:
    """Return ``name`` if it is a safe single path component, else raise :class:`InvalidName`.

    Safe: 1-200 characters of letters, digits, ``_``, ``.`` and ``-``, not starting with ``.`` or ``-``,
    not ending with ``.``, and not a Windows device name.
    """
    if isinstance(name, str) and _is_safe(name):
        return name
    shown = (
        name
        if not isinstance(name, str) or len(name) <= _SHOWN
        else f"{name[:_SHOWN]}... ({len(name)} characters)"
    )
    if isinstance(name, str) and _RESERVED.fullmatch(name) and _SAFE.fullmatch(name.rstrip(". ") or "-"):
        raise InvalidName(
            f"{what} {shown!r} cannot be used as a storage name: Windows and SMB shares cannot keep it apart "
            "from other names (they reserve CON, PRN, AUX, NUL, COM1-9 and LPT1-9, with any extension, for "
            "devices, and strip a trailing '.' or space); choose another name"
        )
    raise InvalidName(
        f"{what} {shown!r} cannot be used as a storage name: use 1-200 letters, digits, '_', '.' or '-',"
        " starting with a letter, digit or '_' (no '/', '..', NUL or absolute paths)."
    )


def is_valid(name: str) -> bool:
    """Whether ``name`` would pass :func:`validate` (for skipping entries that are not Laminar's)."""
    return isinstance(name, str) and _is_safe(name)


@functools.lru_cache(maxsize=4096)
def _is_safe(name: str) -> bool:
    return _SAFE.fullmatch(name) is not None and _RESERVED.fullmatch(name) is None
