"""The template the process executor forks its workers from: a new worker costs a fork, not a new
interpreter and its ``import pandas``.

Forked from the scheduler's own process before its run starts a thread or an event loop
(:func:`become`): the flow's modules are imported already. Where that fork is unsafe, started as
``python -m laminar._runtime.template CONTROL_FD ANSWERS_FD``, which imports them on request. Either
way it runs in a session of its own.
Requests come on the socket ``CONTROL_FD``; answers go back on the pipe ``ANSWERS_FD``:

- ``("setup", (sys.path, cwd))``: the scheduler's path and directory (no answer);
- ``("preload", payload)``: unpickle a flow, which imports its modules, and drop it; answered
  ``("preloaded", None)`` (an error is left to the worker that installs the flow, as before); not
  sent to a template forked from the scheduler, which has the modules already;
- ``("fork", None)`` with a worker's two pipe ends attached: answered ``("forked", pid)``, or
  ``("refused", why)`` when a thread runs here, which a fork would not carry into the worker.

Each worker that ends is told as ``("exited", pid, code)`` (the code as ``asyncio`` gives it), since
workers are this process's children, not the scheduler's. The template holds modules only: no flow,
no client, no thread. EOF on ``CONTROL_FD`` ends it; its workers live on until the scheduler ends them.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import select
import signal
import socket
import sys
import threading
import traceback
import warnings
import weakref
from typing import Any, BinaryIO, NoReturn

import cloudpickle

from laminar._runtime import environment, wire, worker


def _receive(control: socket.socket) -> tuple[Any, list[int]]:
    """One request and the file descriptors sent with it; ``EOFError`` at the scheduler's end."""
    header, fds, _, _ = socket.recv_fds(control, wire.HEADER.size, 2)
    while len(header) < wire.HEADER.size:
        more = control.recv(wire.HEADER.size - len(header))
        if not more:
            raise EOFError
        header += more
    (size,) = wire.HEADER.unpack(header)
    payload = bytearray()
    while len(payload) < size:
        more = control.recv(min(size - len(payload), 1 << 20))
        if not more:
            raise EOFError
        payload += more
    return cloudpickle.loads(bytes(payload)), fds


def _answer(answers: BinaryIO, message: Any) -> None:
    answers.write(wire.encode(message))
    answers.flush()


def _reap(answers: BinaryIO) -> None:
    """Tell the scheduler of every worker that has ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _answer(answers, ("exited", pid, os.waitstatus_to_exitcode(status)))


def _threads() -> list[str]:
    """The threads running here besides this one: a fork would leave them behind, their locks held."""
    return [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]


def _become_worker(tasks: int, results: int, inherited: list[int]) -> NoReturn:
    """In the forked child: become a worker as ``python -m laminar._runtime.worker`` would be one."""
    code = 0
    try:
        os.setsid()  # the terminal's signals are the scheduler's to act on
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        os.dup2(tasks, 0)  # tasks arrive on stdin, as in a spawned worker
        os.close(tasks)
        worker.serve(sys.stdin.buffer, os.fdopen(results, "wb"))
        atexit._run_exitfuncs()  # what the flow's modules registered runs, as at an interpreter's exit
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _fork(tasks: int, results: int, inherited: list[int]) -> int:
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of any OS thread; numpy's BLAS pool is one and is fork-safe (it
            # re-creates itself in the child). Python threads are refused before this, by _threads.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            _become_worker(tasks, results, inherited)
        return pid
    finally:
        os.close(tasks)
        os.close(results)


def serve(control: socket.socket, answers: BinaryIO) -> None:
    """Answer the scheduler's requests until it closes ``control``."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)  # a handler, so the wake-up fd hears it
    signal.set_wakeup_fd(wake_write)
    inherited = [control.fileno(), answers.fileno(), wake_read, wake_write]
    while True:
        ready, _, _ = select.select([control.fileno(), wake_read], [], [])
        for source in ready:
            if source == wake_read:
                os.read(wake_read, 4096)
                _reap(answers)
                continue
            try:
                (kind, value), fds = _receive(control)
            except EOFError:
                return
            if kind == "setup":
                path, cwd = value
                sys.path[:] = path
                os.chdir(cwd)
            elif kind == "preload":
                with contextlib.suppress(BaseException):
                    cloudpickle.loads(value)
                gc.collect()
                gc.freeze()  # what the template holds is not touched again: workers share its pages
                _answer(answers, ("preloaded", None))
            elif kind == "fork":
                tasks, results = fds
                threads = _threads()
                if threads:
                    os.close(tasks)
                    os.close(results)
                    _answer(answers, ("refused", f"the flow's modules started threads: {', '.join(threads)}"))
                else:
                    _answer(answers, ("forked", _fork(tasks, results, inherited)))


def _drop_inherited(keep: set[int]) -> None:
    """Point every descriptor the scheduler had open (its sockets, pipes, files) at ``/dev/null``, as
    a new interpreter would not have them: their ends are not held open here or in the workers. The
    numbers stay taken, so that an object of the scheduler's that closes its own when freed closes
    nothing this process opens later."""
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"):
        fd = int(name)
        if fd in keep or fd == null or fd in (1, 2):  # the output streams stay: workers print there
            continue
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            os.fstat(fd)
            os.dup2(null, fd, inheritable=fd == 0)
    os.close(null)


def _forget_exit_calls() -> None:
    """Drop what the scheduler registered to run at its exit (``atexit``, ``weakref.finalize``: a
    temporary directory's removal...): it is the scheduler's to run, not each worker's as it ends.
    What the flow's modules register from here on runs in the worker, as in a new interpreter."""
    atexit._clear()
    for info in getattr(weakref.finalize, "_registry", {}).values():
        info.atexit = False
    weakref.finalize._registered_with_atexit = False  # type: ignore[attr-defined]  # the next one registers again


def become(control: socket.socket, answers: int) -> NoReturn:
    """In a child just forked from the scheduler's process, before its run began: be the template.

    The child never returns into the scheduler's code (nor runs its ``atexit``): it serves until the
    scheduler closes ``control``, then exits.
    """
    code = 0
    try:
        os.setsid()  # the terminal's signals are the scheduler's to act on
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new interpreter
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _drop_inherited({control.fileno(), answers})
        for name in ("stdin", "stdout", "stderr"):  # the interpreter's own, as a new one has (not a capture)
            original = getattr(sys, f"__{name}__")
            if original is not None:
                setattr(sys, name, original)
        _forget_exit_calls()
        environment.mark_worker()
        from laminar._runtime import split  # noqa: F401  (what every worker needs, imported once here)

        gc.freeze()  # what the scheduler had is not touched again here: workers share its pages
        serve(control, os.fdopen(answers, "wb"))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def main() -> None:
    environment.mark_worker()  # what the flow's modules check at import is as in a worker
    from laminar._runtime import split  # noqa: F401  (what every worker needs, imported once here)

    control = socket.socket(fileno=int(sys.argv[1]))
    answers = os.fdopen(int(sys.argv[2]), "wb")
    serve(control, answers)


if __name__ == "__main__":
    main()
