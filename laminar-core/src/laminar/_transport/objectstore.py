"""The shared shape of the object-store backends (S3, GCS, Azure): a bucket, a prefix, one SDK client.

:class:`ObjectStore` is a :class:`~laminar._transport.datastore.Datastore` for services that keep objects in
a bucket (Azure: a container) under ``scheme://bucket/prefix``. It owns what every such backend does
alike: the bucket and prefix, object names below the prefix, a client created on first use under a
lock and dropped on pickling, a first-use check that the bucket exists, delimiter listing, and
:meth:`~ObjectStore._call`, which runs one request under
:func:`~laminar._transport.retries.with_retries` and turns errors into ones that name the URL. A backend
implements a few hooks with its SDK (``_connect``, ``_check_bucket``, ``_bucket_not_found``, ``_list``,
optionally ``_open_bucket``, ``_classify``, ``_transient``, ``_endpoint``, ``_disconnect``) and the byte
primitives, each a call of ``self._call(verb, key, operation)``.

:class:`BucketURL` parses and validates the URLs, with messages that name the service;
:func:`buffered_reader` is the ``open_read`` stream over an SDK's streamed download.

Every call is bounded the same way on every backend (:class:`~laminar._transport.retries.StoragePolicy`):
transient errors are retried with jittered back-off inside one ``deadline`` per call (the ``deadline=``
option, else ``LAMINAR_STORAGE_DEADLINE``, else 60 s), the SDKs' time-outs capped by what is left of it
(:meth:`ObjectStore._timeouts`), each retry logged on ``laminar.storage``. Whatever is shown (messages,
log lines, ``repr``) goes through :meth:`ObjectStore.redact` first (the one masking policy of
:mod:`laminar._transport.masking`): no credential is ever printed.
"""

from __future__ import annotations

import abc
import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Generic, TypeVar, cast

from laminar._transport.datastore import Datastore
from laminar._transport.masking import masked, redact
from laminar._transport.retries import (
    TRANSIENT_STATUS,
    StoragePolicy,
    caused_by,
    deadline_of,
    remaining,
    resolve_deadline,
    with_retries,
)
from laminar.errors import ConfigurationError, DatastoreError, LaminarError

T = TypeVar("T")
ClientT = TypeVar("ClientT")
BucketT = TypeVar("BucketT")


@dataclass(frozen=True)
class BucketURL:
    """The form of one service's ``scheme://bucket/prefix`` URLs, and the words its messages use."""

    #: The schemes the URL may have (the first one is the one messages write).
    schemes: tuple[str, ...]
    #: The service in ``the S3 URL ...`` / ``not a valid S3 bucket name``.
    service: str
    #: The service with its article, in ``not an S3 URL``.
    title: str
    #: A valid bucket name, and what one is (``use 3-63 lowercase letters, ...``).
    pattern: re.Pattern[str]
    rule: str
    #: What the service calls a bucket.
    bucket: str = "bucket"

    @property
    def example(self) -> str:
        return f"{self.schemes[0]}://{self.bucket}/prefix"

    def parse(self, url: str) -> tuple[str, str]:
        """Split ``scheme://bucket/some/prefix`` (or ``bucket/some/prefix``) into bucket and prefix."""
        bucket, prefix = self.split(url)
        return bucket, self.check(url, bucket, prefix)

    def split(self, url: str) -> tuple[str, str]:
        """Check the scheme; the part before the first ``/``, and the rest, unchecked."""
        rest = url
        if "://" in url:
            scheme, _, rest = url.partition("://")
            if scheme not in self.schemes:
                raise ConfigurationError(f"not {self.title} URL: {_shown(url)!r}; write {self.example}")
        bucket, _, prefix = rest.partition("/")
        return bucket, prefix

    def check(self, url: str, bucket: str, prefix: str) -> str:
        """Validate the bucket name and the prefix of ``url``; the prefix without outer ``/``."""
        url, bucket = _shown(url), _shown(bucket)  # as messages show them: no password
        if not bucket:
            raise ConfigurationError(
                f"the {self.service} URL {url!r} names no {self.bucket}; write {self.example}"
            )
        if not self.pattern.match(bucket) or ".." in bucket:
            raise ConfigurationError(
                f"{bucket!r} in {url!r} is not a valid {self.service} {self.bucket} name: {self.rule}"
            )
        if "?" in prefix or "#" in prefix:
            raise ConfigurationError(
                f"the {self.service} URL {url!r} has a query or fragment; write {self.example}"
            )
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ConfigurationError(f"the prefix of {url!r} has an empty, '.' or '..' part")
        return prefix


