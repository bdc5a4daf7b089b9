"""The process executor's side of the worker template (``laminar._runtime.template``).

The template is forked from the scheduler's process before its run starts a thread or an event loop
(:class:`ForkedTemplate`), so it has the flow's modules as the scheduler imported them; where that is
unsafe (:func:`unsafe_to_fork`) it is started as a new interpreter with the executor. It is sent each
flow once (to import its modules, if not yet), and forks a worker per request; it tells when each worker ends, since workers are its children. A template that
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
import threading
import warnings
from typing import Any, Protocol

import cloudpickle

from laminar._runtime import background, environment, template, wire
from laminar._runtime.shipping import PackedFlow
from laminar._serialization import threads
from laminar._storage import lease, logs

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


def unsafe_to_fork() -> str | None:
    """Why this process may not fork the template now (``None`` if it may): a thread would be left
    behind with its locks held (Laminar's own pools and the threads kept for runs' records, idle
    between runs, its log-flushing thread, which a fork waits for, and the lease heartbeat's timing
    thread while it times none, excepted), and macOS's system libraries do not survive a fork
    without ``exec``."""
    if not hasattr(os, "fork"):
        return "this platform has no fork"
    if sys.platform == "darwin":
        return "macOS's system libraries may not survive a fork"
    idle = [
        threading.current_thread(),
        *threads.idle_threads(),
        *background.idle_threads(),
        *logs.flushing_threads(),
        *lease.heartbeat_threads(),
    ]
    running = [thread.name for thread in threading.enumerate() if thread not in idle]
    if running:
        return f"threads run in this process: {', '.join(running)}"
    return None


class TemplateProcess(Protocol):
    """The template's process: an ``asyncio.subprocess.Process``, or one forked from this process."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class ForkedTemplate:
    """A template forked from this process (call :meth:`fork` before the run's threads start): its
    pid and this end of its socket and answers pipe."""

    def __init__(self, pid: int, control: socket.socket, answers: int) -> None:
        self.pid = pid
        self.control = control
        self.answers = answers
        self.returncode: int | None = None
        #: The run's first worker, asked for as the template was forked: this end of its tasks' pipe
        #: and of its results' (the template's answer is read once it is adopted).
        self.first_worker: tuple[int, int] | None = None

    @classmethod
    def fork(cls) -> ForkedTemplate:
        """Fork the template now; ``OSError`` if the system refuses."""
        ours, theirs = socket.socketpair()
        answers_read, answers_write = os.pipe()
        # What is buffered is printed once, not once more there (the interpreter's own streams too:
        # the template takes them up in place of any the program set in sys.stdout).
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of any OS thread; a BLAS pool numpy started is one and is fork-safe.
                # Python threads are not: unsafe_to_fork checks there are none.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:
            for fd in (answers_read, answers_write):
                os.close(fd)
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            template.become(theirs, answers_write)
        theirs.close()
        os.close(answers_write)
        forked = cls(pid, ours, answers_read)
        forked.first_worker = forked._ask_for_worker()
        return forked

    def _ask_for_worker(self) -> tuple[int, int] | None:
        """Ask the template for a worker now, before the run begins: it is forked while the scheduler
        writes the run's first records, not once the first split waits for it. ``None`` if the
        request could not be sent (the template is then found gone once adopted)."""
        tasks_read, tasks_write = os.pipe()
        results_read, results_write = os.pipe()
        try:
            data = wire.encode(("fork", None))
            sent = socket.send_fds(self.control, [data], [tasks_read, results_write])
            self.control.sendall(data[sent:])
        except OSError:
            os.close(tasks_write)
            os.close(results_read)
            return None
        finally:
            os.close(tasks_read)
            os.close(results_write)
        return tasks_write, results_read

    async def wait(self) -> int:
        if self.returncode is None:
            _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def discard(self) -> None:
        """End a template the run did not use (it ended before its executor started); a worker it
        forked meanwhile reads the end of its tasks and exits."""
        for fd in self.first_worker or ():
            os.close(fd)
        self.first_worker = None
        self.control.close()
        os.close(self.answers)
        _kill_session(self.pid)
        os.waitpid(self.pid, 0)


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # forked a moment ago: not yet in a session of its own
            os.kill(pid, signal.SIGKILL)


