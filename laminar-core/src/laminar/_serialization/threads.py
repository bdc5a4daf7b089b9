"""The thread pool for CPU work that releases the GIL (hashing, compressing), shared by this process."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """One pool of as many threads as cores (at least two), made on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(os.cpu_count() or 1, 2), thread_name_prefix="laminar-cpu")
        return _pool


def width() -> int:
    """How many pieces of work to keep in flight on the pool: a couple per thread."""
    return 2 * max(os.cpu_count() or 1, 2)
