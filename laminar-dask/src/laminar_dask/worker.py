"""What runs on a Dask worker: the plugin that installs a flow, and the task that runs one split.

Imported on workers (and by the executor once an execution starts), never when Laminar loads plugins.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

import cloudpickle
from distributed import WorkerPlugin
from laminar.errors import WorkerLost
from laminar.plugins import (
    FlowNotInstalled,
    FlowUnpacker,
    SplitNotStarted,
    mark_worker,
    run_split,
    run_splits,
)

if TYPE_CHECKING:
    from laminar.plugins import SplitOutcome, SplitTask

#: The flows :class:`FlowPlugin` installed on this worker, by token.
_FLOWS = FlowUnpacker()

#: Runs (the executor's run id) that failed or were stopped: their tasks start no further split.
_STOPPED: set[str] = set()


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


def stop_run(run: str) -> None:
    """Sent to every worker (``client.run``) when run ``run`` failed or was stopped: its tasks
    still queued on this worker, and the splits of its batch not started yet, do not start."""
    _STOPPED.add(run)


def run_task(
    token: str, run: str, task: SplitTask | list[SplitTask]
) -> SplitOutcome | BaseException | list[SplitOutcome | BaseException]:
    """What one Dask task runs: the split, with the flow this worker already holds; or a batch of
    splits, one after another, each one's outcome or error in a list (one failing stops none).

    A split of a run that was stopped (:func:`stop_run`) is not started: its result is
    :class:`~laminar.plugins.SplitNotStarted`, returned, not raised, as Dask takes only
    ``Exception`` for a task's error."""
    try:
        if isinstance(task, list):
            tasks = [_FLOWS.attach(token, each) for each in task]
        else:
            task = _FLOWS.attach(token, task)
    except FlowNotInstalled:
        raise WorkerLost(
            f"the flow of this execution is not installed on Dask worker pid {os.getpid()} "
            "(the worker joined while the plugin was being registered, or it was unregistered)"
        ) from None
    if isinstance(task, list):
        return [_portable(result) for result in run_splits(tasks, cancelled=lambda: run in _STOPPED)]
    if run in _STOPPED:
        return SplitNotStarted.of(task)
    return run_split(task)


def _portable(result: SplitOutcome | BaseException) -> SplitOutcome | BaseException:
    """A split's error as it can travel back in the batch's result: itself, or its text if it does
    not pickle (an unpicklable error would lose the whole batch's results)."""
    if not isinstance(result, BaseException):
        return result
    try:
        cloudpickle.loads(cloudpickle.dumps(result))
    except Exception:
        return RuntimeError(f"{type(result).__name__}: {result} (on Dask worker pid {os.getpid()})")
    return result
