"""The process executor's side of the worker template (``laminar._runtime.template``).

The template is started with the executor, is sent each flow once to import its modules, and forks a
worker per request; it tells when each worker ends, since workers are its children. A template that
refuses (a thread runs in it) or is gone makes :meth:`WorkerTemplate.fork` give ``None``: the
executor then starts its workers as new interpreters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

import cloudpickle

from laminar._runtime import environment, wire
from laminar._runtime.shipping import PackedFlow

logger = logging.getLogger(__name__)


async def read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """A reader on the read end ``fd`` of a pipe (this process owns it from now on)."""
    reader = asyncio.StreamReader(limit=1 << 30)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb")
    )
    return reader, transport


async def read_message(reader: asyncio.StreamReader) -> Any:
    """One ``wire`` message; ``asyncio.IncompleteReadError`` if the writer ended first."""
    header = await reader.readexactly(wire.HEADER.size)
    return cloudpickle.loads(await reader.readexactly(wire.HEADER.unpack(header)[0]))


class ForkedProcess:
    """A worker forked by the template, as the executor uses an ``asyncio.subprocess.Process``."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, exit: asyncio.Future[int]) -> None:
        self.pid = pid
        self.stdin: asyncio.StreamWriter | None = stdin
        self._exit = exit

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)


class WorkerTemplate:
    """The template process, and the requests in flight to it (one at a time)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        control: socket.socket,
        answers: tuple[asyncio.StreamReader, asyncio.BaseTransport],
    ) -> None:
        self.process = process
        self._control = control
        self._answers, self._transport = answers
        self._pending: asyncio.Queue[Any] = asyncio.Queue()  # answers, and None once the template is gone
        self._exits: dict[int, asyncio.Future[int]] = {}  # each worker forked: its exit code, by pid
        self._lock = asyncio.Lock()
        self._preloaded: dict[str, asyncio.Future[None]] = {}
        self.gone = False
        self.refused: str | None = None  # why the template forks no more workers
        self._listening = asyncio.ensure_future(self._listen())

    @classmethod
    async def start(cls) -> WorkerTemplate:
        """Start the template; it imports Laminar's runtime while the scheduler goes on."""
        ours, theirs = socket.socketpair()
        answers_read, answers_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "laminar._runtime.template", str(theirs.fileno()), str(answers_write),
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(), answers_write),
                env={**os.environ, **environment.WORKER_ENVIRONMENT},
                start_new_session=True,  # the terminal's signals are the scheduler's to act on
            )  # fmt: skip
        except BaseException:
            ours.close()
            os.close(answers_read)
            raise
        finally:
            theirs.close()
            os.close(answers_write)
        ours.setblocking(False)
        template = cls(process, ours, await read_pipe(answers_read))
        await template._send(("setup", (sys.path, os.getcwd())))
        return template

    async def _send(self, message: Any, fds: list[int] | None = None) -> None:
        data = wire.encode(message)
        loop = asyncio.get_running_loop()
        if fds:  # a request is answered before the next is sent: the socket's buffer has room
            sent = socket.send_fds(self._control, [data], fds)
            data = data[sent:]
        await loop.sock_sendall(self._control, data)

    async def _listen(self) -> None:
        # Until the template ends (EOF), or says what cannot be read: either way it is of no more use.
        with contextlib.suppress(Exception):
            while True:
                message = await read_message(self._answers)
                if message[0] == "exited":
                    self._exited(message[1], message[2])
                    continue
                if message[0] == "forked":  # known before its exit can be told
                    self._exits[message[1]] = asyncio.get_running_loop().create_future()
                self._pending.put_nowait(message)
        self._lost()

    def _exited(self, pid: int, code: int) -> None:
        exit = self._exits.get(pid)
        if exit is not None and not exit.done():
            exit.set_result(code)

    def _lost(self) -> None:
        """The template is gone, and with it word of its workers' ends: they are killed, so that none
        is left running unseen (a split running on one fails with ``WorkerLost``, and is retried)."""
        self.gone = True
        self._pending.put_nowait(None)
        for pid, exit in list(self._exits.items()):
            if exit.done():
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._exited(pid, -signal.SIGKILL)

    async def _request(self, message: Any, fds: list[int] | None = None) -> Any:
        """The template's answer to ``message``; ``None`` if it is gone."""
        async with self._lock:
            if self.gone:
                return None
            try:
                await self._send(message, fds)
            except OSError:
                return None
            return await self._pending.get()

    async def preload(self, flow: PackedFlow) -> None:
        """Have the template import ``flow``'s modules, once per flow; callers wait for it to finish."""
        loading = self._preloaded.get(flow.token)
        if loading is None:
            loading = self._preloaded[flow.token] = asyncio.ensure_future(
                self._request(("preload", flow.payload))
            )
        await asyncio.shield(loading)

    async def fork(self) -> tuple[ForkedProcess, int] | None:
        """A new worker and the read end of its results pipe; ``None`` if the template forks none."""
        if self.refused is not None:
            return None
        tasks_read, tasks_write = os.pipe()
        results_read, results_write = os.pipe()
        try:
            answer = await self._request(("fork", None), [tasks_read, results_write])
        finally:
            os.close(tasks_read)
            os.close(results_write)
        if answer is None or answer[0] != "forked":
            if answer is not None:
                self.refused = answer[1]
                logger.warning(
                    "the process executor starts its workers as new interpreters: %s", self.refused
                )
            os.close(tasks_write)
            os.close(results_read)
            return None
        pid = answer[1]
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(tasks_write, "wb")
        )
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        return ForkedProcess(pid, stdin, self._exits[pid]), results_read

    async def close(self) -> None:
        """End the template (its workers are ended by the executor, before this)."""
        self._control.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # it may be importing: nothing to wait for
        await self.process.wait()
        await asyncio.gather(self._listening, return_exceptions=True)
        self._transport.close()
