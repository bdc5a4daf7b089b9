"""A split attempt's logs in the datastore: written in chunks as they come, capped, read back whole.

A :class:`LogWriter` holds at most ``CHUNK`` bytes before it writes them as the next chunk
(``logs/<index>/<attempt>/<n>.log``, see :mod:`laminar._storage.layout`), so a layer that prints
without end costs bounded memory; past its cap it keeps counting and stores one line saying how
much was left out. Chunks are plain UTF-8 text, readable by any tool, and never rewritten, so a
reader that follows a running split (``laminar ui``, like ``tail -f``) reads only the chunks it has
not read. What a split flushes (``print(..., flush=True)``, each ``logging`` record) is stored
while it runs: the process's one flushing thread stores it at once, and at most once every
:data:`FLUSH_INTERVAL` seconds for each attempt, so a split that flushes each line costs a write a
second, not one a line. Nothing is written for an attempt that printed nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

from laminar._storage import layout
from laminar._transport.datastore import Datastore, environment_value
from laminar.errors import ConfigurationError

CHUNK = 256 * 1024  # bytes held in memory before they are written
#: Seconds between two stores of what one split attempt flushed.
FLUSH_INTERVAL = 1.0
CAP = "LAMINAR_LOG_CAP"  # bytes kept per split attempt, e.g. 10M; 0 keeps none
DEFAULT_CAP = 16 * 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)


def cap_from_environment() -> int:
    """The per-attempt cap in bytes from ``LAMINAR_LOG_CAP`` (``16M`` by default)."""
    text = (environment_value(CAP) or "").strip()
    if not text:
        return DEFAULT_CAP
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"{CAP}={text!r} is not a size; write a number of bytes, optionally with K, M or G (e.g. 10M)"
        )
    unit = (match[2] or "b")[0].lower()
    return int(match[1]) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


class LogWriter:
    """Collects what one split attempt printed and logged, and stores it in chunks (thread-safe)."""

    def __init__(
        self, datastore: Datastore, flow: str, execution: str, layer: str, index: int, attempt: int, cap: int
    ) -> None:
        self._where = (flow, execution, layer, index, attempt)
        self.datastore = datastore
        self.cap = cap
        self.kept = 0  # bytes kept (written or held)
        self.dropped = 0  # bytes past the cap
        self._held: list[bytes] = []
        self._holding = 0
        self._chunks = 0
        self._lock = threading.Lock()
        self._stored = threading.Condition(self._lock)  # notified as each chunk's write ends
        self._storing = 0  # chunks being written now

    # A chunk is taken under the lock and written outside it: a write that logs (a retried request
    # warns) comes back here, from this thread or another, and must find the lock free.

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self._lock:
            room = self.cap - self.kept
            if len(data) > room:
                kept = data[: max(room, 0)]
                self.dropped += len(data) - len(kept)
                data = kept
            if not data:
                return
            self.kept += len(data)
            self._held.append(data)
            self._holding += len(data)
            chunk = self._take() if self._holding >= CHUNK else None
        self._store(chunk)

    def flush(self) -> None:
        """Store what is held soon (at once, or within :data:`FLUSH_INTERVAL`): the split flushed its
        output, and whoever follows the log sees it while the split runs."""
        if self._holding:
            _flusher().want(self)

    def store_held(self) -> None:
        """Store what is held now, as the next chunk."""
        with self._lock:
            chunk = self._take()
        self._store(chunk)

    def close(self) -> None:
        """Store what is held, and a last line saying how much the cap left out; return once every
        chunk taken before is stored too."""
        with self._lock:
            if self.dropped:
                self._held.append(
                    f"\n[laminar: {self.dropped} more bytes were not kept: the cap is {self.cap} bytes a split "
                    f"attempt; raise it with {CAP}]\n".encode()
                )
                self.dropped = 0
            chunk = self._take()
        self._store(chunk)
        with self._lock:
            self._stored.wait_for(lambda: self._storing == 0)

    def _take(self) -> tuple[int, bytes] | None:
        """What is held, as the next chunk's number and bytes (under the lock)."""
        if not self._held:
            return None
        data, self._held, self._holding = b"".join(self._held), [], 0
        self._chunks += 1
        self._storing += 1
        return self._chunks - 1, data

    def _store(self, chunk: tuple[int, bytes] | None) -> None:
        if chunk is None:
            return
        try:
            self.datastore.write_bytes(layout.log_chunk(*self._where, chunk[0]), chunk[1])
        finally:
            with self._lock:
                self._storing -= 1
                self._stored.notify_all()


