"""Run one layer split where the executor put it: resolve inputs, call, store what it assigned."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator

from laminar._model.execution import Execution
from laminar._model.layer import Layer
from laminar._runtime import hook_calls, tracebacks
from laminar._runtime.context import LayerContext, store_for
from laminar._runtime.executor import SplitNotStarted
from laminar._runtime.task import SplitOutcome, SplitTask
from laminar._storage import layout
from laminar._storage.records import SplitRecord
from laminar._storage.store import ExecutionStore
from laminar.errors import SerializationError

logger = logging.getLogger("laminar")


def run_split(task: SplitTask, execution: Execution | None = None) -> SplitOutcome:
    """Run ``task`` in this process and store its artifacts; raise what the layer raised.

    Artifacts are stored only for a split that returned (or whose error ``Catch`` absorbed); every
    value is serialized before anything is written, so a failing split leaves nothing half-done.
    The split's record comes back in the outcome for the scheduler to write (see ``SplitOutcome``);
    :func:`run_and_record_split` writes it here instead. Plugins' ``laminar_split_context`` managers
    (the log capture, say) are entered around it all. ``execution``: the task's execution (as
    resumed if the task is), when the caller has it at hand (the scheduler running a split inline);
    by default one is made from the task, with a store of its own.
    """
    started = time.time()
    try:
        return _run_split(task, started, execution)
    except BaseException as error:
        tracebacks.remember(error, started, time.time())  # frames and times travel with the error
        raise


def run_splits(
    tasks: Iterable[SplitTask], *, cancelled: Callable[[], bool] = lambda: False
) -> Iterator[SplitOutcome | BaseException]:
    """Run a batch's splits one after another, each as :func:`run_split` would: yields each one's
    outcome, or the exception it raised, as it ends; one that fails does not stop the others.

    Once ``cancelled()`` is true, the splits not started yet are not: each yields
    :class:`~laminar._runtime.executor.SplitNotStarted`. ``KeyboardInterrupt`` and ``SystemExit``
    end the batch, as they would end a single split.
    """
    executions: dict[tuple[str, bool], Execution] = {}  # one per batch: its store is built once
    for task in tasks:
        if cancelled():
            yield SplitNotStarted.of(task)
            continue
        key = (task.execution, task.resumed)
        if key not in executions:
            executions[key] = _execution(task)
        try:
            outcome = run_split(task, executions[key])
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:
            yield error
        else:
            yield outcome


def _execution(task: SplitTask) -> Execution:
    execution = task.flow.execution(task.execution)
    return execution.as_resumed() if task.resumed else execution


def _run_split(task: SplitTask, started: float, execution: Execution | None) -> SplitOutcome:
    flow = task.flow
    if execution is None:
        execution = _execution(task)
    store = store_for(execution)
    context = LayerContext(
        execution,
        task.layer,
        index=task.index,
        splits=task.splits,
        attempt=task.attempt,
        configuration=task.configuration,
        writer=True,
        store=store,
    )
    layer = context.bind()
    hook = flow.configuration.hook
    # (A hook's results are those of its implementations that are not None, as pluggy gives them.)
    managers = (
        hook.laminar_split_context(layer=layer, index=task.index, attempt=task.attempt)
        if hook is not None
        else []
    )
    if len(managers) == 1:  # the log capture alone, as most runs have it: no stack to keep
        with managers[0]:
            record, caught = _call(task, execution, store, layer)
    elif not managers:
        record, caught = _call(task, execution, store, layer)
    else:
        with contextlib.ExitStack() as contexts:
            for manager in managers:
                contexts.enter_context(manager)
            record, caught = _call(task, execution, store, layer)
    return SplitOutcome(record, started=started, ended=time.time(), caught=caught)


def _call(
    task: SplitTask, execution: Execution, store: ExecutionStore, layer: Layer
) -> tuple[SplitRecord, dict[str, str] | None]:
    """The split's staged record, and the error ``Catch`` absorbed (type, message, traceback)."""
    flow, plan = task.flow, task.flow.plan
    readers: dict[str, Layer] = {}

    def dependency(name: str) -> Layer:
        if name not in readers:
            readers[name] = LayerContext.reader(
                execution, name, bindings=task.bindings.get(name), store=store
            )
        return readers[name]

    # Read the catch setting without context.configuration, which copies (layers may change theirs).
    catch = (task.configuration or flow.registry[task.layer].configuration).catch
    caught: dict[str, str] | None = None
    hooks = plan.layer_hooks[(task.layer, "execution")]
    try:
        parameters = plan.calls[task.layer].parameters
        if hooks:
            with hook_calls.around(hooks, layer, dependency):
                layer(**{parameter: dependency(name) for parameter, name in parameters})
        else:  # (most layers: no context manager entered around the call)
            layer(**{parameter: dependency(name) for parameter, name in parameters})
    except Exception as error:
        if catch is None or not isinstance(error, catch.exceptions):
            raise
        caught = tracebacks.describe(error)
        # One line into the split's captured log (and shown live); the traceback is in its run record.
        logger.warning(
            "%s: Catch absorbed %s: %s; the split finished with what it had assigned",
            task.describe(),
            caught["type"],
            caught["message"],
        )

    def unserializable(attribute: str, error: Exception) -> SerializationError:
        # No note naming the split: the scheduler adds one ("raised by ...") to every error that ends one.
        return SerializationError(
            f"artifact {attribute!r} of layer {task.layer} cannot be serialized: {type(error).__name__}: {error}. "
            "Nothing of this split was stored. Assign a picklable value, or register a serde.Protocol for "
            "its type with @datastore.protocol(...)."
        )

    values, shards = layer._artifacts()
    line = f"{caught['type']}: {caught['message']}" if caught is not None else None
    return store.stage_split(values, shards, caught=line, on_error=unserializable), caught


def run_and_record_split(task: SplitTask) -> SplitOutcome:
    """Run ``task`` and write its record too: for a process started to run one split on its own."""
    outcome = run_split(task)
    _store(task).write_splits(task.layer, {task.index or 0: outcome.record})
    return outcome


def recorded_outcome(task: SplitTask) -> SplitOutcome:
    """The outcome of ``task`` as a process of its own recorded it (see ``environment_for``).

    An executor that starts a process or container per split returns this once that process exited
    cleanly; it raises if the process recorded nothing.
    """
    store = _store(task)
    index = task.index or 0
    batch = store.read_batch(task.layer, layout.split_batch_name(index, index))
    record = batch.splits.get(index) if batch is not None else None
    if record is None:
        raise RuntimeError(f"{task.describe()} exited without recording its result in {store.datastore.url}")
    return SplitOutcome(record)


def _store(task: SplitTask) -> ExecutionStore:
    """The store of the task's execution (its own process: no run object reaches it)."""
    return store_for(task.flow.execution(task.execution))
