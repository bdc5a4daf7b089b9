"""Execution ids: unique, 27 characters, and lexicographically sorted by creation time.

Layout: 6 bytes of milliseconds since the Unix epoch followed by 14 random bytes, base62-encoded
with a fixed width. Within one process ids made in the same millisecond still increase.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # ASCII order
_WIDTH = 27
_RANDOM_BITS = 112
_lock = threading.Lock()
_last = 0


def _encode(number: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(_WIDTH, "0")


def new_execution_id() -> str:
    """Return a new execution id, greater than every id this process made before."""
    global _last
    with _lock:
        number = (time.time_ns() // 1_000_000) << _RANDOM_BITS | int.from_bytes(os.urandom(14), "big")
        if number <= _last:
            number = _last + 1
        _last = number
    return _encode(number)
