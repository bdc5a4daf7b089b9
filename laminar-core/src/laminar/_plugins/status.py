"""The run records of every execution, kept by an ordinary plugin on the lifecycle hooks.

``status.json`` says "running" from the moment a run (or resume) starts, and "succeeded", "failed"
or "cancelled" (stopped by a signal) with the end time and the error when it ends; it keeps the
first run's start (``created``) and the times and outcome of every earlier run (``runs``). Each layer's
``status.json`` says "running" once it has run ``RUNNING_AFTER`` seconds and, when it ends,
"finished", "failed" (a split of its own failed for good), "cancelled" (the run stopped first) or
"skipped" with the reason, with every split attempt's times and, for a failed one, its error (for
one whose error ``Catch`` absorbed, that error as ``caught``). A resume carries over the attempts
earlier runs recorded; ``next_attempt`` stays above every attempt number used, and a "running"
record reserves the numbers its run may use, so a resume after a crash numbers after them too. A
layer that ends sooner gets only its final record: one small write per layer of a chain, not two.
Split events only touch memory. A layer's final record is written at once to a local datastore (a
small local write costs less than a hop to a thread), by a thread of its own (``_Writer``) to an
object store, so the scheduler does not wait on a request per layer. The execution's record is
written last, after every layer record of it: whoever reads "succeeded" or "failed" reads the
layers' final records too. The results API reads them (``execution.status``,
``execution.status.layers``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from laminar._plugins.hookspecs import hookimpl
from laminar._runtime import tracebacks
from laminar._runtime.executor import SplitNotStarted
from laminar._storage.records import AttemptRecord, ExecutionStatus, LayerStatusRecord, RunRecord
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


_started: dict[tuple[str, str], float] = {}  # (flow, execution) -> when this process's run started
_created: dict[tuple[str, str], float] = {}  # (flow, execution) -> when its first run started
_history: dict[tuple[str, str], tuple[RunRecord, ...]] = {}  # (flow, execution) -> its earlier runs
_resumed: set[tuple[str, str]] = set()  # executions whose run here is a resume
_layers: dict[tuple[str, str, str], _LayerRun] = {}  # (flow, execution, layer) -> its run
_stores: dict[tuple[str, str], ExecutionStore] = {}  # (flow, execution) -> its store, while it runs


class _Writer:
    """Writes layer status records in order, on a thread of its own for an object store; flushed when
    an execution ends.

    A layer's record that is still waiting when a newer one of the same layer comes is replaced by
    it. A "running" record waits ``RUNNING_AFTER`` seconds before it is due, so a layer that ends
    sooner (most layers of a chain) has one write, its final record, not two; a layer still running
    then reads as running. A record due no sooner than the thread wakes by itself does not wake it,
    so a chain's quick layers wake it once in ``RUNNING_AFTER``, not once each. Other records are
    written at once: on the caller's thread to a local datastore (cheaper than a hop to a thread),
    else by the thread. A write that fails is raised by the next hook of the same process, as a
    synchronous write's would be.
    """

    def __init__(self) -> None:
        # (flow, execution, layer) -> what to write and when it is due (time.monotonic()), in order
        self._pending: dict[tuple[str, str, str], tuple[ExecutionStore, LayerStatusRecord, float]] = {}
        self._writing: tuple[str, str, str] | None = None
        self._wakes: float | None = None  # when the thread wakes by itself (None: only when told)
        self._failure: tuple[tuple[str, str], BaseException] | None = None  # (its execution, the error)
        self._abandoned: set[tuple[str, str]] = set()  # executions whose record being written is let go
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, store: ExecutionStore, record: LayerStatusRecord, *, after: float = 0.0) -> None:
        """Write ``record``, or ``after`` seconds from now unless a newer record of its layer comes."""
        self._raise_failure()
        key = (record.flow, record.id, record.layer)
        inline = store.datastore.small_writes_inline and after <= 0
        with self._changed:
            self._pending.pop(key, None)  # the newer record replaces it, and goes last
            if inline:
                while self._writing == key:  # an older record of this layer lands first, not after
                    self._changed.wait()
            else:
                due = time.monotonic() + after
                self._pending[key] = (store, record, due)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="laminar-status", daemon=True)
                    self._thread.start()
                if self._wakes is None or due < self._wakes:  # else it wakes in time by itself
                    self._changed.notify_all()
        if inline:
            store.write_layer_status(record)

    def discard(self, key: tuple[str, str, str]) -> None:
        """Forget the layer's record that is still waiting (its store is failing: do not wait on it)."""
        with self._changed:
            self._pending.pop(key, None)

    def abandon(self, flow: str, execution: str) -> None:
        """Forget every record of ``execution`` still waiting, and do not wait for (or later raise) the
        one being written: its store failed, and waiting would cost another deadline."""
        with self._changed:
            for key in [key for key in self._pending if key[:2] == (flow, execution)]:
                del self._pending[key]
            if self._writing is not None and self._writing[:2] == (flow, execution):
                self._abandoned.add((flow, execution))
            if self._failure is not None and self._failure[0] == (flow, execution):
                self._failure = None

    def flush(self, flow: str, execution: str) -> None:
        """Write every record of ``execution`` put so far, due or not, and wait; raise a failed write."""
        with self._changed:
            for key, (store, record, _) in self._pending.items():
                if key[:2] == (flow, execution):
                    self._pending[key] = (store, record, 0.0)
            self._changed.notify_all()
            while self._owes((flow, execution)):
                self._changed.wait()
        self._raise_failure()

    def _owes(self, execution: tuple[str, str]) -> bool:
        """Whether a record of ``execution`` is waiting or being written (call holding the lock)."""
        writing = self._writing is not None and self._writing[:2] == execution
        return writing or any(key[:2] == execution for key in self._pending)

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure[1]

    def _next(self) -> tuple[str, str, str]:
        """The first record due, in the order they came; waits for one (call holding the lock)."""
        while True:
            now = time.monotonic()
            soonest = None
            for key, (_, _, due) in self._pending.items():
                if due <= now:
                    self._wakes = None
                    return key
                soonest = due if soonest is None else min(soonest, due)
            self._wakes = soonest
            self._changed.wait(None if soonest is None else soonest - now)

    def _run(self) -> None:
        while True:
            with self._changed:
                key = self._next()
                store, record, _ = self._pending.pop(key)
                self._writing = key
            try:
                store.write_layer_status(record)
            except BaseException as error:
                if key[:2] not in self._abandoned:
                    self._failure = self._failure or (key[:2], error)
            finally:
                with self._changed:
                    self._abandoned.discard(key[:2])
                    self._writing = None
                    self._changed.notify_all()


