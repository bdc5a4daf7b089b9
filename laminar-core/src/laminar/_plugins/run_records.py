"""The run records of every execution, kept by an ordinary plugin on the lifecycle hooks.

``status.json`` says "running" from the moment a run (or resume) starts, and "succeeded", "failed"
or "cancelled" (stopped by a signal) with the end time and the error when it ends; it keeps the
first run's start (``created``) and the times and outcome of every earlier run (``runs``). Each layer's
``status.json`` says "running" once it has run ``RUNNING_AFTER`` seconds and, when it ends,
"finished", "failed" (a split of its own failed for good), "cancelled" (the run stopped first) or
"skipped" with the reason, with every split attempt's times and, for a failed one, its error (for
one whose error ``Catch`` absorbed, that error as ``caught``). A resume carries over the attempts
earlier runs recorded; ``next_attempt`` stays above every attempt number used, and a "running"
record reserves the numbers its run may use, so a resume after a crash numbers after them too. That
record is made only once it is due (``_Writer.defer``), of what the layer's run held when it started.
A layer that ends sooner gets only its final record, and when it finished with no status record of
its own written or found, not even that: its layer record, still waiting to be written behind,
carries it (``Record.ran``; handed over by ``Run.carry_status``, ``_carried``), one file a layer.
If the thread writing layer records took that record first, the status is written as below.
A layer reused whole gets none in a fresh execution: its layer record says where from and why, and
its status is read from that (``Record.reused``).
Split events only touch memory. A layer's final record is written by a thread of its own
(``_Writer``), so the scheduler does not wait on a write per layer: a "finished" one as soon as
the layer's record, written behind, lands (``Run.when_landed``; to a local datastore by the thread
that wrote the record, right after it), else up to ``FINISHED_AFTER`` seconds later, with those of
the layers that finished meanwhile, in one wake-up of that thread; a failed, cancelled or skipped one at once (on the caller's thread to a local
datastore, where a small write costs less than a hop to a thread). Either lands after the layer's
record (written before the layer-finished event), so a crash never leaves a layer "finished" without
its record: at worst a finished layer still reads "running", or has no record of its run, as a layer
of a scheduler that died does. The execution's record is
written last, after every layer record of it: whoever reads "succeeded" or "failed" reads the
layers' final records too. The results API reads them (``execution.status``,
``execution.status.layers``). What the plugin keeps of a run (its times, its running layers, its
writer) lives in the run object's stash under ``RECORDS``, and goes with the run."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from laminar._plugins.hookspecs import hookimpl
from laminar._runtime import background, tracebacks
from laminar._runtime.executor import SplitNotStarted
from laminar._runtime.run import Run, StashKey
from laminar._storage.records import AttemptRecord, ExecutionStatus, LayerStatusRecord, Ran, RunRecord
from laminar.errors import DatastoreError, Interrupted

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._storage.store import ExecutionStore

#: Attempts that did not fail kept per layer record (every failed one, and every one whose error
#: ``Catch`` absorbed, is kept, up to FAILED_LIMIT).
ATTEMPT_LIMIT = 10_000
FAILED_LIMIT = 1_000
#: Seconds a layer runs before its "running" record is written (see ``_Writer``).
RUNNING_AFTER = 0.25
#: Seconds a "finished" layer record may wait, so the records of a chain's quick layers are written
#: together by the writer's thread, off the event loop (see ``_Writer``).
FINISHED_AFTER = 0.05
#: Attempts a layer's final status may list and still be carried by its layer record (``Record.ran``):
#: every reader of the layer's values reads that record, and only a status reader its attempts.
CARRIED_LIMIT = 256


@dataclass
class _LayerRun:
    """What this process saw of one layer's run so far."""

    started: float
    splits: int
    attempts: list[AttemptRecord] = field(default_factory=list)
    failures: int = 0
    omitted: int = 0
    failed: dict[str, str] | None = None  # the error of a split of its own that failed for good
    cancelled: bool = False
    next_attempt: int = 0  # above every attempt number this layer's runs used so far
    found: bool = False  # an earlier run's status of it was found (a resume): it is replaced, not left


