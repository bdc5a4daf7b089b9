"""Large buffers are written to local files in pieces of ``PIECE`` bytes, not in one call.

One ``write`` of many megabytes lets Linux cache it in large folios, taken from high-order free
memory; where that memory is cold (a virtual machine that hands free memory back to its host, and
faults it in again page by page), such a write took many times longer than the same bytes written in
pieces of ``PIECE`` bytes, which are cached in small folios from the memory the kernel has at hand
(figures: docs/performance.md). Elsewhere pieces cost nothing measurable: a few hundred calls for
64 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

PIECE = 256 * 1024


def pieces(data: Any) -> Iterator[memoryview]:
    """``data`` (a contiguous buffer) as views of at most ``PIECE`` bytes, in order."""
    view = memoryview(data).cast("B")
    for start in range(0, view.nbytes, PIECE):
        yield view[start : start + PIECE]


def write_fd(fd: int, data: Any) -> None:
    """Write all of ``data`` to the file descriptor ``fd``, a piece at a time."""
    for piece in pieces(data):
        while piece:
            piece = piece[os.write(fd, piece) :]
