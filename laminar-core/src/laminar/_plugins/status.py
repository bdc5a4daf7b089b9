"""The status record of every execution, kept by an ordinary plugin on the lifecycle hooks.

``status.json`` says "running" from the moment a run (or resume) starts, and "succeeded", "failed"
or "cancelled" (stopped by a signal) with the end time and the error when it ends. The results API
reads it (``execution.status``); a "running" record whose scheduler's lease is no longer live
reads as failed there.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING

from laminar._plugins.hookspecs import hookimpl
from laminar._storage.records import ExecutionStatus
from laminar.errors import DatastoreError, Interrupted

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._storage.store import ExecutionStore

_started: dict[tuple[str, str], float] = {}  # (flow, execution) -> when this process's run started


def _store(execution: Execution) -> ExecutionStore:
    return execution.flow.configuration.store(execution.flow.name, execution.id)


@hookimpl
def laminar_execution_started(execution: Execution) -> None:
    started = _started[(execution.flow.name, execution.id)] = time.time()
    _store(execution).write_status(ExecutionStatus(execution.flow.name, execution.id, "running", started))


@hookimpl
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    started = _started.pop((execution.flow.name, execution.id), time.time())
    if isinstance(error, DatastoreError):
        # The store itself failed: writing to it would wait out another deadline. The record keeps
        # saying "running", and reads as failed once this scheduler's lease is no longer live.
        return
    if error is None:
        status, described = "succeeded", None
    else:
        status = "cancelled" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "failed"
        described = {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        }
    record = ExecutionStatus(execution.flow.name, execution.id, status, started, time.time(), described)
    _store(execution).write_status(record)
