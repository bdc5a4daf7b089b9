"""New files in a staging directory that may have been removed since it was made.

A datastore makes its staging directory once and trusts it after (``Local`` remembers it), so a write
costs no look at the directory first. If it was removed since (a user's ``rm -rf .laminar/.staging``,
a cleanup job, another process), the open of a new file in it fails: the directory is made again and
the open tried once more, so the datastore object keeps working rather than failing every write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def open_new(path: str, flags: int, mode: int) -> int:
    """``os.open(path, flags, mode)``: a file in a staging directory, made again if it was removed."""
    return _made_again(os.path.dirname(path), lambda: os.open(path, flags, mode))


def new_file(directory: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp(suffix, dir=directory)``, ``directory`` made again if it was removed."""
    return _made_again(directory, lambda: tempfile.mkstemp(suffix, dir=directory))


def _made_again(directory: str, create: Callable[[], T]) -> T:
    """``create()``; if ``directory`` is missing, it is made again and ``create()`` tried once more.

    A file where the directory should be is left for the second ``create()`` to report: makedirs'
    FileExistsError must not escape as if it were about the file being created (``Local.create``)."""
    try:
        return create()
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.makedirs(directory, exist_ok=True)
        return create()
