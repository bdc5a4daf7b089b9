"""``thread`` — run splits on threads of the scheduler's process."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from laminar.runtime.executor import Executor
from laminar.runtime.split import run_split
from laminar.runtime.task import SplitOutcome, SplitTask


class Thread(Executor):
    """Runs each split on a thread in this process: no start-up cost, works with ``Memory``.

    A split that passes ``timeout`` fails the flow, but its thread cannot be stopped and runs on
    until it returns (Python threads cannot be killed); use the process executor to stop it.
    """

    names = ("thread",)
    in_process = True
    _pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="laminar-layer")

    async def run(self, task: SplitTask) -> SplitOutcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, run_split, task)

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_pool": None}
