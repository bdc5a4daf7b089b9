"""Splits in batches: how many of a layer's splits go to an executor in one call, from how long they take.

Handing a split to an executor, and its outcome back, costs about as much as a trivial split itself.
An executor that declares ``batch_seconds`` (Thread, Process, Dask) is handed several splits at once
(:meth:`~laminar._runtime.executor.Executor.run_batch`): one call, one hand-back, for a batch that
takes about ``batch_seconds``. Every layer starts at one split per call, and the size grows (at most
doubling) while the measured splits are short, and shrinks at once when they get long: a layer
of long splits is handed over one split at a time, exactly as without batches.

``LAMINAR_BATCH_SECONDS`` overrides every executor's figure; ``0`` turns batches off.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from laminar._runtime.executor import Executor

#: The environment variable that sets the seconds a batch should take (0: no batches).
BATCH_SECONDS = "LAMINAR_BATCH_SECONDS"

#: The most splits in one batch: keeps a batch's tasks and outcomes a modest message.
LIMIT = 1024
#: The most splits of a layer in flight in batches at once (a Dask executor hands over 1,024 batches
#: at a time): bounds the scheduler's memory of tasks handed over, whatever the layer's size.
IN_FLIGHT = 65_536


def batch_seconds(executor: Executor) -> float | None:
    """The seconds a batch of splits should take on ``executor``; ``None`` hands splits over one at a
    time (an executor that knows nothing of batches, or ``LAMINAR_BATCH_SECONDS=0``)."""
    text = os.environ.get(BATCH_SECONDS)
    seconds = executor.batch_seconds
    if text is not None:
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:
            raise ConfigurationError(
                f"{BATCH_SECONDS}={text!r} is not a number of seconds; set it to the seconds a batch of "
                "splits should take (0.02, say), or 0 to hand splits over one at a time"
            )
    if not seconds or not _runs_batches_as_it_runs_splits(executor):
        return None
    return seconds


def _runs_batches_as_it_runs_splits(executor: Executor) -> bool:
    """Whether ``executor``'s ``run_batch`` goes where its ``run`` does: a subclass that overrides
    ``run`` (of Thread, say) but not ``run_batch`` is handed every split through its own ``run``."""
    from laminar._runtime.executor import Executor

    kind = type(executor)
    batches = next(klass for klass in kind.__mro__ if "run_batch" in vars(klass))
    runs = next(klass for klass in kind.__mro__ if "run" in vars(klass))
    return batches is Executor or issubclass(batches, runs)


class BatchSize:
    """The size of a layer's next batch, from the durations of its splits measured so far."""

    def __init__(self, seconds: float, runners: int = 1) -> None:
        """``runners``: how many batches may be in flight at once."""
        self.seconds = seconds
        self.limit = max(1, min(LIMIT, IN_FLIGHT // max(runners, 1)))
        self.size = 1

    def measured(self, splits: int, seconds: float) -> None:
        """``splits`` ran in ``seconds`` (between them, as they ran one after another)."""
        if splits < 1 or seconds < 0:
            return
        fits = int(self.seconds * splits / seconds) if seconds > 0 else self.limit
        self.size = max(1, min(fits, self.size * 2, self.limit))

    def lost(self) -> None:
        """A batch was lost with its worker: what it held goes one split at a time again."""
        self.size = 1
