"""What runs on a Dask worker: the plugin that installs a flow, and the task that runs one split.

Imported on workers (and by the executor once an execution starts), never when Laminar loads plugins.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin
from laminar.errors import WorkerLost
from laminar.plugins import FlowNotInstalled, FlowUnpacker, mark_worker, run_split

if TYPE_CHECKING:
    from laminar.plugins import SplitOutcome, SplitTask

#: The flows :class:`FlowPlugin` installed on this worker, by token.
_FLOWS = FlowUnpacker()


def origin() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


class FlowPlugin(WorkerPlugin):
    """Installs one execution's pickled flow on every worker, including workers that join later."""

    def __init__(self, token: str, payload: bytes, origin: tuple[str, int]) -> None:
        self.token = token
        self.payload = payload
        self.origin = origin

    def setup(self, worker: Any) -> None:
        _FLOWS.install(self.token, self.payload)
        if origin() != self.origin:
            # A worker process, not the scheduler's: ``if flow := MyFlow():`` is false here, so
            # importing the user's script on a worker never starts a run.
            mark_worker()

    def teardown(self, worker: Any) -> None:
        _FLOWS.remove(self.token)


class TerminalSignals(WorkerPlugin):
    """On the worker processes of a LocalCluster the executor started: SIGINT is ignored.

    Those processes are in the terminal's foreground job, so Ctrl-C reaches each of them; the
    scheduler alone decides what it does (running splits finish), not a worker dying mid-split.
    """

    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin

    def setup(self, worker: Any) -> None:
        # Not in the scheduler's process (a LocalCluster of threads), whose own handler decides.
        if origin() != self.origin and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_task(token: str, task: SplitTask) -> SplitOutcome:
    """What one Dask task runs: the split, with the flow this worker already holds."""
    try:
        task = _FLOWS.attach(token, task)
    except FlowNotInstalled:
        raise WorkerLost(
            f"the flow of this execution is not installed on Dask worker pid {os.getpid()} "
            "(the worker joined while the plugin was being registered, or it was unregistered)"
        ) from None
    return run_split(task)
