"""``process`` — run splits in worker processes on this machine, reusing them across splits.

Worker processes start on demand (up to ``concurrency``) and live for the execution. They are forked
from a template (``start_method="forkserver"``, see ``forking.py``) that is itself forked from the
scheduler's process before the run starts (so the flow's modules are imported already), or, where that
fork is unsafe, started as a new interpreter that imports them once; or they are started as new
interpreters (``"spawn"``, and where forking is unsafe). A new
worker is sent the flow as soon as it starts, so it has the flow's modules (pandas, torch...) before
its first split, and a split goes to whichever worker is ready first: a warm worker that finishes
its split takes the next rather than leave it waiting for a new one's imports. A split that passes ``timeout`` has its worker
killed; a worker that dies mid-split fails that split with :class:`~laminar.errors.WorkerLost`
(retried per the layer's ``Retry``) and is replaced.

Each worker runs in a session of its own, so the signals a terminal sends its foreground job (Ctrl-C's
SIGINT to every process of it) reach only the scheduler, which decides: running splits finish, as on
the Thread executor, instead of each worker raising ``KeyboardInterrupt`` in the split it runs. The
scheduler stops workers itself (at the end of the execution, or killing them on a second signal or a
timeout); a kill ends the worker's whole session, processes the layer started included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import cloudpickle

from laminar._runtime import environment, wire
from laminar._runtime.executor import Executor, SplitNotStarted
from laminar._runtime.forking import ForkedProcess, ForkedTemplate, WorkerTemplate, read_pipe, unsafe_to_fork
from laminar._runtime.shipping import FlowPacker, PackedFlow, without_flow
from laminar._runtime.task import SplitOutcome, SplitTask
from laminar.errors import ConfigurationError, LaminarError, WorkerLost
from laminar.exceptions import LayerError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How workers start when neither ``start_method`` nor this variable says.
START_METHOD = "LAMINAR_PROCESS_START"
START_METHODS = ("forkserver", "spawn")


def default_start_method() -> str:
    """``forkserver`` where a forked process may go on without ``exec`` (not on macOS, whose system
    libraries do not survive it), else ``spawn``."""
    return "spawn" if sys.platform == "darwin" or not hasattr(os, "fork") else "forkserver"


class WorkerProcess(Protocol):
    """What a worker's process gives: an ``asyncio.subprocess.Process``, or a forked one."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...

    async def wait(self) -> int: ...


class RemoteError(LaminarError, LayerError, RuntimeError):
    """A layer raised an exception that could not be sent back from its worker; this describes it."""