_writer = _Writer()


def _store(execution: Execution) -> ExecutionStore:
    """The execution's store: the one its run here opened, not one built again for each record."""
    found = _stores.get((execution.flow.name, execution.id))
    if found is not None and found.datastore is execution.flow.configuration.datastore:
        return found
    return execution.flow.configuration.store(execution.flow.name, execution.id)


def _key(layer: Layer) -> tuple[str, str, str]:
    execution = layer.execution
    assert execution is not None
    return (execution.flow.name, execution.id, layer.name)


@hookimpl
def laminar_execution_started(execution: Execution) -> None:
    key = (execution.flow.name, execution.id)
    store = execution.flow.configuration.store(*key)
    earlier = store.status()
    if earlier is not None:
        _resumed.add(key)  # its layers' earlier records are carried over
    started = _started[key] = time.time()
    created = _created[key] = earlier.created if earlier is not None and earlier.created else started
    # An earlier run still "running" was ended by its scheduler's death: it stays so in the history.
    runs = _history[key] = earlier.history if earlier is not None else ()
    store.write_status(
        ExecutionStatus(execution.flow.name, execution.id, "running", started, created=created, runs=runs)
    )
    _stores[key] = store


@hookimpl
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    key = (execution.flow.name, execution.id)
    store = _store(execution)
    _stores.pop(key, None)
    started = _started.pop(key, time.time())
    created = _created.pop(key, started)
    runs = _history.pop(key, ())
    _resumed.discard(key)
    for layer_key in [k for k in _layers if k[:2] == key]:
        del _layers[layer_key]
    if isinstance(error, DatastoreError):
        # The store itself failed: writing to it, or waiting for a layer record being written to it,
        # would wait out another deadline. The record keeps saying "running", and reads as failed
        # once this scheduler's lease is no longer live.
        _writer.abandon(*key)
        return
    try:
        _writer.flush(*key)
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
        execution.flow.name, execution.id, status, started, time.time(), described, created, runs
    )
    store.write_status(record)


