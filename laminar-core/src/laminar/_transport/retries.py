"""Bounded retries with back-off for transient storage errors, shared by every backend.

One policy (:class:`StoragePolicy`) for S3, GCS and Azure: a transient error (a reset or refused
connection, a time-out, HTTP 408/429/500/502/503/504) is tried again after a jittered exponential
back-off (:meth:`laminar._model.configuration.Retry.wait`, the one back-off formula), at most
``attempts`` times in all and never past one overall ``deadline`` per storage call. Every retry is one
WARNING line on the ``laminar.storage`` logger. Anything else fails at once.

:func:`redact` masks credentials (passwords in URLs, SAS signatures, account keys, secret keys) in any
text before it is shown: messages, log lines, reprs.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from laminar._model.configuration import Retry
from laminar.errors import ConfigurationError, DatastoreError, add_note

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


# ---- masking credentials ----------------------------------------------------------------------------

_MASK = "***"
#: ``scheme://user:password@host``: the password.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@'\"]*):([^/\s@'\"]*)@")
#: ``AccountKey=...`` and the like in connection strings; up to the next ``;`` or quote or space.
_FIELDS = re.compile(
    r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd|ClientSecret)=([^;\s'\"]+)"
)
#: URL query parameters that are credentials (SAS signatures, pre-signed URLs, tokens).
_QUERY = re.compile(
    r"(?i)([?&;](?:sig|signature|x-amz-signature|x-amz-security-token|x-amz-credential|"
    r"x-goog-signature|x-goog-credential|access_token|token|password|secret|code)=)([^&\s'\"#;]+)"
)
#: ``secret='...'`` / ``"password": "..."`` / ``AWS_SECRET_ACCESS_KEY=...`` in reprs and messages.
_ASSIGNED = re.compile(
    r"(?i)(\b(?:aws_secret_access_key|aws_session_token|secret_access_key|session_token|secret|"
    r"password|passwd|account_key|sas_token|client_secret|private_key|azure_storage_key|"
    r"azure_storage_sas_token)['\"]?\s*[:=]\s*['\"]?)([^'\"\s,;&)}]+)"
)
#: Environment variables whose values are secrets wherever they appear.
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
#: Shorter literal secrets are not masked: they would mangle ordinary words.
_SHORTEST_SECRET = 8


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential in it masked as ``***``.

    Masks the password of ``scheme://user:password@host``; ``AccountKey=``, ``SharedAccessSignature=``,
    ``Password=`` fields of connection strings; ``sig=``, ``X-Amz-Signature=``, ``token=``... query
    parameters; ``secret=...``-style assignments; the values of :data:`SECRET_VARIABLES` in the
    environment; and any of ``secrets`` (literal values a backend knows are secret, 8+ characters).
    """
    literal = {value for value in secrets if value and len(value) >= _SHORTEST_SECRET}
    literal.update(
        value
        for name in SECRET_VARIABLES
        if (value := os.environ.get(name)) and len(value) >= _SHORTEST_SECRET
    )
    for value in sorted(literal, key=len, reverse=True):
        text = text.replace(value, _MASK)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{_MASK}@", text)
    text = _FIELDS.sub(lambda m: f"{m.group(1)}={_MASK}", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}{_MASK}", text)
    return _ASSIGNED.sub(lambda m: f"{m.group(1)}{_MASK}", text)


def describe_error(error: BaseException, secrets: Iterable[str | None] = (), limit: int = 500) -> str:
    """``Type: message`` of ``error`` (and of its root cause), credentials masked, at most ``limit`` characters."""
    text = f"{type(error).__name__}: {str(error) or 'no answer in time' if isinstance(error, TimeoutError) else error}"
    root = causes(error)[-1]
    if root is not error and str(root) and str(root) not in text:
        text += f" (from {type(root).__name__}: {root})"  # a wrapper's message may hide the status
    text = " ".join(redact(text, secrets).split())  # one line: SDK messages run over several
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(error: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """Cut ``error``'s chain of causes above the first one whose message shows a credential.

    A traceback prints every cause; an SDK's error may quote an endpoint with its password. The
    masked text of the cut cause is kept as a note on the error above it. Returns ``error``.
    """
    secrets = tuple(secrets)
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 50:
        seen.append(current)
        below = current.__cause__ if current.__cause__ is not None else current.__context__
        if current.__cause__ is None and current.__suppress_context__:
            below = None
        if below is None:
            break
        text = f"{type(below).__name__}: {below}"
        leaked = [text, *(str(note) for note in getattr(below, "__notes__", ()))]
        if any(redact(item, secrets) != item for item in leaked):
            current.__cause__ = None
            current.__suppress_context__ = True
            add_note(
                current,
                f"caused by {describe_error(below, secrets)} (its traceback is not shown: it names a credential)",
            )
            break
        current = below
    return error


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
