"""Layer records written behind: a finished layer's record is written by a thread of the run's own,
off the event loop, while the layers reading it already run.

A chain of quick layers otherwise waits, between each layer and the next, for a file (and its
directory) to be created, or an object put. Here the scheduler hands the record over and goes on:

- **in this process** the record reads at once: it is held in the metadata cache, never evicted,
  until it is written (``ExecutionStore.hold_record``); a split of an in-process executor reads it
  there. An executor whose splits run elsewhere is handed a layer's splits only once the records of
  the layers it reads are written (the scheduler waits for them, :meth:`LayerRecords.written`);
- **together**: a record waits up to ``INTERVAL`` seconds for those of the layers finishing after it
  (as split records are group-committed, ``commit.INTERVAL``), so a chain of quick layers wakes the
  thread once in that, not once a layer; at once when something waits for one (:meth:`written`,
  :meth:`landed`, the run's end). A crash loses at most that much of the finished layers' records:
  those layers run again on resume;
- **in one file**: the records queued when the thread writes are written as one file, a record pack
  (``ExecutionStore.write_records``): a chain of quick layers writes a file, not a file and a
  directory a layer. A pack is written whole or not at all;
- **in order**: records are written one after another in the order they were handed over, and none
  after a write that failed. A layer is handed over after every layer it reads, so a record on the store
  implies its upstream layers' records are there too: a crash leaves a prefix of the run's records,
  a resume keeps exactly those, and nothing whose record was written runs again;
- **before the end**: the scheduler waits for every record before the run reports its end (the
  execution-finished event, whose status says "succeeded" only once they are all written), and a
  layer's "finished" status record waits for its record (:meth:`LayerRecords.landed`);
- **with its status**: a record not yet taken to be written may be given its layer's final status
  (:meth:`LayerRecords.attach`, ``Record.ran``), written in the same file; the thread takes a record
  with what is attached by then, under the lock ``attach`` takes, so a status is either in the
  record or refused (and written as a file of its own by the status plugin), never both nor neither.

A write that fails fails the run (``fail``, called on the event loop) as a synchronous write would;
the records handed over after it are not written, and their layers run again on resume.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable

from laminar._runtime import background
from laminar._storage.records import Ran, Record
from laminar._storage.store import ExecutionStore
from laminar.errors import add_note

logger = logging.getLogger(__name__)

#: Seconds a record handed over may wait to be written with those handed over after it (see above).
INTERVAL = 0.05
#: At most this many records queued are written as one (a record pack, ``ExecutionStore.write_records``).
PACK = 256


class LayerRecords:
    """The layer records of one run, written behind by a thread of their own, in the order given."""

    def __init__(
        self, store: ExecutionStore, loop: asyncio.AbstractEventLoop, fail: Callable[[BaseException], None]
    ) -> None:
        self._store = store
        self._loop = loop
        self._fail = fail
        self._queue: collections.deque[_Handed] = collections.deque()
        self._untaken: dict[str, _Handed] = {}  # layer -> its record queued, not yet taken to write
        self._writes: dict[str, _Handed] = {}  # each layer's latest record handed over
        # Held with ``with self._lock`` (a call of the lock's own, not of the condition's Python
        # method, several times a layer); waited on and notified through ``_changed``.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._work: background.Work | None = None  # the thread writing them (a kept one)
        self._failure: BaseException | None = None
        self._closed = False
        self._last: _Handed | None = None
        self._due = 0.0  # when the oldest record queued is to be written (time.monotonic())
        self._now = False  # something waits for a record: write what is queued without waiting
        self._then: dict[str, Callable[[], object]] = {}  # layer -> what follows its record's write

    def put(self, record: Record) -> None:
        """Hand ``record`` over (on the event loop): readable in this process at once, written behind
        (:meth:`written`, :meth:`landed` wait for it)."""
        handed = _Handed(record)
        with self._lock:
            self._writes[record.layer] = self._last = handed
            if self._failure is not None:  # none is written after a failure (see the module)
                handed.settle(self._failure)
                return
            self._store.hold_record(record)
            if not self._queue:  # the first of a batch: the thread waits until it is due
                self._due = time.monotonic() + INTERVAL
                if self._work is None:
                    self._work = background.start(self._run, "laminar-records")
                self._changed.notify_all()
            self._queue.append(handed)
            self._untaken[record.layer] = handed

    def attach(self, layer: str, ran: Ran) -> bool:
        """Have the record of ``layer`` handed over carry the layer's final status ``ran``
        (``Record.ran``) if the thread has not taken it to write yet: True, and it is written with
        it (and held so in this process at once); False if it is taken, written or failed, or was
        not handed over here: the caller then writes the status as a file of its own. Exactly one
        of the two, whatever the timing: the thread takes a record, with what is attached to it by
        then, holding the lock this takes."""
        with self._lock:
            handed = self._untaken.get(layer)
            if handed is None or self._failure is not None:
                return False
            handed.record = _carrying(handed.record, ran)
            self._store.hold_record(handed.record)
            return True

    def _hurry(self) -> None:
        """Something waits for a record: write those queued now, not when due."""
        with self._lock:
            if self._queue and not self._now:
                self._now = True
                self._changed.notify_all()

    async def written(self, layers: Iterable[str]) -> bool:
        """Wait until the records of ``layers`` handed over are on the store; False if one could not
        be written (the run has failed)."""
        for name in layers:
            handed = self._writes.get(name)
            if handed is not None:
                if not handed.settled:
                    self._hurry()
                    await _settled(self._future(handed))
                if handed.error is not None:
                    return False
        return True

    def _future(self, handed: _Handed) -> concurrent.futures.Future[None]:
        """A future of the write of ``handed``: made only for a record something waits for on the
        event loop (most never are), settled with it."""
        with self._lock:
            if handed.written is None:
                handed.written = concurrent.futures.Future()
                if handed.settled:
                    handed.settle(handed.error)
            return handed.written

    def when_written(self, layer: str, call: Callable[[], object]) -> bool:
        """Call ``call`` on the thread writing the record of ``layer`` handed over, once it is written
        and before the next is (never if it fails); False, and no call, if none of it is on its way."""
        with self._lock:
            handed = self._writes.get(layer)
            if handed is None or handed.settled or self._failure is not None:
                return False
            self._then[layer] = call
            return True

    @property
    def failure(self) -> BaseException | None:
        """The first write that failed, or None."""
        return self._failure

    def landed(self, layer: str) -> bool:
        """Whether the record of ``layer`` this run handed over is on the store, waiting for its write
        (on any thread but the event loop); True for a layer whose record was not handed over here."""
        handed = self._writes.get(layer)
        if handed is None:
            return True
        if not handed.settled:
            self._hurry()
            with self._lock:
                while not handed.settled:
                    self._changed.wait()
        return handed.error is None

    async def drained(self) -> BaseException | None:
        """Wait until every record handed over is written or failed; the first failure, or None.
        Written in order, and none after a failure: the last one handed over settles last."""
        last = self._last
        if last is not None and not last.settled:
            self._hurry()
            await _settled(self._future(last))
        with self._lock:
            return self._failure

    def wait(self) -> BaseException | None:
        """Block until every record handed over is written or failed (a run torn down: what finished
        lands before its lease is released); the first failure, or None."""
        with self._lock:
            self._now = True
            self._changed.notify_all()
            while self._queue or any(not handed.settled for handed in self._writes.values()):
                self._changed.wait()
            return self._failure

    def abandon(self) -> None:
        """The store failed: write nothing more (the records still queued fail); the thread ends."""
        with self._lock:
            self._stop(RuntimeError("the run's datastore failed: layer record not written"))

    def close(self) -> None:
        """End the thread once it has written what is queued; wait for it to end if nothing is (a
        process forking next, the process executor's template, then finds no thread of ours)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            idle = not self._queue
        if idle and self._work is not None:
            self._work.wait()

    def _stop(self, failure: BaseException) -> None:
        """Fail every queued record with ``failure`` (call holding the lock)."""
        self._failure = self._failure or failure
        self._closed = True
        self._then.clear()
        self._untaken.clear()
        while self._queue:
            handed = self._queue.popleft()
            self._store.forget_record(handed.record.layer)
            handed.settle(failure)
        self._changed.notify_all()

    def _run(self) -> None:
        """Write the records queued once the first is due (or something waits for one), one after
        another while any are; stop at the first that fails."""
        while True:
            with self._lock:
                while True:
                    if not self._queue:
                        self._now = False
                        if self._closed:
                            return
                        self._changed.wait()
                        continue
                    wait = self._due - time.monotonic()
                    if self._now or self._closed or wait <= 0:
                        break
                    self._changed.wait(wait)
                taken = list(itertools.islice(self._queue, PACK))
                for handed in taken:
                    if self._untaken.get(handed.record.layer) is handed:  # taken: nothing attaches now
                        del self._untaken[handed.record.layer]
            records = [handed.record for handed in taken]
            try:
                self._store.write_records(records)
            except BaseException as error:
                layers = ", ".join(record.layer for record in records)
                add_note(error, f"while writing the record{'s' * (len(records) > 1)} of layer {layers}")
                with self._lock:
                    self._failure = self._failure or error  # before anyone waiting sees the write end
                    self._settle(taken, error)
                    self._stop(error)
                with contextlib.suppress(RuntimeError):  # the loop closed: the run ended (drained() said so)
                    self._loop.call_soon_threadsafe(self._fail, error)
                return
            with self._lock:
                self._settle(taken, None)
                then = [(record.layer, self._then.pop(record.layer, None)) for record in records]
            for layer, call in then:
                if call is not None:
                    try:
                        call()
                    except Exception:  # the caller's own failure: the records after it are still written
                        logger.exception("what follows the record of layer %s failed", layer)

    def _settle(self, taken: list[_Handed], error: BaseException | None) -> None:
        """The records being written (first in the queue, unless abandoned meanwhile) are written or
        failed (call holding the lock)."""
        for handed in taken:
            if self._queue and self._queue[0] is handed:
                self._queue.popleft()
            if not handed.settled:
                handed.settle(error)
        self._changed.notify_all()


def _carrying(record: Record, ran: Ran) -> Record:
    """``record`` carrying ``ran``: as ``dataclasses.replace(record, ran=ran)`` gives it, without
    building and checking again, member by member, a record the engine built and checked moments
    ago (once a layer of a chain, on the event loop). A copy, not ``record`` changed: whoever read
    the held record before keeps what it read. Its members only: nothing cached of ``record``."""
    members = record.__dict__
    carrying = object.__new__(Record)
    carrying.__dict__.update(zip(_MEMBERS, _MEMBERS_OF(members), strict=True))  # (no Python loop)
    carrying.__dict__["ran"] = ran
    return carrying


_MEMBERS = tuple(member.name for member in dataclasses.fields(Record))
_MEMBERS_OF = operator.itemgetter(*_MEMBERS)


class _Handed:
    """A record handed over, and its write: ``settled`` once it is on the store (``error`` None) or
    failed (set holding the lock); ``written``, a future of it, made only if something on the event
    loop waits for it (:meth:`LayerRecords._future`)."""

    __slots__ = ("error", "record", "settled", "written")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.settled = False
        self.error: BaseException | None = None
        self.written: concurrent.futures.Future[None] | None = None

    def settle(self, error: BaseException | None) -> None:
        """Its write ended (``error``: failed); its future, if made, is done (call holding the lock)."""
        self.settled, self.error = True, error
        if self.written is not None and not self.written.done():
            if error is None:
                self.written.set_result(None)
            else:
                self.written.set_exception(error)


async def _settled(write: concurrent.futures.Future[None]) -> None:
    """Wait for ``write`` on the event loop, whatever its outcome (one wake-up, only if not done)."""
    if not write.done():
        waiting = asyncio.wrap_future(write)
        await asyncio.wait([waiting])
        if not waiting.cancelled():
            waiting.exception()  # its failure is read from ``write``, by the caller