class WorkerTemplate:
    """The template process, and the requests in flight to it (one at a time)."""

    def __init__(
        self,
        process: TemplateProcess,
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
        self.imported = False  # whether the template has the flows' modules without a preload
        self._first: asyncio.Future[tuple[ForkedProcess, int] | None] | None = None  # asked for ahead
        self._listening = asyncio.ensure_future(self._listen())

    @classmethod
    async def adopt(cls, forked: ForkedTemplate) -> WorkerTemplate:
        """The template forked from this process before the run began."""
        forked.control.setblocking(False)
        template = cls(forked, forked.control, await read_pipe(forked.answers))
        template.imported = True  # as the scheduler imported them
        if forked.first_worker is not None:  # its answer comes before any other request's
            await template._lock.acquire()
            template._first = asyncio.ensure_future(template._first_answered(*forked.first_worker))
            forked.first_worker = None
        return template

    async def _first_answered(self, tasks: int, results: int) -> tuple[ForkedProcess, int] | None:
        try:
            answer = await self._pending.get()
        finally:
            self._lock.release()
        return await self._forked(answer, tasks, results)

    @classmethod
    async def start(cls) -> WorkerTemplate:
        """Start the template as a new interpreter; it imports Laminar's runtime while the scheduler
        goes on, and the flow's modules when asked to preload them."""
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
        if self.imported:
            return
        loading = self._preloaded.get(flow.token)
        if loading is None:
            loading = self._preloaded[flow.token] = asyncio.ensure_future(
                self._request(("preload", flow.payload))
            )
        await asyncio.shield(loading)

    async def fork(self) -> tuple[ForkedProcess, int] | None:
        """A new worker and the read end of its results pipe; ``None`` if the template forks none.
        The first is the one asked for as the template was forked."""
        if self._first is not None:
            return await self.unclaimed()
        if self.refused is not None:
            return None
        tasks_read, tasks_write = os.pipe()
        results_read, results_write = os.pipe()
        try:
            answer = await self._request(("fork", None), [tasks_read, results_write])
        finally:
            os.close(tasks_read)
            os.close(results_write)
        return await self._forked(answer, tasks_write, results_read)

    async def unclaimed(self) -> tuple[ForkedProcess, int] | None:
        """The worker asked for as the template was forked, if no split has taken it yet (the
        executor ends it with the others)."""
        first, self._first = self._first, None  # taken once, by whoever asks first
        if first is None:
            return None
        try:
            return await asyncio.shield(first)
        except asyncio.CancelledError:  # not taken after all: the executor ends it with the others
            self._first = first
            raise

    async def _forked(self, answer: Any, tasks: int, results: int) -> tuple[ForkedProcess, int] | None:
        """The worker the template ``answer``ed it forked, on the pipes ``tasks`` and ``results``."""
        if answer is None or answer[0] != "forked":
            if answer is not None:
                self.refused = answer[1]
                logger.warning(
                    "the process executor starts its workers as new interpreters: %s", self.refused
                )
            os.close(tasks)
            os.close(results)
            return None
        pid = answer[1]
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(tasks, "wb")
        )
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        return ForkedProcess(pid, stdin, self._exits[pid]), results

    async def close(self) -> None:
        """End the template (its workers are ended by the executor, before this)."""
        self._control.close()
        if self.process.returncode is None:
            _kill_session(self.process.pid)  # it may be importing: nothing to wait for
        await self.process.wait()
        await asyncio.gather(self._listening, return_exceptions=True)
        self._transport.close()