class _Worker:
    """One worker process and the pipes to it."""

    def __init__(
        self,
        process: WorkerProcess,
        results: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
    ) -> None:
        self.process = process
        self.results = results
        self.transport = transport
        self.flow_token: str | None = None

    @classmethod
    async def spawn(cls) -> _Worker:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **environment.WORKER_ENVIRONMENT}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "laminar._runtime.worker", str(write_fd),
            stdin=asyncio.subprocess.PIPE, pass_fds=(write_fd,), env=env,
            start_new_session=True,  # the terminal's signals are the scheduler's to act on
        )  # fmt: skip
        os.close(write_fd)
        worker = cls(process, *await read_pipe(read_fd))
        worker.send((sys.path, os.getcwd()))
        return worker

    @classmethod
    async def fork(cls, template: WorkerTemplate) -> _Worker | None:
        """A worker forked from ``template`` (its path and directory are the template's); ``None`` if
        the template forks none."""
        return await cls._of(await template.fork())

    @classmethod
    async def unclaimed(cls, template: WorkerTemplate) -> _Worker | None:
        """The worker ``template`` forked ahead of the run's first split, if no split took it."""
        return await cls._of(await template.unclaimed())

    @classmethod
    async def _of(cls, forked: tuple[ForkedProcess, int] | None) -> _Worker | None:
        if forked is None:
            return None
        process, results = forked
        return cls(process, *await read_pipe(results))

    def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(wire.encode(message))

    async def _reply(self) -> Any:
        """The worker's next answer; ``EOFError`` once it has exited and left no answer unread.

        A worker that has exited can no longer be written to, but what it answered before is still
        in the pipe: a batch's answers read late (a busy event loop) are its finished splits, and
        only the split it was running when it died is lost.
        """
        assert self.process.stdin is not None
        with contextlib.suppress(ConnectionError):  # it has exited: its answers are read all the same
            await self.process.stdin.drain()
        try:
            header = await self.results.readexactly(wire.HEADER.size)
            payload = await self.results.readexactly(wire.HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            raise EOFError from None
        return cloudpickle.loads(payload)

    async def warm(self, flow: PackedFlow) -> None:
        """Install ``flow`` before a split needs it: the worker imports the flow's modules now.

        Nothing is raised: a flow that does not install (or a worker that died) is left to the
        split that takes this worker, which sends the flow again and meets the error as before.
        """
        self.send((flow.token, flow.payload, None))
        with contextlib.suppress(EOFError):
            kind, _, _ = await self._reply()
            if kind == "ok":
                self.flow_token = flow.token

    async def run(self, flow: PackedFlow, task: SplitTask) -> SplitOutcome:
        first = self.flow_token != flow.token
        self.send((flow.token, flow.payload if first else None, without_flow(task)))
        self.flow_token = flow.token
        try:
            kind, value, text = await self._reply()
        except EOFError:
            code = await self.process.wait()
            raise WorkerLost(
                f"the worker process (pid {self.process.pid}) running {task.describe()} exited with code {code} "
                "before it finished"
            ) from None
        if kind == "ok":
            outcome: SplitOutcome = value
            return outcome
        error: BaseException = cloudpickle.loads(value) if value is not None else RemoteError(text)
        raise error

    async def run_batch(
        self, flow: PackedFlow, tasks: Sequence[SplitTask]
    ) -> list[SplitOutcome | BaseException | None]:
        """Run ``tasks`` one after another; each answer comes back as its split ends. If the worker
        dies, the split it was running fails with ``WorkerLost`` and those after it did not start."""
        first = self.flow_token != flow.token
        self.send((flow.token, flow.payload if first else None, [without_flow(task) for task in tasks]))
        self.flow_token = flow.token
        results: list[SplitOutcome | BaseException | None] = []
        for task in tasks:
            try:
                kind, value, text = await self._reply()
            except EOFError:
                code = await self.process.wait()
                results.append(
                    WorkerLost(
                        f"the worker process (pid {self.process.pid}) running {task.describe()} exited with "
                        f"code {code} before it finished"
                    )
                )
                return results + [None] * (len(tasks) - len(results))
            if kind == "ok":
                results.append(value)
            else:
                results.append(cloudpickle.loads(value) if value is not None else RemoteError(text))
        return results

    def kill(self) -> None:
        """Kill the worker and every process of its session (what its layer started, too)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # it has just exited
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:  # forked a moment ago: not yet in a session of its own
                    os.kill(self.process.pid, signal.SIGKILL)
        self.transport.close()

    async def close(self) -> None:
        """End the worker (EOF on its stdin), killing it if it does not exit, and reap it."""
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except asyncio.TimeoutError:
            self.kill()
            await self.process.wait()
        self.transport.close()


class _NotStarted(Exception):
    """Given to the splits waiting for a worker when the run fails or is stopped."""


class Process(Executor):
    """Runs each split in a worker process on this machine. The default executor."""

    names = ("process", "local")
    batch_seconds = 0.02

    @property
    def batch_window(self) -> int:
        return self.concurrency * 2  # a worker finishing a batch finds the next one waiting

    def __init__(
        self, *, concurrency: int | None = None, timeout: float | None = None, start_method: str | None = None
    ) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        chosen = start_method or os.environ.get(START_METHOD) or default_start_method()
        if chosen not in START_METHODS:
            where = "start_method" if start_method else START_METHOD
            raise ConfigurationError(
                f"{where} of the process executor must be 'forkserver' or 'spawn', got {chosen!r}"
            )
        self.start_method = chosen
        self._forked: ForkedTemplate | None = None  # forked before the run began, for start() to adopt
        self._reset()

    def _reset(self) -> None:
        self._idle: list[_Worker] = []  # ready, the most recently used last
        self._all: list[_Worker] = []  # every process started, to reap at stop
        self._usable = 0  # workers started or starting, and not lost since
        self._waiting: deque[asyncio.Future[_Worker]] = deque()  # splits waiting for a worker
        self._starting: set[asyncio.Task[None]] = set()
        self._packer = FlowPacker()
        self._template: WorkerTemplate | None = None
        self._template_start: asyncio.Future[WorkerTemplate | None] | None = None  # a new interpreter's
        self._cancelled = False  # the run failed or was stopped: start nothing still waiting

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        """Fork the template from this process (``forkserver``), while it has no thread that a fork
        would leave behind: the template has the flow's modules as they are imported here."""
        self._forked = self._fork_template()
        try:
            yield
        finally:
            forked, self._forked = self._forked, None
            if forked is not None:  # the run ended before the executor started
                forked.discard()

    def _fork_template(self) -> ForkedTemplate | None:
        if self.start_method != "forkserver":
            return None
        why = unsafe_to_fork()
        if why is not None:
            logger.debug("the process executor's worker template starts as a new interpreter that imports "
                         "the flow's modules, not as a fork of this process: %s", why)  # fmt: skip
            return None
        try:
            return ForkedTemplate.fork()
        except OSError as error:
            logger.warning("the process executor's worker template starts as a new interpreter: this process "
                           "could not fork (%s)", error)  # fmt: skip
            return None

    async def start(self) -> None:
        """Take up the template workers are forked from (``forkserver``) that was forked from this
        process before the run began. Where that fork was unsafe, the template is a new interpreter,
        started when the first split needs a worker (:meth:`_started_template`): a run whose layers
        are all reused starts none, instead of one importing Laminar on the CPUs its checks use."""
        self._reset()
        forked, self._forked = self._forked, None
        if forked is not None:
            self._template = await WorkerTemplate.adopt(forked)

    async def _started_template(self) -> WorkerTemplate | None:
        """The template to fork workers from: the one forked before the run, else a new interpreter,
        started once, by the first split that needs a worker (the others wait for the same one)."""
        if self._template is not None or self.start_method != "forkserver":
            return self._template
        if self._template_start is None:
            self._template_start = asyncio.ensure_future(self._start_template())
        return await asyncio.shield(self._template_start)  # a template once started is always closed

    async def _start_template(self) -> WorkerTemplate | None:
        try:
            self._template = await WorkerTemplate.start()
        except OSError as error:
            logger.warning("the process executor's worker template did not start (%s): workers start "
                           "as new interpreters", error)  # fmt: skip
        return self._template

    async def _acquire(self, flow: PackedFlow) -> _Worker:
        """A ready worker: an idle one, else whichever is ready first of those busy and one started
        now (if fewer than ``concurrency`` are usable)."""
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            self._usable -= 1  # it died idle
        if self._usable < self.concurrency:
            self._usable += 1
            starting = asyncio.ensure_future(self._start(flow))
            self._starting.add(starting)
            starting.add_done_callback(self._starting.discard)
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:  # a worker handed over as this split timed out goes back
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise

    async def _start(self, flow: PackedFlow) -> None:
        """Start a worker, install ``flow`` in it, and hand it on; a failure to start goes to the
        split that has waited longest, as its own error."""
        template = await self._started_template()
        if template is not None:
            await template.preload(flow)  # not shielded: an execution that ends does not wait
        spawning = asyncio.ensure_future(self._new_worker())
        try:
            worker = await asyncio.shield(spawning)  # a process once made is always reaped
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._all.append(await spawning)
            raise
        except Exception as error:
            self._usable -= 1
            self._fail(error)
            return
        self._all.append(worker)
        try:
            await worker.warm(flow)
        except asyncio.CancelledError:  # the execution ended first: its imports are not waited for
            worker.kill()
            raise
        self._release(worker)

    async def _new_worker(self) -> _Worker:
        """A worker forked from the template, or else one started as a new interpreter."""
        template = self._template
        if template is not None:
            worker = await _Worker.fork(template)
            if worker is not None:
                return worker
        return await _Worker.spawn()

    def _waiter(self) -> asyncio.Future[_Worker] | None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not cancelled (a timeout, an abandoned run)
                return waiter
        return None

    def _release(self, worker: _Worker) -> None:
        """Hand ``worker`` to the split that has waited longest, or keep it idle."""
        waiter = self._waiter()
        if waiter is None:
            self._idle.append(worker)
        else:
            waiter.set_result(worker)

    def _fail(self, error: BaseException) -> None:
        waiter = self._waiter()
        if waiter is not None:
            waiter.set_exception(error)

    def cancel_queued(self) -> None:
        """Start none of the splits waiting for a worker (with ``batch_window`` above the workers, a
        batch waits for one): each waiting ``run`` raises SplitNotStarted, each waiting batch comes
        back as not started. Splits running in workers finish as usual."""
        self._cancelled = True
        while (waiter := self._waiter()) is not None:
            waiter.set_exception(_NotStarted())

    async def _acquire_unless_cancelled(self, flow: PackedFlow) -> _Worker | None:
        """A ready worker, or None once the run has failed or was stopped (``cancel_queued``)."""
        if self._cancelled:
            return None
        try:
            worker = await self._acquire(flow)
        except _NotStarted:
            return None
        if self._cancelled:  # handed over as the run stopped: it goes back unused
            self._release(worker)
            return None
        return worker

    async def run(self, task: SplitTask) -> SplitOutcome:
        flow = self._packer.pack(task.flow)
        worker = await self._acquire_unless_cancelled(flow)
        if worker is None:
            raise SplitNotStarted.of(task)
        return await self._in_worker(worker, worker.run(flow, task))

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        """The batch runs in one worker, its splits one after another."""
        flow = self._packer.pack(tasks[0].flow)
        worker = await self._acquire_unless_cancelled(flow)
        if worker is None:
            return [None] * len(tasks)  # not started
        return await self._in_worker(worker, worker.run_batch(flow, tasks))

    async def _in_worker(self, worker: _Worker, work: Awaitable[T]) -> T:
        """Await ``work``, running in ``worker``, then settle the worker: abandoned (a timeout, the
        run stopped), it is killed; else it goes to the next split, unless its process ended in the
        work (``WorkerLost``), when it is counted lost and ``stop()`` reaps it."""
        try:
            result = await work
        except asyncio.CancelledError:
            self._usable -= 1
            worker.kill()
            raise
        except BaseException:
            self._settle(worker)
            raise
        self._settle(worker)
        return result

    def _settle(self, worker: _Worker) -> None:
        if worker.process.returncode is not None:
            self._usable -= 1
        else:
            self._release(worker)

    async def stop(self) -> None:
        starting = list(self._starting)
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        workers, self._all, self._idle = self._all, [], []
        if self._template is not None:  # the worker forked ahead, if no split took it up
            unclaimed = await _Worker.unclaimed(self._template)
            workers += [unclaimed] if unclaimed is not None else []
        await asyncio.gather(*(worker.close() for worker in workers))
        if self._template_start is not None:  # a template being started is closed once it is
            await asyncio.gather(self._template_start, return_exceptions=True)
        template, self._template = self._template, None
        if template is not None:  # after its workers: it tells when they end
            await template.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "timeout": self.timeout, "start_method": self.start_method}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._forked = None
        self._reset()