class _Writer:
    """Writes one run's layer status records (each layer's in order; the records of several layers
    due at once together), on a thread of its own for an object store; flushed and closed when the
    execution ends.

    A layer's record that is still waiting when a newer one of the same layer comes is replaced by
    it. A "running" record waits ``RUNNING_AFTER`` seconds before it is due, so a layer that ends
    sooner (most layers of a chain) has one write, its final record, not two; a layer still running
    then reads as running. A record due no sooner than the thread wakes by itself does not wake it,
    so a chain's quick layers wake it once in ``RUNNING_AFTER``, not once each; their "finished"
    records, due ``FINISHED_AFTER`` seconds after each is put, wake it once in that. Other records
    are written at once: on the caller's thread to a local datastore (cheaper than a hop to a thread),
    else by the thread. A write that fails is raised by the run's next hook, as a synchronous
    write's would be.
    """

    def __init__(self, store: ExecutionStore, landed: Callable[[str], bool] = lambda layer: True) -> None:
        self._store = store
        self._landed = landed  # whether a layer's record is written (waits for it: see Run.landed)
        self._inline = store.datastore.small_writes_inline
        # layer -> what to write (a record, or what makes it: see defer) and when it is due
        # (time.monotonic()), in order
        self._pending: dict[str, tuple[_Due, float]] = {}
        self._writing: set[str] = set()  # layers whose records are being written by the thread
        self._started: set[str] = set()  # layers a record of which was (or is being) written
        self._here: set[str] = set()  # those being written by the thread of a layer record that landed
        self._wakes: float | None = None  # when the thread wakes by itself (None: only when told)
        self._failure: BaseException | None = None
        self._closed = False
        # Held with ``with self._lock`` (the lock's own call, not the condition's Python method,
        # twice a layer); waited on and notified through ``_changed``.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._work: background.Work | None = None  # the thread writing them (a kept one)

    def put(self, record: LayerStatusRecord, *, after: float = 0.0) -> None:
        """Write ``record``, or ``after`` seconds from now unless a newer record of its layer comes."""
        self._put(record.layer, record, after)

    def defer(self, layer: str, make: Callable[[], LayerStatusRecord], after: float) -> None:
        """As :meth:`put` of the record ``make()`` returns, made only when it is written: a quick
        layer's "running" record, most often taken back before it is due, is never built."""
        self._put(layer, make, after)

    def _put(self, key: str, record: _Due, after: float) -> None:
        if self._failure is not None:
            self._raise_failure()
        inline = self._inline and after <= 0
        with self._lock:
            self._pending.pop(key, None)  # the newer record replaces it, and goes last
            if inline:
                while key in self._writing or key in self._here:  # an older record of it lands first
                    self._changed.wait()
                self._started.add(key)
            else:
                due = time.monotonic() + after
                self._pending[key] = (record, due)
                if self._work is None:
                    self._work = background.start(self._run, "laminar-status")
                if self._wakes is None or due < self._wakes:  # else it wakes in time by itself
                    self._changed.notify_all()
        if inline:
            self._store.write_layer_status(_made(record))

    def landed(self, layer: str) -> None:
        """The layer's record landed (called on the thread that wrote it): write the layer's record
        waiting for it now, on this thread where small writes cost less than waking this writer's
        (``Datastore.small_writes_inline``), else by that thread. Never raises: a write that fails
        is raised by the run's next hook."""
        with self._lock:
            waiting = self._pending.get(layer)
            if waiting is None:
                return
            if not self._inline:
                self._pending[layer] = (waiting[0], 0.0)
                self._changed.notify_all()
                return
            del self._pending[layer]
            self._here.add(layer)  # from now on: close() waits for it
            self._started.add(layer)
            while layer in self._writing:  # an older record of this layer lands first, not after
                self._changed.wait()
        try:
            self._store.write_layer_status(_made(waiting[0]))
        except BaseException as error:
            self._failure = self._failure or error
        finally:
            with self._lock:
                self._here.discard(layer)
                self._changed.notify_all()

    def take_back(self, layer: str) -> bool:
        """Whether no record of ``layer`` was written or is being written by this writer: then the
        one still waiting, if any (its "running" record), is dropped, and the layer has no status
        record of this run on the store, nor will have unless one is put again. False, and nothing
        dropped, otherwise."""
        with self._lock:
            if layer in self._started:
                return False
            self._pending.pop(layer, None)
            return True

    def discard(self, layer: str) -> None:
        """Forget the layer's record that is still waiting (its store is failing: do not wait on it)."""
        with self._lock:
            self._pending.pop(layer, None)

    def close(self) -> None:
        """Write every record put so far, due or not, and wait; end the thread; raise a failed write."""
        with self._lock:
            self._pending = {key: (record, 0.0) for key, (record, _) in self._pending.items()}
            self._closed = True
            self._changed.notify_all()
            while self._pending or self._writing or self._here:
                self._changed.wait()
        if self._work is not None:
            self._work.wait()  # nothing left to write: its thread is idle now (a process forking next may)
        self._raise_failure()

    def abandon(self) -> None:
        """Forget the records still waiting and end the thread, without waiting for the record being
        written: the store failed, and waiting would cost another deadline (that write's failure is
        this run's, and nothing of the run raises it any more)."""
        with self._lock:
            self._pending.clear()
            self._closed = True
            self._changed.notify_all()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _next(self) -> list[str] | None:
        """The records due, in the order they came; waits for one; ``None`` once closed and all
        written (call holding the lock)."""
        while True:
            now = time.monotonic()
            soonest = None
            due_now = []
            for key, (_, due) in self._pending.items():
                if due <= now:
                    due_now.append(key)
                else:
                    soonest = due if soonest is None else min(soonest, due)
            if due_now:
                self._wakes = None
                return due_now
            if self._closed and not self._pending:
                return None
            self._wakes = soonest
            self._changed.wait(None if soonest is None else soonest - now)

    def _run(self) -> None:
        """Write the records due, those of several layers at once (a chain of reused layers
        finishes many together), each layer's in the order they came."""
        while True:
            with self._lock:
                keys = self._next()
                if keys is None:
                    return
                due = [self._pending.pop(key)[0] for key in keys]
                self._writing = set(keys)
                self._started.update(keys)
            try:
                records = [_made(record) for record in due]
                # A layer reads "finished" only once its record is written (it is written behind).
                records = [r for r in records if r.status != "finished" or self._landed(r.layer)]
                self._store.datastore.map_parallel(self._store.write_layer_status, records)
            except BaseException as error:
                self._failure = self._failure or error
            finally:
                with self._lock:
                    self._writing = set()
                    self._changed.notify_all()


