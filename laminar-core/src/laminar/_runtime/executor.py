"""The Executor contract: run one layer split somewhere and report how it ended.

The scheduler decides *what* runs; an executor decides *where*. An executor receives a picklable
:class:`~laminar._runtime.task.SplitTask`, runs :func:`laminar._runtime.split.run_split` on it in some
process (this one, a local worker process, a Dask worker...) and returns the
:class:`~laminar._runtime.task.SplitOutcome`, or raises the layer's exception.

The scheduler enforces ``timeout`` by cancelling :meth:`Executor.run`; an executor that can stop the
work on cancellation (kill a process, cancel a Dask future) should. Once a run has failed or was
stopped, it calls :meth:`Executor.cancel_queued`, so that an executor queueing splits (``window``
above ``concurrency``) starts none of those it still holds.

An executor that sets ``batch_seconds`` is also handed short splits several at a time, through
:meth:`Executor.run_batch` (see ``laminar._runtime.batching``); one that does not is handed every
split on its own, through ``run``, as before.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from laminar._runtime.task import SplitOutcome, SplitTask


class SplitNotStarted(BaseException):
    """What ``run`` raises for a split handed over but never started, once the run has failed or was
    stopped (see :meth:`Executor.cancel_queued`). Hooks see it as the split's error: it is not a
    failed attempt, and nothing of the split ran.

    A ``BaseException``, as ``KeyboardInterrupt`` is: no retry takes it for the layer's error. Not a
    ``CancelledError``, which would cancel an asyncio task it passes through instead of reaching the
    scheduler as itself.
    """

    @classmethod
    def of(cls, task: SplitTask) -> SplitNotStarted:
        """The error of ``task``, saying why it did not start."""
        return cls(f"{task.describe()} was not started: the run had failed or was stopped")


class Executor(abc.ABC):
    """Runs layer splits. ``concurrency`` caps splits in flight; ``timeout`` caps one split's seconds."""

    #: Names this executor is chosen by (``Flow(executor="process")``, ``LAMINAR_EXECUTOR=thread``).
    names: ClassVar[tuple[str, ...]] = ()
    #: Whether splits run in the scheduler's process (only such executors can use ``Memory``).
    in_process: ClassVar[bool] = False

    #: Whether the scheduler may run a one-split layer's split itself, on its event loop's thread, at
    #: a chain point (no other split runs, and every layer not ended depends on this one), instead
    #: of calling :meth:`run`: for an in-process executor, whose hand-over to a thread and back costs
    #: more than a small layer's own work. Never with ``timeout`` set, nor for a layer with
    #: submission or retry hooks; the split gets the same record, hook events, retries and log. A
    #: subclass that overrides ``run`` (to wrap each split) and does not set this again is not
    #: inlined: see :func:`runs_inline`.
    inline_chains: ClassVar[bool] = False

    #: Whether ``run`` applies ``timeout`` itself (from when the split starts, not when it was handed
    #: over); otherwise the scheduler does, around ``run``.
    times_itself: ClassVar[bool] = False

    #: Seconds a batch of short splits should take when handed over in one :meth:`run_batch` call;
    #: ``None`` (the default): every split is handed over on its own, through :meth:`run`. The
    #: scheduler hands over batches only when ``timeout`` is not set and the layer has no submission
    #: or retry hooks; ``LAMINAR_BATCH_SECONDS`` overrides this (``0``: no batches).
    batch_seconds: float | None = None

    @property
    def window(self) -> int:
        """How many splits the scheduler hands this executor at once: ``concurrency`` by default.

        An executor that queues work (the Thread executor) asks for more, so its workers never wait
        for the scheduler between two short splits; ``concurrency`` still caps how many *run*.
        """
        return self.concurrency

    @property
    def batch_window(self) -> int:
        """How many batches the scheduler hands this executor at once (see ``batch_seconds``):
        ``window`` by default. Batches are long enough that a few per slot keep every slot busy."""
        return self.window

    def __init__(self, *, concurrency: int | None = None, timeout: float | None = None) -> None:
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.concurrency = concurrency or max(os.cpu_count() or 1, 1)
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str) -> Executor:
        """Build from a name or URL (``"thread"``, ``"dask://host:8786"``). Plugins override."""
        return cls()

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        """Around a run, in the scheduler's process, before the run starts its event loop or any
        thread: where a fork of this process is safe (the process executor forks its worker template
        here). Not entered by a run inside a running event loop. By default nothing."""
        yield

    async def start(self) -> None:
        """Acquire resources (pools, clusters) before an execution's first split."""

    @staticmethod
    def timed_out(task: SplitTask, timeout: float) -> TimeoutError:
        """The error of a split that ran past ``timeout``."""
        return TimeoutError(
            f"{task.describe()} ran longer than the executor's timeout of {timeout} s and was stopped"
        )

    @abc.abstractmethod
    async def run(self, task: SplitTask) -> SplitOutcome:
        """Run one split and return its outcome, or raise the exception the layer raised."""

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        """Run several splits of one layer and return, in order, each one's outcome, or the exception
        it raised, or ``None`` for a split that did not start (its worker was lost before it): the
        scheduler hands that one over again, as the same attempt.

        Each split runs as :meth:`run` would run it (:func:`~laminar._runtime.split.run_split` on its
        task; :func:`~laminar._runtime.split.run_splits` runs a batch where the splits run). After
        :meth:`cancel_queued`, a split of the batch not started yet is not started: its entry is
        :class:`SplitNotStarted`. The default runs each through :meth:`run`, together.
        """
        results = await asyncio.gather(*(self.run(task) for task in tasks), return_exceptions=True)
        return list(results)

    def cancel_queued(self) -> None:
        """The run failed or was stopped: start none of the splits handed over and not yet started.

        Called on the run's event loop, again for each further error. The ``run`` of each such split
        raises :class:`SplitNotStarted`; splits already running finish as usual, and what they store
        is kept. By default nothing: an executor whose ``window`` is its ``concurrency`` starts every
        split as it is handed over.
        """

    async def stop(self) -> None:
        """Release what :meth:`start` acquired. Called once the execution ends, even on failure."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(concurrency={self.concurrency}, timeout={self.timeout})"


def runs_inline(executor: Executor) -> bool:
    """Whether the scheduler may run ``executor``'s one-split layers inline at chain points: it runs
    splits in this process and opts in (``inline_chains``), no timeout applies, and no subclass
    below the class that opted in overrides ``run``, whose calls inlining would skip."""
    if not executor.inline_chains or not executor.in_process or executor.timeout is not None:
        return False
    for klass in type(executor).__mro__:
        if "inline_chains" in klass.__dict__:
            return True  # opted in here, with ``run`` as this class has it
        if "run" in klass.__dict__:
            return False
    return False
