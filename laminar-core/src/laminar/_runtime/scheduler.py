"""The asyncio scheduler: decides what runs, in what order, and how failures end an execution.

Each layer is a coroutine that waits for its dependencies, evaluates entry hooks, sizes its ForEach
grid once, and feeds its splits to the executor through at most ``executor.window`` runners. Scheduling
cost is linear in the number of splits. When a split fails for good, nothing new starts (splits
queued at the executor are cancelled: ``Executor.cancel_queued``; a split waiting to retry stops
waiting and does not retry); running splits finish; then the first error is raised with the layer
named.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import copy
import functools
import gc
import itertools
import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from laminar._runtime import batching, commit, foreach, hook_calls, tracebacks
from laminar._runtime.commit import SplitLog
from laminar._runtime.context import LayerContext, store_for
from laminar._runtime.executor import SplitNotStarted, runs_inline
from laminar._runtime.layer_records import LayerRecords
from laminar._runtime.reusing import Reusing
from laminar._runtime.run import Run
from laminar._runtime.split import run_split
from laminar._runtime.task import SplitOutcome, SplitTask
from laminar._runtime.wiring import check_compatible
from laminar._storage import borrowing, logs, reuse_index
from laminar._storage.lease import Heartbeat, Lease
from laminar._storage.records import Record, Runs, SplitRecord, runs
from laminar.errors import (
    DatastoreError,
    ExecutorContractError,
    FlowDefinitionError,
    IntegrityError,
    Interrupted,
    LeaseLost,
    MissingParameters,
    SerializationError,
    add_note,
)

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._model.plan import LayerHook
    from laminar._runtime.executor import Executor
    from laminar._storage.store import ExecutionStore

FINISHED, SKIPPED, FAILED, CANCELLED = "finished", "skipped", "failed", "not started"
logger = logging.getLogger("laminar")


def _first_try(index: int) -> int:
    """A split's first attempt in an execution's first run."""
    return 0


def _caught(outcome: SplitOutcome) -> Mapping[str, str] | None:
    """The error ``Catch`` absorbed in the split: as the split described it, or from its record's one
    line when an executor handed back only the record (a process of its own recorded it)."""
    if outcome.caught is not None or outcome.record.caught is None:
        return outcome.caught
    kind, _, message = outcome.record.caught.partition(": ")
    return {"type": kind, "message": message, "traceback": ""}


class Scheduler:
    """Runs executions. ``Flow(scheduler=Scheduler())`` is the default."""

    def run(
        self,
        execution: Execution,
        *,
        parameters: dict[str, Any],
        resume: bool = False,
        reuse: bool = False,
        force: Iterable[str] = (),
    ) -> None:
        """Run ``execution`` to the end; raise the first layer failure. With ``reuse``, layers whose
        key matches an earlier execution's are reused; ``force`` names layers that run regardless
        (and so do the layers depending on them)."""
        flow = execution.flow
        check_compatible(flow.configuration)
        flow.plan  # noqa: B018 - validates the DAG before anything is written
        forced = sorted(set(force))
        unknown = [name for name in forced if name not in flow.registry]
        if unknown:
            raise FlowDefinitionError(
                f"cannot force layer {unknown[0]}: flow {flow.name} has no such layer (its layers: "
                f"{', '.join(name for name in flow.plan.order if name != 'Parameters')})"
            )
        try:
            asyncio.get_running_loop()
            inside_loop = True
        except RuntimeError:  # (a split on a run's loop thread sees none, yet is inside that run)
            inside_loop = getattr(_on_the_loop, "split", False)
        if not inside_loop:
            # First, before the run's event loop and threads start: the executor may fork this process.
            with flow.configuration.executor.prepared():
                run = _Runner(execution, parameters=parameters, resume=resume, reuse=reuse, force=forced)
                interruption: Interrupted | None = None
                try:
                    with _fewer_collections():
                        try:
                            asyncio.run(run.main())
                        finally:
                            interruption = run.interruption() if run.interrupted is not None else None
                            # The run's objects go now, before the collector held back while it ran
                            # looks at what is left (they are in no reference cycle once it is over).
                            del run
                except asyncio.CancelledError:  # a second Ctrl-C stopped the running splits too
                    if interruption is None:
                        raise
                    raise interruption from None
            return
        run = _Runner(execution, parameters=parameters, resume=resume, reuse=reuse, force=forced)
        # Called from inside an event loop (a notebook): run ours on a thread of its own.
        errors: list[BaseException] = []

        def target() -> None:
            try:
                with _fewer_collections():
                    asyncio.run(run.main())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=target, name="laminar-scheduler")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return "Scheduler()"


#: The garbage collector's first threshold while executions run. Python's default (700 container
#: objects) makes a foreach of a million splits spend a fifth of its time in collections that find
#: nothing (the scheduler's garbage is freed by reference counting); cyclic garbage waits a little
#: longer instead.
COLLECT_EVERY = 50_000
_collections_lock = threading.Lock()
_collections_held = [0, 0]  # executions running in this process; the threshold before the first


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    with _collections_lock:
        if _collections_held[0] == 0:
            first, *rest = gc.get_threshold()
            _collections_held[1] = first
            if 0 < first < COLLECT_EVERY:
                gc.set_threshold(COLLECT_EVERY, *rest)
        _collections_held[0] += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_held[0] -= 1
            if _collections_held[0] == 0 and gc.get_threshold()[0] == COLLECT_EVERY:
                gc.set_threshold(_collections_held[1], *gc.get_threshold()[1:])


def _drain(woken: socket.socket) -> None:
    """Read what the signal wake-up file wrote (the signals are handled by their handlers)."""
    with contextlib.suppress(OSError):
        while woken.recv(4096):
            pass


def _downstream(
    order: Sequence[str], dependencies: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Each layer's dependents, direct or not: one pass over ``order`` (the plan's, dependencies
    first) backwards, without recursion (a chain may be thousands of layers long)."""
    direct: dict[str, list[str]] = {name: [] for name in order}
    for layer in order:
        for needed in dependencies[layer]:
            direct[needed].append(layer)
    found: dict[str, frozenset[str]] = {}
    for name in reversed(order):
        found[name] = frozenset(direct[name]).union(*(found[layer] for layer in direct[name]))
    return found