if TYPE_CHECKING:
    #: A record the writer is to write, or what makes it when it does (``_Writer.defer``).
    _Due = LayerStatusRecord | Callable[[], LayerStatusRecord]


def _made(due: _Due) -> LayerStatusRecord:
    return due if isinstance(due, LayerStatusRecord) else due()


@dataclass(eq=False)
class _Records:
    """What this plugin keeps of one run (in the run object's stash)."""

    started: float  # when this run started
    created: float  # when the execution's first run started
    history: tuple[RunRecord, ...]  # the execution's earlier runs
    carried: bool  # an earlier run recorded a status: its layers' records are carried over
    writer: _Writer
    layers: dict[str, _LayerRun] = field(default_factory=dict)  # the layers running now


RECORDS = StashKey[_Records]()


@hookimpl
def laminar_execution_started(execution: Execution, run: Run) -> None:
    # A run that is not a resume started the execution (it did not exist): no record to carry over.
    earlier = run.store.status() if run.resumed else None
    started = run.started
    created = earlier.created if earlier is not None and earlier.created else started
    # An earlier run still "running" was ended by its scheduler's death: it stays so in the history.
    history = earlier.history if earlier is not None else ()
    run.store.write_status(
        ExecutionStatus(execution.flow.name, execution.id, "running", started, created=created, runs=history)
    )
    writer = _Writer(run.store, run.landed)
    run.stash[RECORDS] = _Records(started, created, history, earlier is not None, writer)


@hookimpl
def laminar_execution_finished(execution: Execution, error: BaseException | None, run: Run) -> None:
    records = run.stash.get(RECORDS, None)
    if records is None:
        return
    del run.stash[RECORDS]
    if isinstance(error, DatastoreError):
        # The store itself failed: writing to it, or waiting for a layer record being written to it,
        # would wait out another deadline. The record keeps saying "running", and reads as failed
        # once this scheduler's lease is no longer live.
        records.writer.abandon()
        return
    try:
        records.writer.close()
    except DatastoreError:
        if error is None:  # the layer records could not be written: the run cannot end "succeeded"
            raise
        return
    if error is None:
        status, described = "succeeded", None
    else:
        status = "cancelled" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "failed"
        described = tracebacks.describe(error)
    record = ExecutionStatus(
        execution.flow.name,
        execution.id,
        status,
        records.started,
        time.time(),
        described,
        records.created,
        records.history,
    )
    run.store.write_status(record)


