"""Threads kept between runs for a run's own background work: its layer records and status records.

Each run writes its records behind, from threads of its own (``layer_records``, the run records
plugin). Starting a thread waits until the new thread is scheduled, longer on a loaded machine,
twice a run, which a chain of quick layers pays in full (figures: docs/performance.md). A thread
that finished its work here waits, idle, for the next: :func:`start` hands it the work, and starts a
new one only when none is idle. Work runs once, to its end, on one thread, as on a thread of its
own (its name is the work's while it runs).

An idle thread holds no lock (it waits on a condition of its own), so a fork of this process leaves
nothing half done behind (the process executor forks its template between runs:
``forking.unsafe_to_fork`` counts them as idle); a forked child keeps none and starts its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

#: Seconds an idle thread waits for work before it ends: a process that stops running flows keeps none.
IDLE_FOR = 60.0


def _ran() -> None:
    """What a work's ``call`` is once it ran (see ``_Kept._run``)."""


class Work:
    """Work handed to a kept thread (:func:`start`): :meth:`wait` returns once it ran and its thread
    is idle again (or ended: work that raised ends its thread, as a thread of its own would end).

    Once it ran, it no longer holds its ``call``: the object whose work it was (a bound method's
    ``self``, which keeps this work to wait for it) is then in no reference cycle with it, and goes
    when its last reference does, not at the garbage collector's next full pass."""

    def __init__(self, call: Callable[[], None], name: str) -> None:
        self.call = call
        self.name = name
        self.thread: threading.Thread | None = None
        self._over = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the work is over, waiting ``timeout`` seconds at most for it; False at once on its
        own thread (the work closing itself), which would otherwise wait for itself."""
        if self.thread is threading.current_thread():
            return False
        return self._over.wait(timeout)


class _Kept:
    """One kept thread, and the work handed to it next (None while idle)."""

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.work: Work | None = None
        self.thread = threading.Thread(target=self._run, name="laminar-idle", daemon=True)

    def _run(self) -> None:
        while True:
            with self.changed:
                if self.work is None and not self.changed.wait_for(lambda: self.work is not None, IDLE_FOR):
                    with _lock:
                        if self in _idle:  # no work came: the thread ends
                            _idle.remove(self)
                            return
                    continue  # taken meanwhile (``start``): its work comes next
                work = self.work
            assert work is not None
            try:
                work.call()
            except BaseException:
                work.call = _ran
                work._over.set()
                raise
            work.call = _ran
            self.thread.name = "laminar-idle"
            with _lock, self.changed:
                self.work = None
                _idle.append(self)
            work._over.set()


_lock = threading.Lock()
_idle: list[_Kept] = []  # threads waiting for work, the most recently idle last


def start(call: Callable[[], None], name: str) -> Work:
    """Run ``call`` on a kept thread named ``name`` while it runs, or on a new one (kept after it).
    ``call`` should not raise: what it raises is reported as a thread's is, and ends its thread."""
    work = Work(call, name)
    with _lock:
        kept = _idle.pop() if _idle else None
    if kept is None:
        kept = _Kept()
        kept.work = work
        work.thread = kept.thread
        kept.thread.name = name
        kept.thread.start()
        return work
    with kept.changed:
        work.thread = kept.thread
        kept.thread.name = name
        kept.work = work
        kept.changed.notify()
    return work


def idle_threads() -> list[threading.Thread]:
    """The kept threads waiting for work: safe to fork around (see the module)."""
    with _lock:
        return [kept.thread for kept in _idle]


def _forget() -> None:
    """In a forked child: the kept threads were not forked; the child starts its own."""
    global _lock
    _lock = threading.Lock()
    _idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
