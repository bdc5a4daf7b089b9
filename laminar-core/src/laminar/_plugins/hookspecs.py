"""The plugin hooks (pluggy hookspecs) a Laminar plugin may implement: the plugin author's contract.

A distribution exposes a module (or object) under the ``laminar`` entry-point group::

    [project.entry-points.laminar]
    foo = "laminar_foo.plugin"

and implements any of these hooks in it with ``@laminar.plugins.hookimpl``. The built-in datastores,
executors and the default protocol register through the very same hooks
(:mod:`laminar._plugins.builtin`). Not to be confused with *layer hooks* (``hooks.entry`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._runtime.executor import Executor
    from laminar._runtime.run import Run
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
    same type, and a user's ``@datastore.protocol`` wins over every plugin. A pair with no types,
    ``((), protocol)``, registers a protocol for reading only: artifacts stored with it read in every
    process that has the plugin, and nothing is written with it unless a datastore opts in.
    """


# ---- lifecycle events (called in the scheduler's process, on its event loop: keep them quick) ----
# Every event of a run, in order: execution started; per layer, started or skipped; per split attempt,
# started, then retried (it failed and runs again) or finished (for good: succeeded or failed on its
# last attempt); layer finished; execution finished. ``layer`` is a reader of the layer in that
# execution (``layer.execution``, ``layer.flow``); ``index`` is ``None`` for a layer without ForEach.
# ``run`` is the run object (:class:`~laminar.plugins.Run`): one per run or resume, the same in
# every event of it, with the execution's store and a stash where a plugin keeps its state of the
# run. An implementation takes only the parameters it needs (pluggy passes those), so one written
# before ``run`` existed keeps working.
@hookspec
def laminar_execution_started(execution: Execution, run: Run) -> None:
    """An execution starts (or resumes): its metadata and Parameters are stored."""


@hookspec
def laminar_layer_started(layer: Layer, splits: int, run: Run) -> None:
    """A layer's dependencies are done and its entry hooks said yes: ``splits`` splits are to run.

    On a resume, splits that finished before are not run again and get no split events.
    """


@hookspec
def laminar_layer_skipped(layer: Layer, reason: str, run: Run) -> None:
    """A layer will not run: ``reason`` says why (an entry hook, or a skipped dependency)."""


@hookspec
def laminar_split_started(layer: Layer, index: int | None, attempt: int, run: Run) -> None:
    """Attempt ``attempt`` of a split is handed to the executor.

    A split's attempts are numbered once across every run of the execution: 0 first, and a resume
    goes on after the last one an earlier run recorded (so a split failed on attempt 0 is resumed
    as attempt 1). Within a run they count up by one.
    """


@hookspec
def laminar_split_retried(
    layer: Layer,
    index: int | None,
    attempt: int,
    error: BaseException,
    started: float,
    ended: float,
    run: Run,
) -> None:
    """A split failed with ``error`` and runs again as attempt ``attempt``.

    ``started`` and ``ended`` (``time.time()`` where it ran) say when the failed attempt ran.
    """


@hookspec
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
    """A split ended for good on ``attempt``: it succeeded (``error`` None) or failed on its last try.

    ``caught`` is the error ``Catch`` absorbed in a split that succeeded so (its ``type``,
    ``message`` and ``traceback`` text), else ``None``. An implementation may leave it out of its
    parameters, as any of them.

    ``started`` and ``ended`` say when that attempt ran, measured where it ran (``time.time()``); an
    executor may queue a split before it starts, so they can be later than ``laminar_split_started``.
    A split still queued when the run failed or was stopped never runs: its ``error`` is a
    :class:`~laminar.plugins.SplitNotStarted`, which is not a failed attempt.
    """


@hookspec
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None, run: Run) -> None:
    """A layer ended. ``error`` None: it finished and its record is handed over (``layer`` reads its
    artifacts); the record is written behind, before the execution-finished event, and
    ``run.landed(layer.name)`` waits for it (off the event loop). Otherwise what stopped it: a split
    of its own that failed for good, or the run stopping before the layer was done (another layer
    failed, a signal).
    """


@hookspec
def laminar_execution_finished(execution: Execution, error: BaseException | None, run: Run) -> None:
    """An execution ended, with the error that ended it (``None`` when it succeeded)."""


# ---- the command line ------------------------------------------------------------------------------
@hookspec
def laminar_cli_commands() -> Sequence[Any]:  # type: ignore[empty-body]
    """Click commands this plugin adds to the ``laminar`` command (laminar-ui adds ``laminar ui``).

    Called once, when the ``laminar`` command is built; keep the module that implements it cheap to
    import (import a command's heavy dependencies inside the command). A command named as a built-in
    one, or as one an earlier plugin added, is left out.
    """


# ---- in the process that runs a split (a worker) ---------------------------------------------------
@hookspec
def laminar_split_context(
    layer: Layer, index: int | None, attempt: int
) -> AbstractContextManager[None] | None:
    """A context manager to enter around one split attempt's work, where the executor runs it.

    Called in the worker (a thread, a worker process or a Dask worker), not in the scheduler; the
    built-in log capture uses it to keep what the split prints and logs. Return ``None`` for nothing.
    """
