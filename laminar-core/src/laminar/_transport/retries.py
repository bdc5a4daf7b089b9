"""Bounded retries with back-off for transient storage errors, shared by every backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TypeVar

from laminar._model.configuration import Retry
from laminar.errors import DatastoreError

T = TypeVar("T")


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it (``__cause__``, else ``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def caused_by(error: BaseException, names: Collection[str]) -> bool:
    """Whether ``error`` or any of its causes is an exception whose class name is in ``names``.

    Backends classify SDK errors by name so they need not import every transport's exception types.
    """
    return any(type(item).__name__ in names for item in causes(error))


def with_retries(
    operation: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    describe: str,
    attempts: int = 4,
    delay: float = 0.2,
    backoff: float = 2.0,
) -> T:
    """Run ``operation``; retry it while ``transient(error)`` holds, at most ``attempts`` times in all.

    ``FileNotFoundError`` passes straight through (a missing key is an answer, not a failure). Any
    other error, or a transient one that outlived its retries, becomes :class:`DatastoreError` whose
    message starts with ``describe`` (say ``"write s3://bucket/key"``) and names the cause.
    """
    policy = Retry(attempts=attempts, delay=delay, backoff=backoff, jitter=0.1)
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except FileNotFoundError:
            raise
        except Exception as error:
            if attempt < attempts and transient(error):
                time.sleep(policy.wait(attempt))
                continue
            tried = f" after {attempt} attempts" if attempt > 1 else ""
            raise DatastoreError(f"{describe} failed{tried}: {type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")  # pragma: no cover
