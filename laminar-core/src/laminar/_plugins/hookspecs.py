"""The plugin hooks (pluggy hookspecs) a Laminar plugin may implement: the plugin author's contract.

A distribution exposes a module (or object) under the ``laminar`` entry-point group::

    [project.entry-points.laminar]
    foo = "laminar_foo.plugin"

and implements any of these hooks in it with ``@laminar.plugins.hookimpl``. The built-in datastores,
executors and the default protocol register through the very same hooks
(:mod:`laminar._plugins.builtin`). Not to be confused with *layer hooks* (``hooks.entry`` ...).
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


# ---- components -------------------------------------------------------------------------------
@hookspec
def laminar_datastores() -> Sequence[type[Datastore]]:  # type: ignore[empty-body]
    """Datastore classes this plugin provides; each lists its URL ``schemes`` and has ``from_url``.

    When two plugins claim a scheme, the one registered first (the built-ins, then entry points in
    the order Python lists them) keeps it.
    """


@hookspec
def laminar_executors() -> Sequence[type[Executor]]:  # type: ignore[empty-body]
    """Executor classes this plugin provides; each lists its ``names`` and has ``from_url``."""


@hookspec
def laminar_protocols() -> Sequence[tuple[tuple[type, ...], Protocol[Any]]]:  # type: ignore[empty-body]
    """Serialization protocols for every datastore, as ``((types...), protocol)`` pairs.

    Types are matched exactly; a protocol registered for ``object`` is the fallback (the built-in
    plugin registers cloudpickle for it). A plugin registered later wins over an earlier one for the
    same type, and a user's ``@datastore.protocol`` wins over every plugin.
    """


# ---- lifecycle events (called in the scheduler's process, on its event loop: keep them quick) ----
@hookspec
def laminar_execution_started(execution: Execution) -> None:
    """An execution starts (or resumes): its metadata and Parameters are stored."""


@hookspec
def laminar_layer_started(layer: Layer) -> None:
    """A layer's dependencies are done and its entry hooks said yes: its splits are about to run."""


@hookspec
def laminar_layer_skipped(layer: Layer, reason: str) -> None:
    """A layer will not run: ``reason`` says why (an entry hook, or a skipped dependency)."""


@hookspec
def laminar_split_retried(layer: Layer, index: int | None, attempt: int, error: BaseException) -> None:
    """A split failed with ``error`` and runs again as attempt ``attempt`` (``index`` None: no ForEach)."""


@hookspec
def laminar_layer_finished(layer: Layer, splits: int) -> None:
    """A layer finished: its record is written. ``layer`` reads its artifacts; ``splits`` its count."""


@hookspec
def laminar_execution_finished(execution: Execution, error: BaseException | None) -> None:
    """An execution ended, with the error that ended it (``None`` when it succeeded)."""
