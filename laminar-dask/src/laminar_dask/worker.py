"""What runs on a Dask worker: the plugin that installs a flow, and the task that runs one split.

Imported on workers (and by the executor once an execution starts), never when Laminar loads plugins.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import cloudpickle
from distributed import WorkerPlugin
from laminar.errors import WorkerLost
from laminar._runtime.split import run_split

if TYPE_CHECKING:
    from laminar._model.flow import Flow
    from laminar._runtime.task import SplitOutcome, SplitTask

#: token -> pickled flow, installed by :class:`FlowPlugin` on each worker
_PAYLOADS: dict[str, bytes] = {}
#: token -> unpickled flow, built on a worker's first split of that execution
_FLOWS: dict[str, Flow] = {}
_FLOWS_LOCK = threading.Lock()


def origin() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


class FlowPlugin(WorkerPlugin):
    """Installs one execution's pickled flow on every worker, including workers that join later."""

    def __init__(self, token: str, payload: bytes, origin: tuple[str, int]) -> None:
        self.token = token
        self.payload = payload
        self.origin = origin

    def setup(self, worker: Any) -> None:
        _PAYLOADS[self.token] = self.payload
        if origin() != self.origin:
            # A worker process, not the scheduler's: ``if flow := MyFlow():`` is false here, so
            # importing the user's script on a worker never starts a run.
            os.environ["LAMINAR_WORKER"] = "1"

    def teardown(self, worker: Any) -> None:
        _PAYLOADS.pop(self.token, None)
        _FLOWS.pop(self.token, None)


def _flow(token: str) -> Flow:
    flow = _FLOWS.get(token)
    if flow is not None:
        return flow
    with _FLOWS_LOCK:
        flow = _FLOWS.get(token)
        if flow is None:
            payload = _PAYLOADS.get(token)
            if payload is None:
                raise WorkerLost(
                    f"the flow of this execution is not installed on Dask worker pid {os.getpid()} "
                    "(the worker joined while the plugin was being registered, or it was unregistered)"
                )
            flow = _FLOWS[token] = cloudpickle.loads(payload)
    return flow


def run_task(token: str, task: SplitTask) -> SplitOutcome:
    """What one Dask task runs: the split, with the flow this worker already holds."""
    task.flow = _flow(token)
    return run_split(task)
