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


def idle_threads() -> list[threading.Thread]:
    """The pools' threads. Between runs they are idle (Laminar waits for all it hands them), so a
    fork of this process then leaves nothing half done behind; the child makes pools of its own."""
    with _lock:
        pools = [pool for pool in (_pool, _staging) if pool is not None]
    return [thread for pool in pools for thread in list(pool._threads)]


def _forget_pools() -> None:
    """In a forked child: the pools' threads were not forked, so the child starts pools afresh."""
    global _pool, _staging, _lock
    _pool = _staging = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def width() -> int:
    """How many pieces of work to keep in flight on the pool: a couple per thread."""
    return 2 * max(cores(), 2)
