"""The thread pools of this process: CPU work that releases the GIL (hashing, compressing), and staging."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_staging: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """One pool of as many threads as cores (at least two), made on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(cores(), 2), thread_name_prefix="laminar-cpu")
        return _pool


def cores() -> int:
    """This machine's cores, as the pools count them."""
    return os.cpu_count() or 1


def staging_pool() -> ThreadPoolExecutor:
    """Threads that serialize several large values at once, one fewer than cores (the caller is one).

    Apart from :func:`pool`: staging waits on hashing and compressing there, and would deadlock it.
    """
    global _staging
    with _lock:
        if _staging is None:
            _staging = ThreadPoolExecutor(max(cores() - 1, 1), thread_name_prefix="laminar-stage")
        return _staging


def width() -> int:
    """How many pieces of work to keep in flight on the pool: a couple per thread."""
    return 2 * max(cores(), 2)
