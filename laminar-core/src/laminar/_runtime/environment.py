"""The ``LAMINAR_*`` environment protocol: how an executor tells a process which split to run.

A process started with these variables that evaluates ``if flow := MyFlow():`` runs that split and
gets ``False``, so the script does no set-up twice. Laminar's own worker processes set
``LAMINAR_WORKER`` instead: there the guard is simply false.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from laminar._runtime import foreach
from laminar._runtime.context import store_for
from laminar._runtime.task import SplitTask
from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition

#: The variables that tell a process which split to run (SPEC: the execution guard).
EXECUTION_ID = "LAMINAR_EXECUTION_ID"
#: Whether the split runs in a resumed run ("1") of its execution; SPEC names it ``..._RETRY``.
EXECUTION_RESUMED = "LAMINAR_EXECUTION_RETRY"
FLOW_NAME = "LAMINAR_FLOW_NAME"
LAYER_NAME = "LAMINAR_LAYER_NAME"
LAYER_INDEX = "LAMINAR_LAYER_INDEX"
LAYER_SPLITS = "LAMINAR_LAYER_SPLITS"
LAYER_ATTEMPT = "LAMINAR_LAYER_ATTEMPT"
#: Set in every process Laminar starts to run splits (process workers, Dask workers).
WORKER = "LAMINAR_WORKER"
WORKER_ENVIRONMENT = {WORKER: "1"}


def mark_worker() -> None:
    """Mark this process as a worker: the execution guard is false in it from now on."""
    os.environ.update(WORKER_ENVIRONMENT)


def in_worker() -> bool:
    """Whether this process is one Laminar started to run splits."""
    return os.environ.get(WORKER) == "1"


def runs_a_split() -> bool:
    """Whether this process runs splits, or is being set up to: a Laminar worker, one started with
    ``LAMINAR_*`` variables, or a child that ``multiprocessing`` spawned (as Dask starts its workers),
    which imports the parent's script again as ``__mp_main__`` before anyone can mark it a worker."""
    main = sys.modules.get("__main__")
    return in_worker() or bool(os.environ.get(LAYER_NAME)) or getattr(main, "__name__", None) == "__mp_main__"


def task_from_environment(flow: FlowDefinition) -> SplitTask | None:
    """The split this process was started to run for ``flow``, or ``None``."""
    if not os.environ.get(LAYER_NAME) or os.environ.get(FLOW_NAME) != flow.name:
        return None
    try:
        index = _optional_int(LAYER_INDEX)
        task = SplitTask(
            flow=flow,
            execution=os.environ[EXECUTION_ID],
            layer=os.environ[LAYER_NAME],
            index=index,
            splits=_optional_int(LAYER_SPLITS),
            attempt=int(os.environ.get(LAYER_ATTEMPT) or 0),
            resumed=os.environ.get(EXECUTION_RESUMED) == "1",
        )
    except (KeyError, ValueError) as error:
        raise ConfigurationError(f"incomplete or malformed LAMINAR_* environment: {error}") from error
    if task.layer not in flow.registry:
        raise ConfigurationError(f"LAMINAR_LAYER_NAME={task.layer!r} is not a layer of flow {flow.name}")
    each = flow.registry[task.layer].configuration.foreach
    if each is not None and index is not None:
        store = store_for(flow.execution(task.execution))
        task.bindings = foreach.grid(store, task.layer, each).bindings(index)
    return task


def environment_for(task: SplitTask) -> dict[str, str]:
    """The variables that make a process running the flow's script run ``task`` (and nothing else).

    For executors that start a process (or a container) per split; the process writes the split's
    record itself, and :func:`laminar._runtime.split.recorded_outcome` reads it back.
    """
    return {
        EXECUTION_ID: task.execution,
        EXECUTION_RESUMED: "1" if task.resumed else "0",
        FLOW_NAME: task.flow.name,
        LAYER_NAME: task.layer,
        LAYER_INDEX: "" if task.index is None else str(task.index),
        LAYER_SPLITS: "" if task.splits is None else str(task.splits),
        LAYER_ATTEMPT: str(task.attempt),
    }


def _optional_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None
