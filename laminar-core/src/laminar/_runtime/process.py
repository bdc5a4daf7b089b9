"""``process`` — run splits in worker processes on this machine, reusing them across splits.

Worker processes start on demand (up to ``concurrency``) and live for the execution, so interpreter
start-up is paid per worker, not per split. A split that passes ``timeout`` has its worker killed; a
worker that dies mid-split fails that split with :class:`~laminar.errors.WorkerLost` (retried per
the layer's ``Retry``) and is replaced.
"""

from __future__ import annotations

import asyncio
import os
import sys
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

    async def run(self, flow: PackedFlow, task: SplitTask) -> SplitOutcome:
        first = self.flow_token != flow.token
        self.send((flow.token, flow.payload if first else None, without_flow(task)))
        self.flow_token = flow.token
        assert self.process.stdin is not None
        try:
            await self.process.stdin.drain()
            header = await self.results.readexactly(wire.HEADER.size)
            payload = await self.results.readexactly(wire.HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            code = await self.process.wait()
            raise WorkerLost(
                f"the worker process (pid {self.process.pid}) running {task.describe()} exited with code {code} "
                "before it finished"
            ) from None
        kind, value, text = cloudpickle.loads(payload)
        if kind == "ok":
            outcome: SplitOutcome = value
            return outcome
        error: BaseException = cloudpickle.loads(value) if value is not None else RemoteError(text)
        raise error

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
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

    def __init__(self, *, concurrency: int | None = None, timeout: float | None = None) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        self._reset()

    def _reset(self) -> None:
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._packer = FlowPacker()

    async def start(self) -> None:
        self._reset()

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
        worker = await _Worker.spawn()
        self._all.append(worker)
        return worker

    async def run(self, task: SplitTask) -> SplitOutcome:
        flow = self._packer.pack(task.flow)
        worker = await self._acquire()
        try:
            outcome = await worker.run(flow, task)
        except WorkerLost:
            raise  # the worker is gone; stop() reaps it
        except asyncio.CancelledError:  # timed out or the run was abandoned: stop the work
            worker.kill()
            raise
        except BaseException:
            self._idle.append(worker)
            raise
        self._idle.append(worker)
        return outcome

    async def stop(self) -> None:
        workers, self._all, self._idle = self._all, [], []
        await asyncio.gather(*(worker.close() for worker in workers))

    def __getstate__(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()