@hookimpl
def laminar_layer_started(layer: Layer, splits: int, run: Run) -> None:
    records = run.stash.get(RECORDS, None)
    if records is None:
        return
    name = layer.name
    if _read_from_its_record(run, records, name):
        return
    layer_run = records.layers[name] = _LayerRun(time.time(), splits)
    earlier = run.store.layer_status(name) if records.carried else None
    if earlier is not None:  # keep what earlier runs recorded of the splits that will not run again
        layer_run.found = True
        layer_run.attempts.extend(earlier.attempts)
        layer_run.omitted = earlier.omitted
        layer_run.failures = sum(1 for attempt in earlier.attempts if attempt.error or attempt.caught)
        layer_run.next_attempt = earlier.next_attempt
    # This run numbers each split's attempts from at most next_attempt (see the scheduler), and makes
    # at most ``attempts`` of them: reserved, in case its scheduler dies before the final record.
    # On a resume it is written at once: until it lands, the earlier record does not reserve them.
    # Made when it is written (what it holds taken now): a quick layer's is taken back unmade.
    running = functools.partial(
        _running,
        run,
        name,
        layer_run.started,
        splits,
        tuple(layer_run.attempts),
        layer_run.omitted,
        layer_run.next_attempt,
        run.explanations.get(name, (None, None)),
    )
    records.writer.defer(name, running, RUNNING_AFTER if earlier is None else 0.0)


def _running(
    run: Run,
    layer: str,
    started: float,
    splits: int,
    attempts: tuple[AttemptRecord, ...],
    omitted: int,
    next_attempt: int,
    explained: tuple[str | None, str | None],
) -> LayerStatusRecord:
    """A layer's "running" record, of what its run had when it started."""
    tries = run.execution.flow.registry[layer].configuration.retry.attempts
    execution = run.execution
    return LayerStatusRecord(
        execution.flow.name,
        execution.id,
        layer,
        "running",
        started,
        splits=splits,
        attempts=attempts,
        omitted=omitted,
        next_attempt=next_attempt + tries,
        reused=explained[0],
        why=explained[1],
    )


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str, run: Run) -> None:
    records = run.stash.get(RECORDS, None)
    if records is None:
        return
    now = time.time()
    execution = run.execution
    records.writer.put(
        LayerStatusRecord(execution.flow.name, execution.id, layer.name, "skipped", now, now, reason=reason)
    )


def _ended(
    run: Run,
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException | None,
    started: float,
    ended: float,
    caught: Mapping[str, str] | None = None,
) -> _LayerRun | None:
    records = run.stash.get(RECORDS, None)
    layer_run = records.layers.get(layer.name) if records is not None else None
    if layer_run is None or isinstance(error, SplitNotStarted):  # handed over, never run: not an attempt
        return None
    split = index or 0
    layer_run.next_attempt = max(layer_run.next_attempt, attempt + 1)
    if (error is not None or caught) and layer_run.failures < FAILED_LIMIT:  # kept as failed ones are
        layer_run.failures += 1
        described = tracebacks.describe(error) if error is not None else None
        layer_run.attempts.append(AttemptRecord(split, attempt, started, ended, described, caught or None))
    elif error is None and not caught and len(layer_run.attempts) - layer_run.failures < ATTEMPT_LIMIT:
        layer_run.attempts.append(AttemptRecord(split, attempt, started, ended))
    else:
        layer_run.omitted += 1
    return layer_run


@hookimpl
def laminar_split_retried(
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException,
    started: float,
    ended: float,
    run: Run,
) -> None:
    _ended(run, layer, index, attempt - 1, error, started, ended)


