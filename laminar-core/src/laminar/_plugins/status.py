"""The run records of every execution, kept by an ordinary plugin on the lifecycle hooks.

``status.json`` says "running" from the moment a run (or resume) starts, and "succeeded", "failed"
or "cancelled" (stopped by a signal) with the end time and the error when it ends. Each layer's
``status.json`` says "running" when it starts and, when it ends, "finished", "failed" (a split of its
own failed for good), "cancelled" (the run stopped first) or "skipped" with the reason, with every
split attempt's times and, for a failed one, its error. Split events only touch memory; a layer's
record is written when it starts and when it ends: at once to a local datastore (a small local
write costs less than a hop to a thread), by a thread of its own (``_Writer``) to an object store,
so the scheduler does not wait on two requests per layer. The execution's record is written last, after every layer record of it: whoever reads
"succeeded" or "failed" reads the layers' final records too. The results API reads them
(``execution.status``, ``execution.status.layers``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from laminar._plugins.hookspecs import hookimpl
from laminar._runtime import tracebacks
from laminar._storage.records import AttemptRecord, ExecutionStatus, LayerStatusRecord
from laminar.errors import DatastoreError, Interrupted

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._storage.store import ExecutionStore

#: Attempts that did not fail kept per layer record (every failed one is kept, up to FAILED_LIMIT).
ATTEMPT_LIMIT = 10_000
FAILED_LIMIT = 1_000


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


_started: dict[tuple[str, str], float] = {}  # (flow, execution) -> when this process's run started
_created: dict[tuple[str, str], float] = {}  # (flow, execution) -> when its first run started
_resumed: set[tuple[str, str]] = set()  # executions whose run here is a resume
_layers: dict[tuple[str, str, str], _LayerRun] = {}  # (flow, execution, layer) -> its run


class _Writer:
    """Writes layer status records in order on a thread of its own; flushed when an execution ends.

    A layer's record that is still waiting when a newer one of the same layer comes is replaced by
    it (a layer that ended before its "running" record was written has one write, not two). A write
    that fails is raised by the next hook of the same process, as a synchronous write's would be.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str], tuple[ExecutionStore, LayerStatusRecord]] = {}
        self._writing: tuple[str, str, str] | None = None
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, store: ExecutionStore, record: LayerStatusRecord) -> None:
        self._raise_failure()
        if store.datastore.small_writes_inline:  # a local file: cheaper written now than handed over
            store.write_layer_status(record)
            return
        key = (record.flow, record.id, record.layer)
        with self._changed:
            self._pending.pop(key, None)  # the newer record goes last, in the order they came
            self._pending[key] = (store, record)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="laminar-status", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, flow: str, execution: str) -> None:
        """Wait until every record of ``execution`` put so far is written; raise a failed write."""
        with self._changed:
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
            raise failure

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                key = next(iter(self._pending))
                store, record = self._pending.pop(key)
                self._writing = key
            try:
                store.write_layer_status(record)
            except BaseException as error:
                self._failure = self._failure or error
            finally:
                with self._changed:
                    self._writing = None
                    self._changed.notify_all()


_writer = _Writer()


def _store(execution: Execution) -> ExecutionStore:
    return execution.flow.configuration.store(execution.flow.name, execution.id)


def _key(layer: Layer) -> tuple[str, str, str]:
    execution = layer.execution
    assert execution is not None
    return (execution.flow.name, execution.id, layer.name)


@hookimpl
def laminar_execution_started(execution: Execution) -> None:
    store = _store(execution)
    key = (execution.flow.name, execution.id)
    earlier = store.status()
    if earlier is not None:
        _resumed.add(key)  # its layers' earlier records are carried over
    started = _started[key] = time.time()
    created = _created[key] = earlier.created if earlier is not None and earlier.created else started
    store.write_status(
        ExecutionStatus(execution.flow.name, execution.id, "running", started, created=created)
    )


@hookimpl
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    key = (execution.flow.name, execution.id)
    started = _started.pop(key, time.time())
    created = _created.pop(key, started)
    _resumed.discard(key)
    for layer_key in [k for k in _layers if k[:2] == key]:
        del _layers[layer_key]
    try:
        _writer.flush(*key)
    except DatastoreError:
        if error is None:  # the layer records could not be written: the run cannot end "succeeded"
            raise
        return
    if isinstance(error, DatastoreError):
        # The store itself failed: writing to it would wait out another deadline. The record keeps
        # saying "running", and reads as failed once this scheduler's lease is no longer live.
        return
    if error is None:
        status, described = "succeeded", None
    else:
        status = "cancelled" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "failed"
        described = tracebacks.describe(error)
    record = ExecutionStatus(
        execution.flow.name, execution.id, status, started, time.time(), described, created
    )
    _store(execution).write_status(record)


@hookimpl
def laminar_layer_started(layer: Layer, splits: int) -> None:
    key = _key(layer)
    run = _layers[key] = _LayerRun(time.time(), splits)
    execution = layer.execution
    assert execution is not None
    store = _store(execution)
    if key[:2] in _resumed:  # keep what earlier runs recorded of the splits that will not run again
        earlier = store.layer_status(layer.name)
        if earlier is not None:
            run.attempts.extend(earlier.attempts)
            run.omitted = earlier.omitted
            run.failures = sum(1 for attempt in earlier.attempts if attempt.error is not None)
    _writer.put(store, _record(key, run, "running"))


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str) -> None:
    key = _key(layer)
    now = time.time()
    execution = layer.execution
    assert execution is not None
    record = LayerStatusRecord(*key, "skipped", now, now, reason=reason)
    _writer.put(_store(execution), record)


def _ended(
    layer: Layer, index: int | None, attempt: int, error: BaseException | None, started: float, ended: float
) -> _LayerRun | None:
    run = _layers.get(_key(layer))
    if run is None:
        return None
    split = index or 0
    if error is not None and run.failures < FAILED_LIMIT:
        run.failures += 1
        run.attempts.append(AttemptRecord(split, attempt, started, ended, tracebacks.describe(error)))
    elif error is None and len(run.attempts) - run.failures < ATTEMPT_LIMIT:
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
    layer: Layer, index: int | None, attempt: int, error: BaseException | None, started: float, ended: float
) -> None:
    run = _ended(layer, index, attempt, error, started, ended)
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
        return  # as for the execution's record: the store is failing
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
    )
