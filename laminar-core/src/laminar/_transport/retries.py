"""Bounded retries with back-off for transient storage errors, shared by every backend.

One policy (:class:`StoragePolicy`) for S3, GCS and Azure: a transient error (a reset or refused
connection, a time-out, HTTP 408/429/500/502/503/504) is tried again after a jittered exponential
back-off (:meth:`laminar._model.layer_options.Retry.wait`, the one back-off formula), at most
``attempts`` times in all and never past one overall ``deadline`` per storage call. Every retry is one
WARNING line on the ``laminar.storage`` logger. Anything else fails at once.

Whatever a failure shows is masked by the one policy of :mod:`laminar._transport.masking`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from laminar._model.layer_options import Retry
from laminar._transport.masking import causes, describe_error, redact, scrub
from laminar.errors import ConfigurationError, DatastoreError

T = TypeVar("T")

#: The logger of storage retries: one WARNING line per retry (operation, URL, attempt, cause).
logger = logging.getLogger("laminar.storage")

#: The environment variable that sets the deadline of every storage call, in seconds.
DEADLINE_VARIABLE = "LAMINAR_STORAGE_DEADLINE"
DEFAULT_DEADLINE = 60.0
#: HTTP statuses worth another attempt on every backend: time-out, throttling, server errors.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class StoragePolicy:
    """How every object-store backend retries one storage call.

    ``attempts`` tries in all, waiting ``Retry(delay, backoff, jitter).wait(n)`` (at most ``max_wait``)
    before retry *n*, and all of it inside ``deadline`` seconds from the start of the call: no back-off
    sleeps past it and no attempt starts after it. The SDKs' connect and read time-outs are capped at
    what is left of the deadline, so a server that accepts connections and never answers is given up
    on at the deadline too.
    """

    attempts: int = 8
    delay: float = 0.1
    backoff: float = 2.0
    jitter: float = 0.5
    max_wait: float = 5.0
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError(
                f"storage attempts must be at least 1 (the first try), got {self.attempts!r}"
            )
        if not _positive(self.deadline):
            raise ConfigurationError(
                f"the storage deadline must be a number of seconds > 0, got {self.deadline!r}"
            )

    def wait(self, retry: int) -> float:
        """Seconds to wait before retry ``retry`` (1 for the first retry)."""
        backoff = Retry(attempts=self.attempts, delay=self.delay, backoff=self.backoff, jitter=self.jitter)
        return min(backoff.wait(retry), self.max_wait)


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def resolve_deadline(deadline: float | None) -> float:
    """``deadline`` if given, else ``LAMINAR_STORAGE_DEADLINE``, else 60 seconds; checked."""
    if deadline is None:
        raw = os.environ.get(DEADLINE_VARIABLE, "").strip()
        if not raw:
            return DEFAULT_DEADLINE
        try:
            deadline = float(raw)
        except ValueError:
            deadline = math.nan
        if not _positive(deadline):
            raise ConfigurationError(
                f"{DEADLINE_VARIABLE}={raw[:40]!r} is not a number of seconds > 0; write e.g. "
                f"{DEADLINE_VARIABLE}=30"
            )
        return deadline
    if not _positive(deadline):
        raise ConfigurationError(f"deadline= must be a number of seconds > 0, got {deadline!r}")
    return float(deadline)


# ---- the deadline of the current call ----------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "laminar_storage_deadline", default=None
)


def remaining(default: float) -> float:
    """Seconds left of the current storage call's deadline (this thread), at most ``default``.

    Backends cap their per-request time-outs with it; outside a call it is ``default``. Never less
    than 0.05 s (a time-out of 0 would mean "none" to some SDKs).
    """
    end = _deadline.get()
    if end is None:
        return default
    return max(0.05, min(default, end - time.monotonic()))


@contextlib.contextmanager
def deadline_of(seconds: float) -> Iterator[float]:
    """Run the block as one storage call ending ``seconds`` from now (an enclosing call's end wins)."""
    outer = _deadline.get()
    end = time.monotonic() + seconds
    if outer is not None:
        end = min(end, outer)
    token = _deadline.set(end)
    try:
        yield end
    finally:
        _deadline.reset(token)


# ---- classification ---------------------------------------------------------------------------------


def caused_by(error: BaseException, names: Collection[str]) -> bool:
    """Whether ``error`` or any of its causes is an exception whose class name is in ``names``.

    Backends classify SDK errors by name so they need not import every transport's exception types.
    """
    return any(type(item).__name__ in names for item in causes(error))


# ---- the retry loop ----------------------------------------------------------------------------------


def with_retries(
    operation: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    describe: str,
    attempts: int | None = None,
    delay: float | None = None,
    backoff: float | None = None,
    policy: StoragePolicy | None = None,
    secrets: Iterable[str | None] = (),
) -> T:
    """Run ``operation``; retry it while ``transient(error)`` holds, within ``policy``.

    ``policy`` defaults to :class:`StoragePolicy` with the deadline of :func:`resolve_deadline`;
    ``attempts``, ``delay`` and ``backoff`` override its fields. ``FileNotFoundError`` passes straight
    through (a missing key is an answer, not a failure). Any other error, or a transient one that
    outlived its attempts or the deadline, becomes :class:`DatastoreError` whose message starts with
    ``describe`` (say ``"write s3://bucket/key"``) and names the cause, credentials masked. Each retry
    is logged as a WARNING on ``laminar.storage``.
    """
    policy = policy or StoragePolicy(deadline=resolve_deadline(None))
    overrides = {
        name: value
        for name, value in (("attempts", attempts), ("delay", delay), ("backoff", backoff))
        if value is not None
    }
    if overrides:
        policy = StoragePolicy(**{**policy.__dict__, **overrides})
    secrets = tuple(secrets)
    shown = redact(describe, secrets)
    start = time.monotonic()
    failure: DatastoreError | None = None
    with deadline_of(policy.deadline) as end:
        for attempt in range(1, policy.attempts + 1):
            try:
                return operation()
            except FileNotFoundError:
                raise
            except Exception as error:
                cause = describe_error(error, secrets)
                tried = f" after {attempt} attempts" if attempt > 1 else ""
                if attempt < policy.attempts and transient(error):
                    left = end - time.monotonic()
                    wait = policy.wait(attempt)
                    if wait < left - 0.05:
                        logger.warning(
                            "%s: attempt %d of %d failed (%s); retrying in %.2fs (%.1fs left of the %gs deadline)",
                            shown,
                            attempt,
                            policy.attempts,
                            cause,
                            wait,
                            left,
                            policy.deadline,
                        )
                        time.sleep(wait)
                        continue
                    failure = DatastoreError(
                        f"{shown} failed{tried}: {cause} (gave up after {time.monotonic() - start:.1f}s: "
                        f"the storage deadline is {policy.deadline:g}s; set deadline= on the datastore or "
                        f"{DEADLINE_VARIABLE})"
                    )
                else:
                    failure = DatastoreError(f"{shown} failed{tried}: {cause}")
                failure.__cause__ = error
                break
    if failure is not None:
        # Raised outside the except clause, so a cause cut by scrub() does not come back as context.
        raise scrub(failure, secrets)
    raise AssertionError("unreachable")  # pragma: no cover