@hookimpl
def laminar_split_finished(
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException | None,
    started: float,
    ended: float,
    caught: Mapping[str, str] | None,
    run: Run,
) -> None:
    layer_run = _ended(run, layer, index, attempt, error, started, ended, caught)
    if layer_run is None or error is None:
        return
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
        layer_run.cancelled = True
    elif layer_run.failed is None:
        layer_run.failed = tracebacks.describe(error)


@hookimpl
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None, run: Run) -> None:
    records = run.stash.get(RECORDS, None)
    if records is None:
        return
    name = layer.name
    if error is None and _read_from_its_record(run, records, name):
        return
    layer_run = records.layers.pop(name, None) or _LayerRun(time.time(), splits)
    if isinstance(error, DatastoreError):
        records.writer.discard(name)  # as for the execution's record: the store is failing
        return
    if error is None:
        status, reason = "finished", None
    elif layer_run.failed is not None:
        status, reason = "failed", None
    elif layer_run.cancelled or isinstance(error, (Interrupted, KeyboardInterrupt)):
        status, reason = "cancelled", f"the run was stopped ({type(error).__name__}: {error})"
    elif layer_run.splits == 0 and not layer_run.attempts:  # its ForEach grid could not be computed
        status, reason = "failed", None
        layer_run.failed = tracebacks.describe(error)
    else:
        status, reason = (
            "cancelled",
            f"the run stopped before the layer was done: {type(error).__name__}: {error}",
        )
    ended = time.time()
    if status == "finished" and _carried(run, records, name, layer_run, ended):
        return
    final = _record(run, name, layer_run, status, reason=reason, ended=ended)
    records.writer.put(final, after=FINISHED_AFTER if status == "finished" else 0.0)
    if status == "finished":  # written once its layer record, written behind, lands (if sooner)
        run.when_landed(name, functools.partial(records.writer.landed, name))


def _carried(run: Run, records: _Records, layer: str, layer_run: _LayerRun, ended: float) -> bool:
    """Whether the record of ``layer``, written behind and not yet taken to be written, carries its
    final status, "finished" at ``ended`` (``Record.ran``): one file a layer, not two. Only for a
    layer none of whose status records is on the store (none found by a resume, none written by this
    run: it ended within ``RUNNING_AFTER``), so no status record of its own is left to read before
    its record's; else, or once its record is being written, its status record is written as before.
    The ``Ran`` is made from the layer's run as ``Ran.of`` makes it of the status record it stands for
    (no such record made on the way): what a status record cannot carry (a failed split's error, a
    layer reused) is never carried."""
    attempts = layer_run.attempts
    if layer_run.found or layer_run.failed is not None or len(attempts) > CARRIED_LIMIT:
        return False
    reused, why = run.explanations.get(layer, (None, None))
    if reused is not None:
        return False
    # next_attempt: above every attempt listed, as LayerStatusRecord makes it. Each attempt a layer's
    # run lists came through _ended, which raised next_attempt above it first (a layer with attempts
    # an earlier run recorded, ``found``, is not carried).
    ran = Ran(layer_run.started, ended, tuple(attempts), layer_run.omitted, layer_run.next_attempt, why)
    return records.writer.take_back(layer) and run.carry_status(layer, ran)


def _read_from_its_record(run: Run, records: _Records, layer: str) -> bool:
    """Whether ``layer`` was reused whole in an execution no earlier run recorded a status of: its
    record, written before its events, says where from and why, and its status is read from it
    (``Record.reused``), so it gets no status record (none of an earlier run is there to replace)."""
    explanations = run.explanations  # (none without reuse: most runs)
    return bool(explanations) and not records.carried and explanations.get(layer, (None, ""))[0] is not None


def _record(
    run: Run,
    layer: str,
    layer_run: _LayerRun,
    status: str,
    *,
    reason: str | None = None,
    ended: float | None = None,
    next_attempt: int | None = None,
) -> LayerStatusRecord:
    reused, why = run.explanations.get(layer, (None, None))
    return LayerStatusRecord(
        run.execution.flow.name,
        run.execution.id,
        layer,
        status,
        layer_run.started,
        ended,
        splits=layer_run.splits,
        reason=reason,
        error=layer_run.failed,
        attempts=tuple(layer_run.attempts),
        omitted=layer_run.omitted,
        next_attempt=layer_run.next_attempt if next_attempt is None else next_attempt,
        reused=reused,
        why=why,
    )