@hookimpl
def laminar_layer_started(layer: Layer, splits: int) -> None:
    key = _key(layer)
    run = _layers[key] = _LayerRun(time.time(), splits)
    execution = layer.execution
    assert execution is not None
    store = _store(execution)
    earlier = store.layer_status(layer.name) if key[:2] in _resumed else None
    if earlier is not None:  # keep what earlier runs recorded of the splits that will not run again
        run.attempts.extend(earlier.attempts)
        run.omitted = earlier.omitted
        run.failures = sum(1 for attempt in earlier.attempts if attempt.error or attempt.caught)
        run.next_attempt = earlier.next_attempt
    # This run numbers each split's attempts from at most next_attempt (see the scheduler), and makes
    # at most ``attempts`` of them: reserved, in case its scheduler dies before the final record.
    # On a resume it is written at once: until it lands, the earlier record does not reserve them.
    tries = execution.flow.registry[layer.name].configuration.retry.attempts
    running = _record(key, run, "running", next_attempt=run.next_attempt + tries)
    _writer.put(store, running, after=RUNNING_AFTER if earlier is None else 0.0)


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str) -> None:
    key = _key(layer)
    now = time.time()
    execution = layer.execution
    assert execution is not None
    record = LayerStatusRecord(*key, "skipped", now, now, reason=reason)
    _writer.put(_store(execution), record)


def _ended(
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException | None,
    started: float,
    ended: float,
    caught: Mapping[str, str] | None = None,
) -> _LayerRun | None:
    run = _layers.get(_key(layer))
    if run is None or isinstance(error, SplitNotStarted):  # handed over, never run: not an attempt
        return None
    split = index or 0
    run.next_attempt = max(run.next_attempt, attempt + 1)
    if (error is not None or caught) and run.failures < FAILED_LIMIT:  # kept as failed ones are
        run.failures += 1
        described = tracebacks.describe(error) if error is not None else None
        run.attempts.append(AttemptRecord(split, attempt, started, ended, described, caught or None))
    elif error is None and not caught and len(run.attempts) - run.failures < ATTEMPT_LIMIT:
        run.attempts.append(AttemptRecord(split, attempt, started, ended))
    else:
        run.omitted += 1
    return run


@hookimpl
def laminar_split_retried(
    layer: Layer, index: int | None, attempt: int, error: BaseException, started: float, ended: float
) -> None:
    _ended(layer, index, attempt - 1, error, started, ended)


@hookimpl
def laminar_split_finished(
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException | None,
    started: float,
    ended: float,
    caught: Mapping[str, str] | None,
) -> None:
    run = _ended(layer, index, attempt, error, started, ended, caught)
    if run is None or error is None:
        return
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
        run.cancelled = True
    elif run.failed is None:
        run.failed = tracebacks.describe(error)


@hookimpl
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None) -> None:
    key = _key(layer)
    run = _layers.pop(key, None) or _LayerRun(time.time(), splits)
    execution = layer.execution
    assert execution is not None
    if isinstance(error, DatastoreError):
        _writer.discard(key)  # as for the execution's record: the store is failing
        return
    if error is None:
        status, reason = "finished", None
    elif run.failed is not None:
        status, reason = "failed", None
    elif run.cancelled or isinstance(error, (Interrupted, KeyboardInterrupt)):
        status, reason = "cancelled", f"the run was stopped ({type(error).__name__}: {error})"
    elif run.splits == 0 and not run.attempts:  # its ForEach grid could not be computed
        status, reason = "failed", None
        run.failed = tracebacks.describe(error)
    else:
        status, reason = (
            "cancelled",
            f"the run stopped before the layer was done: {type(error).__name__}: {error}",
        )
    _writer.put(_store(execution), _record(key, run, status, reason=reason, ended=time.time()))


def _record(
    key: tuple[str, str, str],
    run: _LayerRun,
    status: str,
    *,
    reason: str | None = None,
    ended: float | None = None,
    next_attempt: int | None = None,
) -> LayerStatusRecord:
    return LayerStatusRecord(
        *key,
        status,
        run.started,
        ended,
        splits=run.splits,
        reason=reason,
        error=run.failed,
        attempts=tuple(run.attempts),
        omitted=run.omitted,
        next_attempt=run.next_attempt if next_attempt is None else next_attempt,
    )
