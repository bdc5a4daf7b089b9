"""The thread pools of this process: CPU work that releases the GIL (hashing, compressing), and staging."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

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
    """Threads that serialize or read several large values at once, one fewer than cores (the caller
    is one): see :func:`in_runs`.

    Apart from :func:`pool`: staging and reading wait on hashing and compressing there, and would
    deadlock it.
    """
    global _staging
    with _lock:
        if _staging is None:
            _staging = ThreadPoolExecutor(max(cores() - 1, 1), thread_name_prefix="laminar-stage")
        return _staging


def in_runs(positions: range, one: Callable[[int], T]) -> tuple[list[T], BaseException | None]:
    """``one(position)`` for each of ``positions``, in contiguous runs, one a core: the first on this
    thread, the others on the staging pool, each in a copy of this context (a split's context
    variables go along). Large values are serialized and read this way: mostly copying, hashing and
    page faults, which release the GIL.

    Every run ends before this returns, each stopped at its first failure. Returned: what the runs
    gave, in order, and the error for the caller to raise, if any: what interrupted this thread while
    it waited for them, else the first failure in order.
    """
    count = min(cores(), len(positions))
    bounds = [positions.start + len(positions) * k // count for k in range(count + 1)]

    def run(start: int, stop: int) -> tuple[list[T], BaseException | None]:
        done: list[T] = []
        for position in range(start, stop):
            try:
                done.append(one(position))
            except BaseException as error:  # the run stops at its first failure, as one by one would
                return done, error
        return done, None

    others = [
        staging_pool().submit(contextvars.copy_context().run, run, bounds[k], bounds[k + 1])
        for k in range(1, count)
    ]
    results = [run(bounds[0], bounds[1])]
    interrupted: BaseException | None = None
    for future in others:
        waited = wait_on(future)  # every run is waited for, whatever interrupted the wait before
        interrupted = interrupted or waited
        results.append(future.result())  # a run returns its failure rather than raise it
    failed = next((error for _, error in results if error is not None), None)  # the runs are in order
    return [value for done, _ in results for value in done], interrupted or failed


def wait_on(future: Future[Any]) -> BaseException | None:
    """Wait until ``future`` is done, whatever interrupts this thread meanwhile (a KeyboardInterrupt):
    what the work made (a staged file, a read buffer) must not outlive the caller's failure unseen.
    What interrupted the wait, if anything, for the caller to raise."""
    interrupted: BaseException | None = None
    while True:
        try:
            wait([future])
            return interrupted
        except BaseException as error:
            interrupted = interrupted or error


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
