"""Python's cyclic garbage collector paused while a large record is read or written.

Reading a split batch of 10,000 splits builds some 50,000 dicts, tuples and records, and writing
one builds as many dicts: each allocation counts towards the collector's next pass, and the passes
it triggers walk every object the process holds, again and again, while the batch is built. None of
those objects forms a cycle, so there is nothing for a pass to find: with the collector paused,
reading or writing such a batch takes a fraction of the time (figures: docs/performance.md).

The pause is process-wide (``gc.disable``), so it is counted: threads reading batches at once
resume collection when the last of them is done, and a collector that was already off (the
application's choice) stays off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pausing = 0  # how many callers are inside ``paused()`` now
_resume = False  # whether the collector was on when the first of them paused it


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No collection pass inside (cycles made meanwhile are collected after)."""
    global _pausing, _resume
    with _lock:
        if _pausing == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _lock:
            _pausing -= 1
            if _pausing == 0 and _resume:
                gc.enable()