_BUCKET_USERINFO = re.compile(r"^([^:@/]*):[^@/]*@")


def _shown(text: str) -> str:
    """``text`` as messages show it: credentials masked (``user:pw@bucket`` too, without a scheme)."""
    return redact(_BUCKET_USERINFO.sub(r"\1:***@", text))


class RawReader(io.RawIOBase):
    """A raw binary stream over a streamed download, read piece by piece as it is consumed.

    ``read(n)`` returns at most ``n`` bytes (``b""`` at the end); ``close()``, if given, runs once when
    the stream is closed and frees what the download holds (the body, the connection).
    """

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], object] | None = None) -> None:
        super().__init__()
        self._read = read
        self._release = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                if self._release is not None:
                    self._release()
            finally:
                super().close()


def buffered_reader(read: Callable[[int], bytes], close: Callable[[], object] | None = None) -> BinaryIO:
    """A :class:`RawReader` over ``read`` and ``close`` behind a 1 MiB buffer: what ``open_read`` returns."""
    return cast(BinaryIO, io.BufferedReader(RawReader(read, close), buffer_size=2**20))


class ObjectStore(Datastore, Generic[ClientT, BucketT]):
    """A datastore of objects named ``prefix/key`` in one bucket, reached through one SDK client.

    ``ClientT`` is what :meth:`_connect` returns, ``BucketT`` what each operation is given (the SDK's
    bucket or container object, or the client itself). Subclasses parse their URL, call
    ``super().__init__(bucket, prefix, ...)``, implement the hooks and the primitives, and drop
    nothing else on pickling: the client, the bucket and the first-use check are dropped here.

    ``deadline`` (seconds; default ``LAMINAR_STORAGE_DEADLINE``, else 60) bounds each call, retries
    included; ``attempts`` (default 8) bounds its tries; ``connect_timeout`` / ``read_timeout`` bound
    one request, and are capped by the deadline.
    """

    max_workers = 32
    #: Exception class names (the SDK's, its transport's) that mean "try again"; see :meth:`_transient`.
    transient_names: ClassVar[frozenset[str]] = frozenset()
    #: HTTP statuses that mean "try again", on every backend (time-out, throttling, server errors).
    transient_status: ClassVar[frozenset[int]] = TRANSIENT_STATUS

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        attempts: int | None = None,
        max_workers: int | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        #: The bucket (Azure: container) and the prefix below it, without outer ``/``.
        self.bucket_name = bucket
        self.prefix = prefix
        #: Seconds one storage call may take, retries included.
        self.deadline = resolve_deadline(deadline)
        self.connect_timeout = min(connect_timeout, self.deadline)
        self.read_timeout = min(read_timeout, self.deadline)
        self.attempts = max(1, attempts) if attempts is not None else StoragePolicy.attempts
        if max_workers is not None:
            self.max_workers = max_workers
        self._client: ClientT | None = None
        self._bucket: BucketT | None = None
        self._checked = False
        self._client_lock = threading.Lock()

    @property
    def url(self) -> str:
        where = f"{self.schemes[0]}://{self.bucket_name}"
        return f"{where}/{self.prefix}" if self.prefix else where

    @property
    def policy(self) -> StoragePolicy:
        """How each call is retried: the one policy of every backend, with this store's limits."""
        return StoragePolicy(attempts=self.attempts, deadline=self.deadline)

    def redact(self, text: str) -> str:
        """``text`` with every credential masked: what messages, log lines and reprs show."""
        return redact(text, self._secrets())

    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) time-outs for one request now: at most what is left of the call's deadline."""
        return (remaining(self.connect_timeout), remaining(self.read_timeout))

    def _remaining(self) -> float:
        """Seconds left of the current call's deadline (the whole deadline outside a call)."""
        return remaining(self.deadline)

    def __repr__(self) -> str:
        return self.redact(f"{type(self).__name__}(url={self.url!r})")

    # ---- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> ClientT:
        """Create the SDK client (import the SDK here, not at module level: plugins load cheaply)."""

    def _open_bucket(self, client: ClientT) -> BucketT:
        """What operations act on; by default the client itself."""
        return cast(BucketT, client)

    @abc.abstractmethod
    def _check_bucket(self, bucket: BucketT) -> None:
        """One request that raises :meth:`_bucket_not_found` when the bucket is missing.

        Runs once, on first use, under retries; errors it does not recognise may propagate.
        """

    @abc.abstractmethod
    def _bucket_not_found(self) -> DatastoreError:
        """The error for a missing bucket, naming it, :attr:`url` and how to create it."""

    @abc.abstractmethod
    def _list(self, bucket: BucketT, path: str) -> list[str]:
        """Full names of the objects and "directories" directly below ``path`` (a delimiter listing)."""

    def _classify(self, error: Exception) -> LaminarError | None:
        """The permanent error ``error`` stands for (bucket missing, credentials rejected), if any."""
        return None

    def _transient(self, error: BaseException) -> bool:
        """Whether an SDK error is worth another attempt: by default, one of :attr:`transient_names`."""
        return caused_by(error, self.transient_names)

    def _endpoint(self) -> str | None:
        """The endpoint that messages name (`` at http://...``), if any; it is shown redacted."""
        return None

    def _secrets(self) -> tuple[str | None, ...]:
        """Literal secrets this store holds (keys, tokens), masked wherever they would be shown."""
        return ()

    def _disconnect(self, client: ClientT) -> None:
        """Release the client on :meth:`close`; by default nothing."""

    # ---- derived -------------------------------------------------------------------------------
    def _where(self) -> str:
        endpoint = self._endpoint()
        return f" at {self.redact(endpoint)}" if endpoint else ""

    def _object(self, key: str) -> str:
        """The object name of ``key``: below the prefix."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"no key {key!r} in {self.url}")

    def _open(self) -> BucketT:
        """The bucket, connecting and checking it on first use (once, whichever thread comes first)."""
        bucket = self._bucket
        if bucket is not None and self._checked:
            return bucket
        with self._client_lock:
            if self._bucket is None:
                try:
                    self._client = self._connect()
                    self._bucket = self._open_bucket(self._client)
                except LaminarError as error:
                    self._masked(error)
                    raise
            if not self._checked:
                checked = self._bucket
                self._retrying(lambda: self._check_bucket(checked), f"open {self.url}{self._where()}")
                self._checked = True
            return self._bucket

    def _call(self, verb: str, key: str, operation: Callable[[BucketT], T]) -> T:
        """``operation(bucket)`` under retries; errors become ones naming ``verb`` and the object's URL.

        ``FileNotFoundError`` passes through; :meth:`_classify` turns permanent errors into their own.
        The first-use check and the call share one deadline.
        """
        with deadline_of(self.deadline):
            bucket = self._open()

            def attempt() -> T:
                try:
                    return operation(bucket)
                except Exception as error:
                    problem = self._classify(error)
                    if problem is None:
                        raise
                    raise problem from error

            where = f"{self.schemes[0]}://{self.bucket_name}/{self._object(key)}{self._where()}"
            return self._retrying(attempt, f"{verb} {where}")

    def _masked(self, error: LaminarError) -> LaminarError:
        """``error`` (one of ours) with credentials masked in its message and its causes cut if they show any."""
        masked(error, self._secrets())
        return error

    def _retrying(self, operation: Callable[[], T], describe: str) -> T:
        try:
            return with_retries(
                operation,
                transient=self._retry,
                describe=describe,
                policy=self.policy,
                secrets=self._secrets(),
            )
        except DatastoreError as error:
            cause = error.__cause__
            if isinstance(cause, LaminarError):
                # Ours, raised on purpose: it names the URL already. Shown with credentials masked.
                raise self._masked(cause) from None
            raise

    def _retry(self, error: BaseException) -> bool:
        return not isinstance(error, LaminarError) and self._transient(error)

    def list_prefix(self, prefix: str) -> list[str]:
        path = self._object(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")

        def listing(bucket: BucketT) -> list[str]:
            names = {name[len(path) :].rstrip("/") for name in self._list(bucket, path)}
            names.discard("")
            return sorted(names)

        return self._call("list", prefix, listing)

    def close(self) -> None:
        with self._client_lock:
            client, self._client, self._bucket, self._checked = self._client, None, None, False
        if client is not None:
            self._disconnect(client)
        super().close()

    # ---- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_client=None, _bucket=None, _checked=False)
        state.pop("_client_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._client_lock = threading.Lock()
