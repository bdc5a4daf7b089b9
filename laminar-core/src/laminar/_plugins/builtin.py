"""The built-in components, registered through the same hooks as any third-party plugin.

Local and Memory datastores, Thread and Process executors, cloudpickle as the fallback protocol,
and lifecycle events logged on the ``laminar`` logger (stdlib ``logging``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from laminar._model.execution import Execution
from laminar._model.layer import Layer
from laminar._plugins.hookspecs import hookimpl
from laminar._runtime.executor import Executor
from laminar._runtime.process import Process
from laminar._runtime.thread import Thread
from laminar._serialization.protocols import Pickle, Protocol
from laminar._transport.datastore import Datastore
from laminar._transport.local import Local
from laminar._transport.memory import Memory

logger = logging.getLogger("laminar")


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    return [Local, Memory]


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    return [Thread, Process]


@hookimpl
def laminar_protocols() -> Sequence[tuple[tuple[type, ...], Protocol[Any]]]:
    return [((object,), Pickle())]


@hookimpl
def laminar_execution_started(execution: Execution) -> None:
    logger.info("execution %s of flow %s started", execution.id, execution.flow.name)


# Layer and split events come once a layer of a chain: each is logged only when the logger is enabled
# for its level, checked before any argument is computed (``layer.name`` and the like cost more).
@hookimpl
def laminar_layer_started(layer: Layer, splits: int) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("layer %s started (%d split%s)", layer.name, splits, "" if splits == 1 else "s")


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str) -> None:
    logger.info("layer %s skipped: %s", layer.name, reason)


@hookimpl
def laminar_split_retried(layer: Layer, index: int | None, attempt: int, error: BaseException) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    split = "" if index is None else f" split {index}"
    logger.info(  # the progress display prints it; a configured logger gets it too
        "layer %s%s failed (%s: %s); retrying as attempt %d",
        layer.name,
        split,
        type(error).__name__,
        error,
        attempt,
    )


@hookimpl
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    execution = layer.execution
    if error is not None:
        logger.info("layer %s stopped: %s: %s", layer.name, type(error).__name__, error)
        return
    logger.info(
        "layer %s finished (%d split%s) in execution %s",
        layer.name,
        splits,
        "" if splits == 1 else "s",
        execution.id if execution is not None else "?",
    )


@hookimpl
def laminar_split_started(layer: Layer, index: int | None, attempt: int) -> None:
    """Split events are frequent: they are logged only at debug level, and only when it is enabled."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("layer %s split %s attempt %d started", layer.name, index, attempt)


@hookimpl
def laminar_split_finished(
    layer: Layer, index: int | None, attempt: int, error: BaseException | None
) -> None:
    if error is not None and logger.isEnabledFor(logging.INFO):
        split = "" if index is None else f" split {index}"
        logger.info(
            "layer %s%s failed on attempt %d: %s: %s", layer.name, split, attempt, type(error).__name__, error
        )


@hookimpl
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    if error is None:
        logger.info("execution %s of flow %s succeeded", execution.id, execution.flow.name)
    else:
        logger.info(
            "execution %s of flow %s failed: %s: %s",
            execution.id,
            execution.flow.name,
            type(error).__name__,
            error,
        )


@hookimpl
def laminar_cli_commands() -> Sequence[Any]:
    """None: the built-in commands are laminar's own group (``_cli/main.py``)."""
    return []
