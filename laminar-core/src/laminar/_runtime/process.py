"""``process`` — run splits in worker processes on this machine, reusing them across splits.

Worker processes start on demand (up to ``concurrency``) and live for the execution, so interpreter
start-up is paid per worker, not per split. A new worker is sent the flow as soon as it starts, so
it imports the flow's modules (pandas, torch...) before its first split, and a split goes to
whichever worker is ready first: a warm worker that finishes its split takes the next rather than
leave it waiting for a new one's second of imports. A split that passes ``timeout`` has its worker
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
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

import cloudpickle

from laminar._runtime import environment, wire
from laminar._runtime.executor import Executor
from laminar._runtime.shipping import FlowPacker, PackedFlow, without_flow
from laminar._runtime.task import SplitOutcome, SplitTask
from laminar.errors import LaminarError, WorkerLost
from laminar.exceptions import LayerError


class RemoteError(LaminarError, LayerError, RuntimeError):
    """A layer raised an exception that could not be sent back from its worker; this describes it."""


class _Worker:
    """One worker process and the pipes to it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
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
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 30)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        worker = cls(process, reader, transport)
        worker.send((sys.path, os.getcwd()))
        return worker

    def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(wire.encode(message))

    async def _reply(self) -> Any:
        """The worker's answer to what was sent; ``EOFError`` if it exited first."""
        assert self.process.stdin is not None
        try:
            await self.process.stdin.drain()
            header = await self.results.readexactly(wire.HEADER.size)
            payload = await self.results.readexactly(wire.HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
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
                os.killpg(self.process.pid, signal.SIGKILL)
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


class Process(Executor):
    """Runs each split in a worker process on this machine. The default executor."""

    names = ("process", "local")
    batch_seconds = 0.02

    @property
    def batch_window(self) -> int:
        return self.concurrency * 2  # a worker finishing a batch finds the next one waiting

    def __init__(self, *, concurrency: int | None = None, timeout: float | None = None) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self._reset()

    def _reset(self) -> None:
        self._idle: list[_Worker] = []  # ready, the most recently used last
        self._all: list[_Worker] = []  # every process started, to reap at stop
        self._usable = 0  # workers started or starting, and not lost since
        self._waiting: deque[asyncio.Future[_Worker]] = deque()  # splits waiting for a worker
        self._starting: set[asyncio.Task[None]] = set()
        self._packer = FlowPacker()

    async def start(self) -> None:
        self._reset()

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
        spawning = asyncio.ensure_future(_Worker.spawn())
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

    async def run(self, task: SplitTask) -> SplitOutcome:
        flow = self._packer.pack(task.flow)
        worker = await self._acquire(flow)
        try:
            outcome = await worker.run(flow, task)
        except WorkerLost:
            self._usable -= 1
            raise  # the worker is gone; stop() reaps it
        except asyncio.CancelledError:  # timed out or the run was abandoned: stop the work
            self._usable -= 1
            worker.kill()
            raise
        except BaseException:
            self._release(worker)
            raise
        self._release(worker)
        return outcome

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        """The batch runs in one worker, its splits one after another."""
        flow = self._packer.pack(tasks[0].flow)
        worker = await self._acquire(flow)
        try:
            results = await worker.run_batch(flow, tasks)
        except asyncio.CancelledError:  # the run was abandoned: stop the work
            self._usable -= 1
            worker.kill()
            raise
        except BaseException:
            self._release(worker)
            raise
        if worker.process.returncode is not None:
            self._usable -= 1  # the worker died in the batch; stop() reaps it
        else:
            self._release(worker)
        return results

    async def stop(self) -> None:
        starting = list(self._starting)
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        workers, self._all, self._idle = self._all, [], []
        await asyncio.gather(*(worker.close() for worker in workers))

    def __getstate__(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()