class _Flusher:
    """The thread that stores what splits flushed, in the process that runs them: each writer asked
    for is stored at once, then the thread rests :data:`FLUSH_INTERVAL` before storing again.

    A fork of the process waits until the thread stores nothing (:func:`_before_fork`), so the thread
    holds no lock of its own or of the datastore's clients at the fork: the process executor forks
    its worker template from a scheduler that has run splits on threads before."""

    def __init__(self) -> None:
        self._wanted: dict[int, LogWriter] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified as the thread stops storing
        self._storing = False
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="laminar-logs", daemon=True)
        self.thread.start()

    def want(self, writer: LogWriter) -> None:
        with self._lock:
            self._wanted[id(writer)] = writer
            self._ready.set()

    def hold_idle(self) -> None:
        """Wait until the thread stores nothing, and keep it so until :meth:`release`."""
        self._lock.acquire()
        self._idle.wait_for(lambda: not self._storing)

    def release(self) -> None:
        self._lock.release()

    def _run(self) -> None:
        while True:
            self._ready.wait()
            with self._lock:
                writers, self._wanted = list(self._wanted.values()), {}
                self._ready.clear()
                self._storing = True
            try:
                for writer in writers:
                    with contextlib.suppress(Exception):  # the split's own close stores it, or says why not
                        writer.store_held()
            finally:
                with self._lock:
                    self._storing = False
                    self._idle.notify_all()
            time.sleep(FLUSH_INTERVAL)  # a write an interval for each attempt, however often it flushes


_flushers: dict[int, _Flusher] = {}  # by process id: a forked worker starts its own thread
_flushers_lock = threading.Lock()


def _flusher() -> _Flusher:
    with _flushers_lock:
        found = _flushers.get(os.getpid())
        if found is None:
            found = _flushers[os.getpid()] = _Flusher()
        return found


def flushing_threads() -> list[threading.Thread]:
    """This process's flushing thread, if it started: safe to fork around, since a fork waits until
    it stores nothing, and the child starts its own thread when it first needs one."""
    with _flushers_lock:
        found = _flushers.get(os.getpid())
    return [] if found is None else [found.thread]


def _before_fork() -> None:
    _flushers_lock.acquire()
    found = _flushers.get(os.getpid())
    if found is not None:
        found.hold_idle()


def _after_fork_in_parent() -> None:
    found = _flushers.get(os.getpid())
    if found is not None:
        found.release()
    _flushers_lock.release()


def _after_fork_in_child() -> None:
    """The flushing thread was not forked: the child's first flush starts one of its own."""
    global _flushers_lock
    _flushers.clear()
    _flushers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def read_logs(datastore: Datastore, flow: str, execution: str, layer: str, index: int, attempt: int) -> str:
    """What the attempt printed and logged ("" if nothing), its chunks read in order."""
    prefix = layout.logs(flow, execution, layer, index, attempt)
    chunks = sorted(
        (number, prefix + name)
        for name in datastore.list_prefix(prefix)
        if (number := layout.parse_log_chunk(name)) is not None
    )
    return b"".join(datastore.read_many([key for _, key in chunks])).decode("utf-8", "replace")


def logged_attempts(datastore: Datastore, flow: str, execution: str, layer: str, index: int) -> list[int]:
    """The attempts of split ``index`` that stored logs, in order."""
    prefix = layout.logs(flow, execution, layer, index)
    return sorted(int(name) for name in datastore.list_prefix(prefix) if name.isdigit())


def logged_splits(datastore: Datastore, flow: str, execution: str, layer: str) -> list[int]:
    """The splits of ``layer`` that stored logs."""
    return sorted(
        int(name) for name in datastore.list_prefix(layout.logs(flow, execution, layer)) if name.isdigit()
    )