async def _cancelled(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelled again if this is (as a cancelled
    ``asyncio.gather`` does): what they record of being stopped lands before their caller goes on."""
    for task in tasks:
        task.cancel()
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()


def _queued(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has a callback ready or a timer due: what its next turn would run (a signal's
    handler, a lease lost, a split handed back all come as callbacks, ``call_soon_threadsafe``).
    True where the loop does not say (one that is not asyncio's own): a turn is then taken anyway."""
    ready: Any = getattr(loop, "_ready", None)
    scheduled: Any = getattr(loop, "_scheduled", None)
    if ready is None or scheduled is None:
        return True
    return bool(ready) or bool(scheduled and scheduled[0].when() <= loop.time())


def _weakly(method: Callable[[BaseException], None]) -> Callable[[BaseException], None]:
    """``method`` called as long as its object lives, without keeping it alive."""
    held = weakref.WeakMethod(method)

    def call(error: BaseException) -> None:
        alive = held()
        if alive is not None:
            alive(error)

    return call


#: Whether this thread runs a split on a run's event loop thread (``_Runner._inline``): a flow run
#: inside that split then runs on a thread of its own, as it would from a worker thread's split.
_on_the_loop = threading.local()


class _Runner:
    """Drives one run of one execution: the scheduler's own state of it, and the run object
    (:class:`~laminar._runtime.run.Run`) it hands the lifecycle hooks."""

    def __init__(
        self,
        execution: Execution,
        *,
        parameters: dict[str, Any],
        resume: bool,
        reuse: bool = False,
        force: Iterable[str] = (),
    ) -> None:
        self.execution = execution
        self.checked: dict[
            str, asyncio.Future[bool]
        ] = {}  # whether each layer is reused (its record may be in flight)
        self.ran: set[str] = set()  # layers this run computed or reused (not kept from an earlier run)
        self.head_start: asyncio.Future[None] | None = None  # Reusing.look_ahead, while the run starts
        # Reusing.reuse_onward: layers checked on an upstream layer's thread, and what it found of each
        self.checked_onward: dict[str, tuple[int, asyncio.Future[None]] | None] = {}
        self.flow = execution.flow
        self.plan = self.flow.plan
        self.parameters = parameters
        self.resume = resume
        self.executor: Executor = self.flow.configuration.executor
        self.batch_seconds = batching.batch_seconds(self.executor)  # read before anything is written
        self.store: ExecutionStore = store_for(execution)
        self.run = Run(execution, self.store, resumed=resume, started=time.time())
        self.hook = self.flow.configuration.hook  # the plugin hook relay, handed down
        self.lease = Lease(self.flow.configuration.datastore, self.flow.name, execution.id)
        self.errors: list[BaseException] = []
        # With reuse on: the run's reuse of earlier executions (keys, what it read of them, checks)
        self.reusing = Reusing(self.run, force=force, errors=self.errors) if reuse else None
        self.states: dict[str, asyncio.Future[str]] = {}
        self.interrupted: str | None = None  # the signal that stopped the run
        self.stopping = asyncio.Event()  # set once nothing new may start: ends the retries' waits
        self.tidying: list[asyncio.Future[None]] = []  # deleting batches compacted into others
        self.records: LayerRecords  # the layer records written behind, made on the run's loop
        self.task: asyncio.Task[Any] | None = None  # main(), cancelled by a second signal
        self.running = 0  # calls to the executor under way (a split, or a batch)
        self.inline: SplitTask | None = None  # the split running on the loop's own thread now
        # The layers whose one split may run on the loop's own thread at a chain point (_inline).
        hooks = self.plan.layer_hooks
        self.inlinable = frozenset(
            name
            for name in (self.plan.order if runs_inline(self.executor) else ())
            if not hooks[(name, "submission")] and not hooks[(name, "retry")]
        )
        self.unended = {name for name in self.plan.order if name != "Parameters"}  # layers not ended yet
        self.layer_count = len(self.unended)
        self.started: set[str] = set()  # layers in a task of their own, or next in one (_every_layer)
        self.every_task_first = reuse  # every layer's task made at once (see _every_layer)
        self.downstream: dict[str, frozenset[str]] | None = (
            None  # then: each layer's dependents, direct or not
        )
        self.layer_tasks: list[asyncio.Future[None]] = []
        self.cancelling = False  # a second signal: every layer's task is being cancelled
        self.dependents: dict[str, list[str]] = {name: [] for name in self.plan.order}  # direct, in order
        for layer in self.plan.order:
            for needed in self.plan.dependencies[layer]:
                self.dependents[needed].append(layer)

    def _record_failed(self, error: BaseException) -> None:
        """A layer record written behind could not be written: the run fails, once, with its error."""
        if not any(error is each for each in self.errors):
            self._fail(error)

    async def _written(self, layers: Iterable[str]) -> bool:
        """Wait until the records of ``layers`` this run handed over are written; False (the run
        failed) if one could not be."""
        if await self.records.written(layers):
            return True
        failure = self.records.failure
        if failure is not None:
            self._record_failed(failure)
        return False

    async def _records_landed(self) -> None:
        """Before the run reports its end (and releases its lease), every layer record handed over is
        on the store; one that failed fails the run. Cancelled meanwhile (a second Ctrl-C), they
        still land first: what finished is kept. The store failing, those not written are dropped."""
        records = self.records
        try:
            if self.errors and isinstance(self.errors[0], DatastoreError):
                records.abandon()
                return
            try:
                failure = await records.drained()
            except asyncio.CancelledError:
                records.wait()
                raise
            if failure is not None:
                self._record_failed(failure)
        finally:
            records.close()

    async def main(self) -> None:
        self._size_default_executor()
        self.task = asyncio.current_task()
        with self._signals_handled(self.task):
            await self._main()

    def _size_default_executor(self) -> None:
        """Give the run's own loop a default executor as parallel as its datastore: on an object
        store a rerun's reused layers write their records at once (``asyncio.to_thread``), and
        asyncio's default (the CPUs + 4 threads, 6 on 2 cores) held them to 6 requests in flight. Its
        threads start only as work comes."""
        workers = self.flow.configuration.datastore.max_workers
        if workers > min(32, (os.cpu_count() or 1) + 4):
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="laminar-scheduler")
            )

    @contextlib.contextmanager
    def _signals_handled(self, task: asyncio.Task[Any] | None) -> Iterator[None]:
        """SIGINT and SIGTERM stop new work; running splits finish and finished ones are kept.

        A second signal cancels the running splits too. Only the main thread can take signals (a
        run inside a notebook's loop runs on a thread of its own and is stopped as before). A split
        running on the loop's own thread (see :meth:`_inline`) holds the loop: the first signal is
        heard once it returns, and a second one raises ``KeyboardInterrupt`` in it, from the handler.

        Installed with ``signal.signal``, waking the loop through a socket it reads (the signal's
        wake-up file), as ``loop.add_signal_handler`` does, without its check of the signal
        (``signal.valid_signals()``, a fraction of a millisecond each time, four times a run); the
        handlers and wake-up file there before are put back after.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()

        def interrupt(number: int) -> None:
            if self.interrupted is not None:
                self._stop_now()
                return
            self.interrupted = signal.Signals(number).name
            self.errors.insert(0, self.interruption())
            self._start_nothing_new()
            logger.warning(
                "%s: execution %s starts nothing new; running splits finish (again to stop them now)",
                self.interrupted,
                self.execution.id,
            )

        received: list[int] = []

        def handler(number: int, frame: object) -> None:
            received.append(number)
            if self.inline is not None and len(received) > 1:  # a split holds the loop's thread
                self.inline = None  # raised once, in that split: _inline() stops the run
                raise KeyboardInterrupt(f"stopped by a second {signal.Signals(number).name}")
            loop.call_soon_threadsafe(interrupt, number)

        woken, wakes = socket.socketpair()
        woken.setblocking(False)
        wakes.setblocking(False)
        try:
            loop.add_reader(woken.fileno(), _drain, woken)
        except NotImplementedError:  # pragma: no cover - a loop that reads no sockets (Windows' proactor)
            woken.close()
            wakes.close()
            yield
            return
        previous: dict[signal.Signals, Any] = {}
        try:
            wake_up_file = signal.set_wakeup_fd(wakes.fileno(), warn_on_full_buffer=False)
            try:
                for number in (signal.SIGINT, signal.SIGTERM):
                    previous[number] = signal.signal(number, handler)
                yield
            finally:
                for taken, before in previous.items():  # (None: not set from Python)
                    signal.signal(taken, signal.SIG_DFL if before is None else before)
                signal.set_wakeup_fd(wake_up_file)
        finally:
            loop.remove_reader(woken.fileno())
            woken.close()
            wakes.close()

    def _stop_now(self) -> None:
        """A second signal: the running splits are cancelled too (what finished is kept)."""
        logger.warning("stopping execution %s now: cancelling the running splits", self.execution.id)
        if self.task is not None:
            self.task.cancel()

    def interruption(self) -> Interrupted:
        return Interrupted(
            f"execution {self.execution.id} of flow {self.flow.name} was stopped by {self.interrupted}; what "
            f"finished is kept. Resume it with flow.execution({self.execution.id!r}).resume()"
        )

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        # What the records tell of a failed write reaches this runner through a weak reference: the
        # run object holds the records, and no reference cycle keeps the run's objects (its layers'
        # futures, readers, records) once the run is over, until the garbage collector's next pass.
        self.records = LayerRecords(self.store, self.loop, _weakly(self._record_failed))
        self.run.records = self.records
        # Nothing else runs yet: on a local disk, where its small writes cost less than a thread (the
        # first of asyncio's default executor, started and joined for this alone), on the loop.
        if self.reusing:  # parse the flow's code while the start's requests are on their way
            self.tidying.append(asyncio.ensure_future(asyncio.to_thread(self.reusing.fingerprint_ahead)))
        generations, record = await commit.write(self.store, self._check)
        if self.reusing and record is not None:  # reads only, while the lease is taken
            self.head_start = asyncio.ensure_future(asyncio.to_thread(self.reusing.look_ahead, record))
            self.tidying.append(self.head_start)  # awaited before the run ends, whatever ends it
        try:
            await commit.write(self.store, functools.partial(self._begin, generations, record))
        except BaseException:
            await self._looked_ahead()
            raise
        heartbeat = Heartbeat(self.lease, self._lease_lost_elsewhere).start()
        try:
            self.hook.laminar_execution_started(execution=self.execution, run=self.run)
            self.semaphore = asyncio.Semaphore(self.executor.window)
            loop = asyncio.get_running_loop()
            self.states = {name: loop.create_future() for name in self.plan.order}
            # whether each layer is reused, awaited by the layers reading it: with reuse on only
            self.checked = {name: loop.create_future() for name in self.plan.order} if self.reusing else {}
            self.all_ended = loop.create_future()  # set once no layer is left (``_ended``)
            try:
                await self.executor.start()
                try:
                    await self._every_layer()
                finally:
                    try:
                        await self._records_landed()
                    finally:
                        await self.executor.stop()
                        await asyncio.gather(*self.tidying)  # each is best effort: none raises
            except BaseException as failure:  # the executor failed to start or stop: that ends the run
                if not self.errors:
                    self._fail(failure)
                raise
            finally:  # every started execution gets its finished event, whatever ended it
                self.hook.laminar_execution_finished(
                    execution=self.execution, error=self.errors[0] if self.errors else None, run=self.run
                )
        finally:
            heartbeat.stop()
            if self.errors and isinstance(self.errors[0], DatastoreError):
                self.lease.forget()  # the store failed: it goes stale instead of costing another deadline
            else:
                try:
                    await commit.write(self.store, self.lease.release)
                except Exception as error:  # the run's own outcome matters more; the lease goes stale
                    logger.warning(
                        "could not release the lease on execution %s: %s", self.execution.id, error
                    )
        if self.errors:
            raise self.errors[0]

    def _lease_lost_elsewhere(self, error: LeaseLost) -> None:
        """On the heartbeat's thread: the lease was taken over (this scheduler was thought dead);
        the run stops, on its loop (once a split running on the loop's own thread has returned)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the run ended meanwhile
            self.loop.call_soon_threadsafe(self._lease_lost, error)

    def _lease_lost(self, error: LeaseLost) -> None:
        if self.lease.held is None:  # released meanwhile: the run ended
            return
        self.lease.forget()  # not ours to release any more
        self._fail(error)

    def _check(self) -> tuple[list[int], SplitRecord | None]:
        """Refuse a resume of a missing execution, or a run of an existing one; else return the
        lease's generations, listed at once with that check, and, if the run starts the execution,
        the parameters' split record, staged meanwhile (their blobs stored, nothing else written)."""
        with contextlib.ExitStack() as stack:
            if self.store.datastore.small_writes_inline:  # a local disk: a thread costs more
                exists, listed = self.store.metadata_exists(), self.lease.generations()
                staging = None
            else:  # one round trip, not two, and the parameters serialized meanwhile
                pool = stack.enter_context(
                    concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="laminar-start")
                )
                checking = pool.submit(self.store.metadata_exists)
                listing = pool.submit(self.lease.generations)
                staging = None if self.resume else pool.submit(self._staged_parameters)
                exists, listed = checking.result(), listing.result()
            if self.resume and not exists:
                raise FlowDefinitionError(
                    f"cannot resume execution {self.execution.id} of flow {self.flow.name}: it does not exist "
                    f"in {self.flow.configuration.datastore.url}"
                )
            if not self.resume and exists:
                raise FlowDefinitionError(
                    f"execution {self.execution.id} of flow {self.flow.name} already exists; resume it with "
                    f"flow.execution({self.execution.id!r}).resume(), or run with another id"
                )
            if self.resume:
                return listed, None
            return listed, self._staged_parameters() if staging is None else staging.result()

    def _staged_parameters(self) -> SplitRecord:
        """The parameters serialized (their blobs stored) as the Parameters layer's one split."""

        def unserializable(attribute: str, error: Exception) -> SerializationError:
            return SerializationError(
                f"parameter {attribute!r} of flow {self.flow.name} cannot be serialized: "
                f"{type(error).__name__}: {error}"
            )

        return self.store.stage_split(self.parameters, {}, on_error=unserializable)

    def _begin(self, generations: list[int], record: SplitRecord | None) -> None:
        """Take the lease (its ``generations`` listed by ``_check``) and store the Parameters layer
        (``record``, staged by ``_check``), then the metadata.

        The execution exists once its metadata does, and the metadata is written last: a run killed
        before it left nothing to resume (running it again starts afresh), and a resume always finds
        the parameters the execution was started with, which it never writes again. The Parameters
        record is written only once the lease is held: a run refused the lease (another is starting
        the same execution) writes nothing of it.
        """
        declared = self.flow.declared_parameters()
        declaration = declared.stored() if declared is not None and record is not None else None
        self.lease.acquire(generations)
        try:
            if record is not None:  # its one split (no shard) held in its record, as other such layers'
                self.store.write_record(
                    self.store.layer_record(
                        "Parameters", 1, batches={}, artifacts=record.archives, held={0: record}
                    )
                )
                self.store.write_metadata(parameters=declaration, dependencies=self._dependencies())
            elif self.store.record("Parameters") is None:
                raise MissingParameters(
                    f"execution {self.execution.id} of flow {self.flow.name} has no stored parameters (the record "
                    f"of its Parameters layer is missing or unreadable), so it cannot be resumed as it was "
                    "started; run the flow again"
                )
        except BaseException:
            self.lease.release()
            raise

    def _dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each layer but Parameters, in plan order, with the layers it depends on, in plan order."""
        order = self.plan.order
        position = {name: place for place, name in enumerate(order)}
        return {
            name: tuple(sorted(self.plan.dependencies[name] & position.keys(), key=position.__getitem__))
            for name in order
            if name != "Parameters"
        }

    # ---- layers -------------------------------------------------------------------------------
    async def _layer(self, name: str) -> None:
        """Run ``name``, then, in this same task, the layer after it that it alone held back (down a
        chain, each in turn), starting a task of its own for each other layer it let start."""
        following: str | None = name
        while following is not None:
            await self._one_layer(following)
            following = self._start_following(following)

    async def _one_layer(self, name: str) -> None:
        future = self.states[name]
        try:
            state = await self._run_layer(name)
        except asyncio.CancelledError:
            self._ended(name)
            if not future.done():
                future.set_result(CANCELLED)
            raise
        except BaseException as error:
            self._fail(error, f"while scheduling layer {name} of flow {self.flow.name}")
            state = FAILED
        finally:
            checked = self.checked.get(name)
            if checked is not None and not checked.done():
                checked.set_result(False)
        self._ended(name)
        if not future.done():
            future.set_result(state)

    def _ended(self, name: str) -> None:
        self.unended.discard(name)
        if not self.unended and not self.all_ended.done():
            self.all_ended.set_result(None)

    def _start(self, name: str) -> None:
        """Start ``name`` in a task of its own (which waits for the layers it reads, if any has not ended)."""
        self.started.add(name)
        self.layer_tasks.append(asyncio.ensure_future(self._layer(name)))

    def _start_following(self, name: str) -> str | None:
        """Once ``name`` has ended: start each layer after it that nothing holds back any more, and
        return the first of them, which the caller's task runs next: down a chain no task is made,
        and no turn of the loop taken, between one layer and the next. None if none is (or the run
        is being cancelled)."""
        if self.cancelling:
            return None
        ready = [
            layer
            for layer in self.dependents[name]
            if layer not in self.started
            and all(
                self.states[needed].done()
                for needed in self.plan.dependencies[layer]
                if needed != "Parameters"
            )
        ]
        if not ready:
            return None
        self.started.update(ready)
        for layer in ready[1:]:
            self._start(layer)
        return ready[0]

    async def _every_layer(self) -> None:
        """Run every layer until each has ended: in a task of its own each layer that reads no
        other (with reuse on, every layer: reuse checks a layer as soon as those it reads are found
        reused, before they end), and each other layer once those it reads have ended, in the task
        of one of them (``_start_following``). Not ``asyncio.gather``: its callback for each task that
        ends would be one more turn of the loop, which the next inline split would take first."""
        for name in self.plan.order:
            if name != "Parameters" and (
                self.every_task_first or self.plan.dependencies[name] <= {"Parameters"}
            ):
                self._start(name)
        if not self.unended:
            return
        try:
            await self.all_ended
        except asyncio.CancelledError:  # a second signal: every layer is cancelled, and ends, first
            self.cancelling = True  # (and none starts after this)
            await _cancelled(self.layer_tasks)
            raise

    async def _dependency_states(self, name: str) -> list[str]:
        """``_known_states`` once each layer ``name`` reads has ended."""
        for dependency in self.plan.dependencies[name] - {"Parameters"}:
            await self.states[dependency]
        states = self._known_states(name)
        assert states is not None  # (each has ended)
        return states

    def _known_states(self, name: str) -> list[str] | None:
        """The states of the layers ``name`` reads, by name, when each has ended (a layer started
        once those it reads ended: no coroutine to make and await, once a layer of a chain); None
        while one has not."""
        states = []
        for dependency in sorted(self.plan.dependencies[name]):
            if dependency == "Parameters":
                states.append(FINISHED)
                continue
            state = self.states[dependency]
            if not state.done():
                return None
            states.append(state.result())
        return states

    async def _run_layer(self, name: str) -> str:
        tried, early = (await self._reuse_early(name)) if self.reusing else (False, None)
        states = self._known_states(name)
        if states is None:
            states = await self._dependency_states(name)
        if early is not None:  # its record is being written beside its upstream layers'
            return await self._reused(name, early, states)
        if self.errors or FAILED in states or CANCELLED in states:
            return CANCELLED
        # A layer recorded before is kept only if every layer it reads was too: records of reused
        # layers are written together, so a crash may leave one whose upstream layer is not.
        if (
            self.resume
            and not any(d in self.ran for d in self.plan.dependencies[name])  # (no upstream layer ran)
            and await asyncio.to_thread(self._recorded, name)
        ):
            return FINISHED
        entry = self.plan.layer_hooks[(name, "entry")]
        if entry:
            if not await asyncio.to_thread(self._entry, name):
                return self._skipped(name, "an entry hook returned a falsy value")
        elif SKIPPED in states:
            skipped = sorted(
                d
                for d in self.plan.dependencies[name]
                if d != "Parameters" and self.states[d].result() == SKIPPED
            )
            return self._skipped(name, f"layer {', '.join(skipped)} it depends on was skipped")
        if self.reusing and not tried:
            await self._looked_ahead()
            found = await asyncio.to_thread(self.reusing.reuse, name)
            if found is not None:
                return await self._reused(name, self._adopting(name, found), states)
        self.ran.add(name)
        reader = self._reader(name)
        each = self.flow.registry[name].configuration.foreach
        try:
            grid = await asyncio.to_thread(foreach.grid, self.store, name, each) if each is not None else None
        except BaseException as error:
            self.hook.laminar_layer_started(layer=reader, splits=0, run=self.run)
            self.hook.laminar_layer_finished(layer=reader, splits=0, error=error, run=self.run)
            raise
        count = grid.splits if grid is not None else 1
        reused: reuse_index.Reused | None = None
        if (
            grid is not None
            and self.reusing
            and name in self.reusing.keys
            and self.flow.registry[name].configuration.reuse
        ):
            reused = await asyncio.to_thread(self.reusing.reuse_splits, name, grid)
        # Read before the layer-started event, whose status record reserves this run's numbers.
        first = await asyncio.to_thread(self._first_attempts, name) if self.resume else _first_try
        self.hook.laminar_layer_started(layer=reader, splits=count, run=self.run)
        try:
            await self._run_splits(name, reader, count, grid, first, reused)
        except BaseException as error:
            self.hook.laminar_layer_finished(layer=reader, splits=count, error=error, run=self.run)
            raise
        if self.errors:
            self.hook.laminar_layer_finished(layer=reader, splits=count, error=self.errors[0], run=self.run)
            return FAILED
        if self.reusing and name in self.reusing.keys and self.flow.registry[name].configuration.reuse:
            # The index entry names a written record, never one in flight.
            if not await self._written([name]):
                self.hook.laminar_layer_finished(
                    layer=reader, splits=count, error=self.errors[0], run=self.run
                )
                return FAILED
            await asyncio.to_thread(self.reusing.publish, name)
        self.hook.laminar_layer_finished(layer=reader, splits=count, error=None, run=self.run)
        return FINISHED

    async def _run_splits(
        self,
        name: str,
        reader: Layer,
        count: int,
        grid: foreach.Grid | None,
        first: Callable[[int], int],
        reused: reuse_index.Reused | None = None,
    ) -> None:
        """Run the splits of ``name`` not finished before (nor ``reused`` from another execution),
        each from its ``first`` attempt number; write the layer's record if they all finish."""
        if count == 1 and grid is None and reused is None and not self.resume:
            await self._run_one(name, reader)
            return
        earlier, held_before = (
            await asyncio.to_thread(self._earlier_batches, name) if self.resume else ({}, {})
        )
        earlier, superseded_before = commit.covering(earlier)  # a crash came after a compaction
        done = {index: record for batch in earlier.values() for index, record in batch.splits.items()}
        done.update(reused.records if reused is not None else {})
        pending = (i for i in range(count) if i not in done)
        log = SplitLog(self.store, name, fail=self._fail, splits=count - len(done))
        size = self._batch_size(name, count - len(done))

        async def one(index: int, attempt: int | None = None) -> None:
            outcome = await self._settled_split(name, reader, index, count, grid, first(index), attempt)
            if outcome is not None:
                log.add(index, outcome.record)
                if size is not None and outcome.ended > outcome.started > 0:
                    size.measured(1, outcome.ended - outcome.started)

        async def runner() -> None:
            while not self.errors:
                indices = list(itertools.islice(pending, size.size if size is not None else 1))
                if not indices:
                    return
                async with self.semaphore:
                    if len(indices) == 1:
                        await one(indices[0])
                    else:
                        assert size is not None
                        await self._batch(name, reader, indices, count, grid, first, log, size, one)

        window = self._window(name) if size is None else self.executor.batch_window
        held: dict[int, SplitRecord] = held_before  # the record written now holds them again
        try:
            if count == 1:  # one runner: awaited here, not as a task of its own (a chain's every layer)
                await runner()
            else:
                await asyncio.gather(*(runner() for _ in range(min(count, window))))
            if count == 1 and not done and not self.errors:  # the layer's record holds its one split
                held = log.take()
        finally:
            batches = await log.close()  # finished splits are kept even when others failed
        if self.errors:
            return
        batches = await log.compact()
        artifacts = log.artifacts.union(*(record.archives for record in done.values()))
        try:
            record = self.store.layer_record(
                name,
                count,
                batches={**{n: runs(batch.splits) for n, batch in earlier.items()}, **batches},
                artifacts=artifacts,
                borrowed=borrowing.fold(reused.places) if reused is not None else None,
                held=held,
                **(self.reusing.computed_with(name, batches, {**done, **held}) if self.reusing else {}),
            )
        except Exception as error:
            add_note(error, f"while writing the record of layer {name}")
            raise
        await self._hand_over(record)
        superseded = log.superseded + superseded_before
        if superseded:  # off the layer's way: the run waits for it only before it ends
            self.tidying.append(asyncio.ensure_future(self._discard_superseded(name, superseded)))

    async def _run_one(self, name: str, reader: Layer) -> None:
        """``_run_splits`` of a layer of one split and no ``ForEach`` in an execution's first run (a
        chain's every layer): its record holds the split (``Record.held``), so no split log is kept,
        unless the split holds a large shard, whose batch is written in chunks of its own."""
        if self.errors:
            return
        async with self.semaphore:
            outcome = await self._settled_split(name, reader, 0, 1, None, 0)
        if outcome is None or self.errors:
            return
        split = outcome.record
        held: dict[int, SplitRecord] = {0: split}
        batches: dict[str, Runs] = {}
        if not commit.holdable(split):
            log = SplitLog(self.store, name, fail=self._fail, splits=1)
            log.add(0, split)
            held, batches = {}, await log.close()
            if self.errors:
                return
        try:
            record = self.store.layer_record(
                name,
                1,
                batches=batches,
                artifacts=split.archives,
                held=held,
                **(self.reusing.computed_with(name, batches, held) if self.reusing else {}),
            )
        except Exception as error:
            add_note(error, f"while writing the record of layer {name}")
            raise
        await self._hand_over(record)

    async def _settled_split(
        self,
        name: str,
        reader: Layer,
        index: int,
        count: int,
        grid: foreach.Grid | None,
        first: int,
        attempt: int | None = None,
    ) -> SplitOutcome | None:
        """``_split``, its failure made the run's (``None`` then): a split not started because the
        run had failed or was stopped adds nothing; one not started otherwise fails the run."""
        try:
            return await self._split(name, reader, index, count, grid, first, attempt)
        except SplitNotStarted as error:
            if not self.errors:  # not asked for: the split is missing, so the run fails
                self._fail(error)
        except BaseException as error:
            self._fail(error)
        return None

    async def _hand_over(self, record: Record) -> None:
        """The record of a layer whose splits all finished: written behind in this process, where the
        layers reading it go on at once (see ``layer_records``); written before they start where its
        splits run in other processes, which read it from the store."""
        if self.executor.in_process:
            self.records.put(record)
            return
        try:
            await commit.write(self.store, functools.partial(self.store.write_record, record))
        except Exception as error:
            add_note(error, f"while writing the record of layer {record.layer}")
            raise

    async def _discard_superseded(self, name: str, superseded: list[str]) -> None:
        """Delete the batches compacted into one, once the record naming that one is on the store
        (before it, a resume lists them, and keeps the batch that covers them)."""
        if await self.records.written([name]):
            await asyncio.to_thread(self.store.discard_batches, name, superseded)

    # ---- reuse --------------------------------------------------------------------------------
    async def _looked_ahead(self) -> None:
        """Wait for ``Reusing.look_ahead``: the checks for reuse start once it is done with what it shares."""
        if self.head_start is not None:
            await self.head_start

    async def _reuse_early(self, name: str) -> tuple[bool, tuple[int, asyncio.Future[None]] | None]:
        """Once every layer ``name`` reads is found reused, check ``name`` for reuse too, without
        waiting for their records to be written: returns whether it was checked, and if it is
        reused, the write of its record, started. Down a chain of reused layers the records are then
        written together, not one round trip after another; a resume keeps a record only if the
        layers it reads were kept too, so one written before its upstream's (a crash between) is
        not trusted."""
        if not self.reusing or self.resume or self.plan.layer_hooks[(name, "entry")]:
            return False, None
        await self._looked_ahead()
        for dependency in self.plan.dependencies[name]:
            if dependency != "Parameters" and not await self.checked[dependency]:
                return False, None
        if self.errors:
            return False, None
        if name in self.checked_onward:  # checked on the thread of a layer it reads
            return True, self.checked_onward.pop(name)
        found = await asyncio.to_thread(self.reusing.reuse_onward, name)
        mine = None
        for layer, result in found.items():  # ``name``, then the layers after it, in plan order
            adopted = None if result is None else self._adopting(layer, result)
            if layer == name:
                mine = adopted
            else:
                self.checked_onward[layer] = adopted
        return True, mine

    def _adopting(self, name: str, found: tuple[int, str]) -> tuple[int, asyncio.Future[None]]:
        """``name`` is reused from execution ``found[1]``: the layers reading it may be checked now;
        returns its number of splits and the write of its record, started."""
        self.checked[name].set_result(True)
        splits, execution = found
        return splits, asyncio.ensure_future(
            asyncio.to_thread(reuse_index.adopt, self.store, name, execution, self.run.explanations[name][1])
        )

    async def _reused(self, name: str, reused: tuple[int, asyncio.Future[None]], states: list[str]) -> str:
        """Finish ``name``, reused: once its record is written, its started and finished events."""
        splits, write = reused
        self.ran.add(name)
        await write
        if self.errors or FAILED in states or CANCELLED in states:
            return CANCELLED
        reader = self._reader(name)
        self.hook.laminar_layer_started(layer=reader, splits=splits, run=self.run)
        self.hook.laminar_layer_finished(layer=reader, splits=splits, error=None, run=self.run)
        return FINISHED

    def _window(self, name: str) -> int:
        """Splits of ``name`` in flight at once: the executor's window, or only ``concurrency`` for a
        layer with submission or retry hooks, which then run as each split is about to start."""
        hooked = self.plan.layer_hooks[(name, "submission")] or self.plan.layer_hooks[(name, "retry")]
        return self.executor.concurrency if hooked else self.executor.window

    def _skipped(self, name: str, reason: str) -> str:
        self.hook.laminar_layer_skipped(layer=self._reader(name), reason=reason, run=self.run)
        return SKIPPED

    def _recorded(self, name: str) -> bool:
        """Whether resume may skip ``name``: its record and split batches exist and read back whole.

        Downstream layers read those batches anyway (and they stay cached), so checking them costs
        nothing extra; a damaged one makes the layer run again rather than fail its readers later.
        """
        try:
            if self.store.record(name) is None:
                return False
            self.store.finished_splits(name)  # its own batches, and those it borrows from
            return True
        except IntegrityError as error:
            logger.warning("layer %s of execution %s runs again: %s", name, self.execution.id, error)
            return False

    def _earlier_batches(self, name: str) -> tuple[dict[str, Any], dict[int, SplitRecord]]:
        """The split batches a resume keeps, and the splits of those the layer's record held itself
        (``Record.held``: no file has them, so the record written now must hold them again); a
        damaged one makes the layer's splits all run again."""
        try:
            batches = self.store.finished_batches(name)
            record = self.store.record(name)
        except IntegrityError as error:
            logger.warning(
                "the splits of layer %s of execution %s run again: %s", name, self.execution.id, error
            )
            return {}, {}
        return batches, dict(record.held) if record is not None else {}

    def _first_attempts(self, name: str) -> Callable[[int], int]:
        """The number of each split's first attempt in this run: after every attempt an earlier run
        of the execution made of it, so no attempt's record or log is overwritten or renumbered."""
        record = self.store.layer_status(name)
        if record is not None:
            return record.first_attempts()
        # No run of the layer recorded its status, yet one may have run splits (its scheduler died
        # before the first record): their logs say which attempt numbers were used.
        where = (self.store.datastore, self.flow.name, self.execution.id, name)
        logged = {
            split: max(logs.logged_attempts(*where, split), default=-1) + 1
            for split in logs.logged_splits(*where)
        }
        return lambda index: logged.get(index, 0)

    def _entry(self, name: str) -> bool:
        layer = LayerContext(self.execution, name, store=self.store).bind()
        return all(
            hook_calls.call(hook, layer, self._reader) for hook in self.plan.layer_hooks[(name, "entry")]
        )

    def _reader(self, name: str) -> Layer:
        return LayerContext.reader(self.execution, name, store=self.store)

    # ---- splits -------------------------------------------------------------------------------
    def _task(self, name: str, index: int, count: int, grid: foreach.Grid | None, attempt: int) -> SplitTask:
        return SplitTask(
            flow=self.flow,
            execution=self.execution.id,
            layer=name,
            index=index if grid is not None else None,
            splits=count if grid is not None else None,
            attempt=attempt,
            resumed=self.execution.retry,
            bindings=grid.bindings(index) if grid is not None else {},
        )

    async def _split(
        self,
        name: str,
        reader: Layer,
        index: int,
        count: int,
        grid: foreach.Grid | None,
        first: int,
        attempt: int | None = None,
    ) -> SplitOutcome:
        """Run split ``index`` as attempt ``first`` (or ``attempt``, a retry of a split that failed in
        a batch), then retry it as the next... while its ``Retry`` allows: each run gives a split
        ``attempts`` tries, wherever its numbering starts."""
        configuration = self.flow.registry[name].configuration
        task = self._task(name, index, count, grid, first if attempt is None else attempt)
        submission = self.plan.layer_hooks[(name, "submission")]
        retry_hooks = self.plan.layer_hooks[(name, "retry")]
        context: LayerContext | None = None
        if submission or retry_hooks:
            task.configuration = copy.deepcopy(configuration)  # changes apply to this split only
            context = LayerContext(
                self.execution,
                name,
                index=task.index,
                splits=task.splits,
                attempt=task.attempt,
                configuration=task.configuration,
                store=self.store,
            )
        layer = context.bind() if context is not None else None

        async def start(found: tuple[LayerHook, ...]) -> list[Any]:
            if not found or layer is None:
                return []
            return await asyncio.to_thread(hook_calls.start, found, layer, self._reader)

        def finished(
            error: BaseException | None, started: float, ended: float, caught: Mapping[str, str] | None = None
        ) -> None:
            self._split_finished(reader, task, error, started, ended, caught)

        while True:
            running = (await start(submission)) if submission else []
            self.hook.laminar_split_started(
                layer=reader, index=task.index, attempt=task.attempt, run=self.run
            )
            handed = time.time()
            try:
                outcome = await self._submit(task)
            except Exception as error:
                started, ended = tracebacks.ran(error) or (handed, time.time())
                if running:
                    await asyncio.to_thread(hook_calls.finish, running, error)
                if (
                    isinstance(error, ExecutorContractError)
                    or task.attempt - first + 1 >= configuration.retry.attempts
                ):
                    add_note(error, f"raised by {task.describe()}")
                    finished(error, started, ended)
                    raise
                task.attempt += 1
                if context is not None:
                    context.attempt = task.attempt
                self.hook.laminar_split_retried(
                    layer=reader,
                    index=task.index,
                    attempt=task.attempt,
                    error=error,
                    started=started,
                    ended=ended,
                    run=self.run,
                )
                retrying = await start(retry_hooks)
                with contextlib.suppress(asyncio.TimeoutError):  # the delay, or less if the run fails
                    await asyncio.wait_for(
                        self.stopping.wait(), configuration.retry.wait(task.attempt - first)
                    )
                if retrying:
                    await asyncio.to_thread(hook_calls.finish, retrying)
                if self.errors:  # the run failed or was stopped meanwhile: this attempt never starts
                    raise SplitNotStarted.of(task) from error
                continue
            except BaseException as error:  # cancelled (a second Ctrl-C, a timeout): ends the attempt
                finished(error, handed, time.time())
                raise
            if running:
                await asyncio.to_thread(hook_calls.finish, running)
            finished(None, outcome.started or handed, outcome.ended or time.time(), _caught(outcome))
            return outcome

    def _batch_size(self, name: str, splits: int) -> batching.BatchSize | None:
        """How many splits of ``name`` go to the executor in one call, growing from one as they are
        measured; ``None`` when they go one at a time: the executor does not take batches, or a
        timeout or the layer's submission or retry hooks apply to each split as it starts."""
        seconds = self.batch_seconds
        hooked = self.plan.layer_hooks[(name, "submission")] or self.plan.layer_hooks[(name, "retry")]
        if seconds is None or splits < 2 or hooked or self.executor.timeout is not None:
            return None
        return batching.BatchSize(seconds, runners=min(splits, self.executor.batch_window))

    async def _batch(
        self,
        name: str,
        reader: Layer,
        indices: list[int],
        count: int,
        grid: foreach.Grid | None,
        first: Callable[[int], int],
        log: SplitLog,
        size: batching.BatchSize,
        one: Callable[[int, int | None], Awaitable[None]],
    ) -> None:
        """Run the splits ``indices`` as one batch (``Executor.run_batch``), each from its ``first``
        attempt: each split gets the hook calls and record it would get on its own; one that fails
        is retried on its own while its ``Retry`` allows, one not started is handed over again."""
        tasks = [self._task(name, index, count, grid, first(index)) for index in indices]
        for task in tasks:
            self.hook.laminar_split_started(
                layer=reader, index=task.index, attempt=task.attempt, run=self.run
            )
        handed = time.time()
        self.running += 1
        try:
            results = await self.executor.run_batch(tasks)
            if len(results) != len(tasks) or not all(
                result is None or isinstance(result, (SplitOutcome, BaseException)) for result in results
            ):
                raise ExecutorContractError(
                    f"executor {self.executor!r} returned {results!r} for a batch of {len(tasks)} splits of layer "
                    f"{name}; an executor's run_batch() must return one SplitOutcome, exception or None per split"
                )
        except BaseException as error:  # the executor failed, or the batch was cancelled: ends each split
            ended = time.time()
            for task in tasks:
                self._split_finished(reader, task, error, handed, ended)
            raise
        finally:
            self.running -= 1
        attempts = self.flow.registry[name].configuration.retry
        again: list[tuple[int, int | None]] = []  # splits to run on their own: not started, or retried
        ran, seconds = 0, 0.0
        for index, task, result in zip(indices, tasks, results, strict=True):
            if result is None:  # its worker was lost before it started: the same attempt again
                size.lost()
                again.append((index, None))
            elif isinstance(result, SplitOutcome):
                self._split_finished(
                    reader, task, None, result.started or handed, result.ended or time.time(), _caught(result)
                )
                log.add(index, result.record)
                if result.ended > result.started > 0:
                    ran, seconds = ran + 1, seconds + result.ended - result.started
            else:
                started, ended = tracebacks.ran(result) or (handed, time.time())
                retried = (
                    isinstance(result, Exception)
                    and not isinstance(result, ExecutorContractError)
                    and task.attempt - first(index) + 1 < attempts.attempts
                )
                if not retried:  # as on its own: the layer's error, or not started (the run had failed)
                    if isinstance(result, Exception):
                        add_note(result, f"raised by {task.describe()}")
                    self._split_finished(reader, task, result, started, ended)
                    if not isinstance(result, SplitNotStarted) or not self.errors:
                        self._fail(result)
                    continue
                self.hook.laminar_split_retried(
                    layer=reader,
                    index=task.index,
                    attempt=task.attempt + 1,
                    error=result,
                    started=started,
                    ended=ended,
                    run=self.run,
                )
                again.append((index, task.attempt + 1))
        if ran:
            size.measured(ran, seconds)
        for index, attempt in again:
            if self.errors:
                break
            if attempt is not None:  # the retry's delay, or less if the run fails
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), attempts.wait(attempt - first(index)))
                if self.errors:  # the run failed or was stopped meanwhile: this attempt never starts
                    break
            await one(index, attempt)

    def _split_finished(
        self,
        reader: Layer,
        task: SplitTask,
        error: BaseException | None,
        started: float,
        ended: float,
        caught: Mapping[str, str] | None = None,
    ) -> None:
        self.hook.laminar_split_finished(
            layer=reader,
            index=task.index,
            attempt=task.attempt,
            error=error,
            started=started,
            ended=ended,
            caught=caught,
            run=self.run,
        )

    async def _submit(self, task: SplitTask) -> SplitOutcome:
        if task.layer in self.inlinable and (task.splits or 1) == 1 and not self.running:
            # First what is queued on the loop (a signal heard, a lease lost, splits handed back):
            # down a chain the layers would otherwise follow one another without the loop's turn.
            if _queued(self.loop):
                await asyncio.sleep(0)
            if self.errors:  # the run failed or was stopped meanwhile: this split never starts
                raise SplitNotStarted.of(task)
            if self._at_a_chain_point(task.layer):
                return self._inline(task)
        timeout = self.executor.timeout
        self.running += 1
        try:
            if timeout is None or self.executor.times_itself:
                outcome = await self.executor.run(task)
            else:
                running = asyncio.ensure_future(self.executor.run(task))
                try:
                    done, _ = await asyncio.wait({running}, timeout=timeout)
                except BaseException:
                    running.cancel()
                    raise
                if not done:  # (a TimeoutError the layer raised itself is its own error, not a timeout)
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
                    raise self.executor.timed_out(task, timeout)
                outcome = running.result()
        finally:
            self.running -= 1
        if not isinstance(outcome, SplitOutcome):
            raise ExecutorContractError(
                f"executor {self.executor!r} returned {outcome!r} for {task.describe()}; an executor's run() "
                "must return the SplitOutcome that laminar._runtime.split.run_split returned"
            )
        return outcome

    def _at_a_chain_point(self, name: str) -> bool:
        """Whether nothing else of the run can go on while ``name``'s one split runs: no other split
        runs, and every layer not ended but ``name`` depends on it, directly or not.

        A layer's task is made once those it reads have ended (``_start_following``), so every layer
        not ended nor started waits, directly or not, for one started and not ended: if ``name`` is
        the only one of those, it is a chain point. With every task made at once, its dependents are
        looked up (worked out once, on the first call)."""
        if self.running:
            return False
        if not self.every_task_first:
            return len(self.started) - (self.layer_count - len(self.unended)) == 1  # (ended: started)
        if self.downstream is None:
            self.downstream = _downstream(self.plan.order, self.plan.dependencies)
        others = len(self.unended) - 1  # (name is among them, and not among its dependents)
        return others == 0 or (
            others <= len(below := self.downstream[name]) and len(self.unended & below) == others
        )

    def _inline(self, task: SplitTask) -> SplitOutcome:
        """Run ``task`` here, on the loop's own thread, at a chain point: handing a split to a worker
        thread and back costs more than a small layer's own work, and nothing else could run meanwhile.

        The split sees what a worker thread's would: no running event loop (``asyncio.run`` works in
        it), and a flow it runs runs on a thread of its own; and a copy of the scheduler's context
        variables, so what it sets is not seen by the layers the same task runs after it. The lease's heartbeat beats on a thread
        of its own; a first signal is heard once the split returns, a second one raises
        ``KeyboardInterrupt`` in it (from the handler), which stops the run as a second signal does.
        """
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        _on_the_loop.split = True
        self.inline = task
        try:
            return contextvars.copy_context().run(run_split, task, self.execution)
        except KeyboardInterrupt as error:
            if self.inline is not None:  # the layer's own: its error, as on a worker thread
                raise
            self._stop_now()  # the signal handler raised it: a second signal
            raise asyncio.CancelledError() from error
        finally:
            self.inline = None
            _on_the_loop.split = False
            asyncio.events._set_running_loop(loop)

    def _fail(self, error: BaseException, note: str | None = None) -> None:
        if note:
            add_note(error, note)
        self.errors.append(error)
        self._start_nothing_new()

    def _start_nothing_new(self) -> None:
        """The run failed or is stopping: no retry starts, and the executor starts none of the
        splits it still queues."""
        self.stopping.set()
        try:
            self.executor.cancel_queued()
        except Exception as error:  # the run's own error matters more; queued splits then run
            logger.warning("executor %r could not cancel its queued splits: %s", self.executor, error)
