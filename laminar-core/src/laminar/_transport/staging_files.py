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


def open_new(path: str, flags: int, mode: int) -> int:
    """``os.open(path, flags, mode)``: a file in a staging directory, made again if it was removed."""
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        _make(os.path.dirname(path))
        return os.open(path, flags, mode)


def new_file(directory: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp(suffix, dir=directory)``, ``directory`` made again if it was removed."""
    try:
        return tempfile.mkstemp(suffix, dir=directory)
    except FileNotFoundError:
        _make(directory)
        return tempfile.mkstemp(suffix, dir=directory)


def _make(directory: str) -> None:
    # A file where the directory should be is left for the open that follows to report; makedirs'
    # FileExistsError must not escape as if it were about the file being created (``Local.create``).
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, exist_ok=True)
