"""The hooks a Laminar plugin may implement. This module is the plugin author's contract.

A distribution exposes a module (or object) under the ``laminar`` entry-point group::

    [project.entry-points.laminar]
    foo = "laminar_foo.plugin"

and implements any of these hooks in it with ``@laminar._plugins.hookimpl``. The built-in datastores
and executors register through the very same hooks (see :mod:`laminar._plugins.builtin`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._runtime.executor import Executor
    from laminar._serialization.protocols import Protocol
    from laminar._transport.datastore import Datastore

PROJECT = "laminar"
ENTRY_POINT_GROUP = "laminar"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def laminar_datastores() -> Sequence[type[Datastore]]:  # type: ignore[empty-body]
    """Datastore classes this plugin provides; each lists its URL ``schemes`` and has ``from_url``."""


@hookspec
def laminar_executors() -> Sequence[type[Executor]]:  # type: ignore[empty-body]
    """Executor classes this plugin provides; each lists its ``names`` and has ``from_url``."""


@hookspec
def laminar_protocols() -> Sequence[tuple[tuple[type, ...], Protocol[Any]]]:  # type: ignore[empty-body]
    """Serialization protocols every datastore uses by default, as ``((types...), protocol)`` pairs.

    Protocols a user registers with ``@datastore.protocol`` take precedence.
    """


@hookspec
def laminar_execution_started(execution: Execution) -> None:
    """Called in the scheduler when an execution starts (or resumes)."""


@hookspec
def laminar_layer_finished(layer: Layer, splits: int) -> None:
    """Called in the scheduler after a layer's record is written."""


@hookspec
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    """Called in the scheduler when an execution ends, with the error that ended it, if any."""
