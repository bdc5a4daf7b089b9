"""``thread`` — run splits on threads of the scheduler's process."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Sequence
from typing import Any

from laminar._runtime.executor import Executor, SplitNotStarted
from laminar._runtime.split import run_split, run_splits
from laminar._runtime.task import SplitOutcome, SplitTask

#: What a thread is given: one split, or a batch of them (whose future gets each one's result).
_Work = SplitTask | list[SplitTask]
_Results = SplitOutcome | list[SplitOutcome | BaseException | None]
#: Finished work on its way back to the event loop: its future, and its outcome(s) or error.
_Finished = tuple["asyncio.Future[Any]", _Results | None, BaseException | None]


class _Pool:
    """The threads of one execution, the queue feeding them, and the hand-back to its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.tasks: queue.SimpleQueue[
            tuple[asyncio.Future[Any], _Work, asyncio.Future[None] | None] | None
        ] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.finished: collections.deque[_Finished] = collections.deque()
        self.lock = threading.Lock()
        self.wake_pending = False
        self.stopping = False
        self.cancelled = False  # the run failed or was stopped: batches start no further split
        self.idle = 0  # threads waiting for work (read on the event loop: a hint, never exact)

    def submit(self, task: _Work, started: asyncio.Future[None] | None = None) -> asyncio.Future[Any]:
        # Threads start on demand, up to concurrency: not while one waits for work (a chain of
        # layers, one split at a time, keeps to one thread instead of starting one per split).
        if self.idle <= self.tasks.qsize() and len(self.threads) < self.size:
            thread = threading.Thread(
                target=self.work, name=f"laminar-layer_{len(self.threads)}", daemon=True
            )
            self.threads.append(thread)
            thread.start()
        future: asyncio.Future[Any] = self.loop.create_future()
        self.tasks.put((future, task, started))
        return future

    def work(self) -> None:
        with self.lock:
            self.idle += 1
        while True:
            item = self.tasks.get()
            with self.lock:
                self.idle -= 1
            if item is None or self.stopping:
                return
            future, task, started = item
            if future.cancelled():  # abandoned before it started
                with self.lock:
                    self.idle += 1
                continue
            if started is not None:  # its timeout counts from now
                self.loop.call_soon_threadsafe(_settle, started)
            try:
                if isinstance(task, list):
                    results: list[SplitOutcome | BaseException | None] = list(
                        run_splits(task, cancelled=lambda: self.cancelled)
                    )
                    finished: _Finished = (future, results, None)
                else:
                    finished = (future, run_split(task), None)
            except BaseException as error:
                finished = (future, None, error)
            with self.lock:
                self.finished.append(finished)
                wake, self.wake_pending = not self.wake_pending, True
                self.idle += 1  # free for the next before the event loop hears of this one
            if wake:
                try:
                    self.loop.call_soon_threadsafe(self.hand_back)
                except RuntimeError:  # the loop closed (the run was abandoned): nobody is waiting
                    return

    def cancel_queued(self) -> None:
        """On the event loop: take every split no thread has started off the queue; its run raises
        SplitNotStarted. A thread taking one at the same moment starts it, as it would have anyway.
        Never after stop(): Thread.stop drops the pool first, so no stop marker is in the queue."""
        self.cancelled = True
        while True:
            try:
                item = self.tasks.get_nowait()
            except queue.Empty:
                return
            assert item is not None
            future, task, started = item
            if isinstance(task, list):  # a batch: none of its splits started
                if not future.done():
                    future.set_result([SplitNotStarted.of(each) for each in task])
                continue
            waiting = started if started is not None else future  # run() awaits started first
            if not waiting.done():
                waiting.set_exception(SplitNotStarted.of(task))

    def hand_back(self) -> None:
        """On the event loop: settle every split that finished since the last wake-up."""
        with self.lock:
            finished = list(self.finished)
            self.finished.clear()
            self.wake_pending = False
        for future, outcome, error in finished:
            if future.done():  # cancelled: timed out, or the run ended
                continue
            if error is not None:
                future.set_exception(error)
            else:
                assert outcome is not None
                future.set_result(outcome)

    def stop(self) -> None:
        self.stopping = True
        for _ in self.threads:
            self.tasks.put(None)


def _settle(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


#: Splits queued per thread, so a thread that finishes one finds the next without waiting for the
#: event loop: handing splits over one at a time costs more than a trivial split itself, and with a
#: shallower queue threads still ran dry (docs/performance.md). A failed or stopped run starts none
#: of those still queued (``cancel_queued``), so a deep queue costs nothing when splits are slow.
QUEUED_PER_THREAD = 32


class Thread(Executor):
    """Runs each split on a thread in this process: no start-up cost, works with ``Memory``.

    Splits that finish while the event loop is busy are handed back in one wake-up, not one each:
    with many small splits, waking the loop (and passing the GIL to it) once per split would cost
    more than the splits themselves.

    A split that passes ``timeout`` fails the flow, but its thread cannot be stopped and runs on
    until it returns (Python threads cannot be killed); use the process executor to stop it.

    Without a timeout, a chain's one-split layers do not come here: the scheduler runs their split
    on its own thread (``inline_chains``), where nothing else of the run could go on meanwhile.
    """

    names = ("thread",)
    in_process = True
    inline_chains = True
    times_itself = True
    batch_seconds = 0.02

    @property
    def window(self) -> int:
        return self.concurrency * QUEUED_PER_THREAD

    @property
    def batch_window(self) -> int:
        return self.concurrency * 2  # one running, one queued per thread

    def __init__(self, *, concurrency: int | None = None, timeout: float | None = None) -> None:
        super().__init__(concurrency=concurrency, timeout=timeout)
        # The pool of each execution running on this executor object, by its event loop: several
        # executions (a layer that runs another flow, threads of a notebook) may share one executor.
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pools[loop] = _Pool(loop, self.concurrency)

    async def run(self, task: SplitTask) -> SplitOutcome:
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is None:
            raise RuntimeError("the thread executor is not started; it runs inside Flow.__call__")
        if self.timeout is None:
            outcome: SplitOutcome = await pool.submit(task)
            return outcome
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future = pool.submit(task, started)
        try:
            await started
            done, _ = await asyncio.wait({future}, timeout=self.timeout)
        except BaseException:
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise self.timed_out(task, self.timeout)
        result: SplitOutcome = future.result()
        return result

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        """The batch runs on one thread, its splits one after another (no timeout: the scheduler
        hands batches over only without one)."""
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is None:
            raise RuntimeError("the thread executor is not started; it runs inside Flow.__call__")
        results: list[SplitOutcome | BaseException | None] = await pool.submit(list(tasks))
        return results

    def cancel_queued(self) -> None:
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is not None:
            pool.cancel_queued()

    async def stop(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            pool.stop()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pools": {}}
