"""``s3://bucket/prefix`` — Amazon S3 and S3-compatible stores (MinIO, moto, R2, ...) on s3fs.

Credentials, region and endpoint come from the constructor or from the usual AWS sources
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``~/.aws/config``, instance roles, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION``).

Every call is bounded: botocore does not retry; Laminar's own retry loop (the one policy of every
object store: jittered back-off, at most ``attempts`` tries inside one ``deadline`` per call, each retry
logged on ``laminar.storage``) runs around each primitive, and each request is cut at what is left of
the deadline, so an unreachable or silent endpoint gives a :class:`~laminar.errors.DatastoreError`
naming the URL within the deadline instead of hanging. Messages never show the secret key, the token,
or a password in ``endpoint_url``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from laminar.errors import ConfigurationError, DatastoreError
from laminar.plugins import BucketURL, ObjectStore, buffered_reader, causes

if TYPE_CHECKING:
    from s3fs import S3FileSystem

#: Exception class names (botocore, aiohttp, urllib3) that mean "try again".
_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "HTTPClientError",
    "ProxyConnectionError",
    "ClientConnectorError",
    "ClientOSError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "TimeoutError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "FSTimeoutError",
    "ServerTimeoutError",
}

_URL = BucketURL(
    schemes=("s3",),
    service="S3",
    title="an S3",
    pattern=re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"),
    rule="use 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit",
)

#: S3 error codes worth retrying.
_TRANSIENT_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "408",
    "429",
    "500",
    "502",
    "503",
    "504",
}


_PART_SIZE = 16 * 2**20
_PARTS_IN_FLIGHT = 4


class BucketNotFound(DatastoreError):
    """The bucket named in the URL does not exist (or this account cannot see it)."""


class CredentialsRejected(DatastoreError):
    """S3 refused the credentials (unknown key, bad secret, expired token) or denied access."""


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccessDenied",
    "AllAccessDisabled",
    "403",
}


def _error_code(error: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``AccessDenied``, ``404``) behind ``error``, if any."""
    for item in causes(error):
        response = getattr(item, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code is not None:
                return str(code)
    return None


def parse_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` (or ``bucket/some/prefix``) into bucket and prefix."""
    return _URL.parse(url)


class S3(ObjectStore["S3FileSystem", "S3FileSystem"]):
    """Stores keys as objects below ``s3://bucket/prefix``.

    ``S3("s3://bucket/prefix")`` or ``S3("bucket/prefix")``; options:

    - ``endpoint_url``: an S3-compatible endpoint (default: ``AWS_ENDPOINT_URL_S3``,
      ``AWS_ENDPOINT_URL``, else AWS itself);
    - ``region``, ``profile``; ``key`` / ``secret`` / ``token`` for explicit credentials,
      ``anon=True`` for public buckets;
    - ``deadline`` (seconds, default ``LAMINAR_STORAGE_DEADLINE``, else 60) bounds every call, retries
      included; ``attempts`` (default 8) its tries; ``connect_timeout`` / ``read_timeout`` one request;
    - ``options``: more keyword arguments for :class:`s3fs.S3FileSystem`.
    """

    schemes = _URL.schemes
    transient_names = frozenset(_TRANSIENT_NAMES)

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        anon: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        attempts: int | None = None,
        max_workers: int | None = None,
        options: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(
            *parse_url(url),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
            max_workers=max_workers,
            deadline=deadline,
        )
        self.endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        self.region = region
        self.profile = profile
        self.key = key
        self.secret = secret
        self.token = token
        self.anon = anon
        self.options = dict(options or {})
        if self.endpoint_url and "@" in self.endpoint_url.partition("://")[2].partition("/")[0]:
            raise ConfigurationError(
                self.redact(
                    f"the S3 endpoint {self.endpoint_url} has a user name or password in it; S3 signs each "
                    "request with an access key instead: write the endpoint without them and pass key= and "
                    "secret= (or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                )
            )

    @classmethod
    def from_url(cls, url: str) -> S3:
        return cls(url)

    @property
    def bucket(self) -> str:
        return self.bucket_name

    # ---- the client ----------------------------------------------------------------------------
    def _connect(self) -> S3FileSystem:
        try:
            from s3fs import S3FileSystem
        except ImportError as error:  # pragma: no cover - s3fs is a dependency
            raise DatastoreError(
                "the S3 datastore needs s3fs: build the wheels with ./run build in the Laminar repository, then pip install 'laminar[s3]' --find-links dist/"
            ) from error
        client_kwargs: dict[str, Any] = {}
        if self.region:
            client_kwargs["region_name"] = self.region
        config_kwargs: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            # botocore does not retry: ours is the one loop, bounded by the deadline and logged.
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "max_pool_connections": max(10, self.max_workers),
        }
        kwargs: dict[str, Any] = {
            "anon": self.anon,
            "endpoint_url": self.endpoint_url,
            "key": self.key,
            "secret": self.secret,
            "token": self.token,
            "client_kwargs": client_kwargs,
            "config_kwargs": config_kwargs,
            "skip_instance_cache": True,
            "use_listings_cache": False,
        }
        if self.profile:
            kwargs["profile"] = self.profile
        kwargs.update(self.options)
        fs = S3FileSystem(**kwargs)
        fs.retries = 1  # s3fs's own retry loop; ours (with_retries) is the one that counts
        return fs

    def _endpoint(self) -> str | None:
        return self.endpoint_url

    def _secrets(self) -> tuple[str | None, ...]:
        options = [value for name, value in self.options.items() if name in ("secret", "token", "key")]
        return (self.key, self.secret, self.token, os.environ.get("AWS_ACCESS_KEY_ID"), *options)

    def _check_bucket(self, fs: S3FileSystem) -> None:
        """Fail early, and clearly, when the bucket is missing or the endpoint unreachable."""
        try:
            fs.call_s3("head_bucket", Bucket=self.bucket, timeout=self._remaining())
        except Exception as error:
            code = _error_code(error)
            if code in ("404", "NoSuchBucket") or (code is None and isinstance(error, FileNotFoundError)):
                raise self._bucket_not_found() from error
            if code in ("403", "AccessDenied", "301", "PermanentRedirect", "400"):
                return  # may lack s3:ListBucket but still reach objects; let each call decide
            raise

    def _bucket_not_found(self) -> BucketNotFound:
        return BucketNotFound(
            f"S3 bucket {self.bucket!r} does not exist{self._where()} (datastore {self.url}); "
            "create it first (aws s3 mb s3://{0}) or fix the URL".format(self.bucket)
        )

    def _transient(self, error: BaseException) -> bool:
        if any(type(item) in (ValueError, TypeError) for item in causes(error)):
            return False  # botocore's HTTPClientError wraps the client's refusal of a bad request too
        return super()._transient(error) or _error_code(error) in _TRANSIENT_CODES

    def _classify(self, error: Exception) -> DatastoreError | None:
        code = _error_code(error)
        if isinstance(error, FileNotFoundError):
            return self._bucket_not_found() if code == "NoSuchBucket" else None
        if code in _CREDENTIAL_CODES or type(error).__name__ in (
            "NoCredentialsError",
            "PartialCredentialsError",
        ):
            return self._credentials_rejected(code or type(error).__name__, error)
        return None

    def _credentials_rejected(self, code: str, error: BaseException) -> CredentialsRejected:
        return CredentialsRejected(
            f"S3{self._where()} refused the credentials for {self.url} ({code}: {error}); check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, or the key=, "
            "secret=, token=, profile= options, and that they may read and write this bucket"
        )

    # ---- primitives ----------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self.bucket}/{self._object(key)}"

    def _get(self, fs: S3FileSystem, key: str) -> Any:
        """One ``GetObject`` (s3fs's ``cat_file`` adds a ``HeadObject`` first); returns its body."""
        try:
            response = fs.call_s3(
                "get_object", Bucket=self.bucket, Key=self._object(key), timeout=self._remaining()
            )
        except FileNotFoundError as error:
            if _error_code(error) == "NoSuchBucket":
                raise
            raise self._missing(key) from error
        return response["Body"]

    def read_bytes(self, key: str) -> bytes:
        def read(fs: S3FileSystem) -> bytes:
            body = self._get(fs, key)
            try:
                return cast(bytes, _sync(fs, body.read, timeout=self._remaining()))
            finally:
                _sync(fs, body.aclose)

        return self._call("read", key, read)

    def open_read(self, key: str) -> BinaryIO:
        def open_(fs: S3FileSystem) -> BinaryIO:
            body = self._get(fs, key)
            return buffered_reader(lambda size: _sync(fs, body.read, size), lambda: _sync(fs, body.aclose))

        return self._call("read", key, open_)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "write", key, lambda fs: fs.pipe_file(self._path(key), bytes(data), timeout=self._remaining())
        )

    atomic_create = True

    def create(self, key: str, data: bytes) -> bool:
        """A conditional write (``If-None-Match: *``): of two racing creators exactly one succeeds."""

        def create(fs: S3FileSystem) -> bool:
            try:
                fs.pipe_file(self._path(key), bytes(data), mode="create", timeout=self._remaining())
            except FileExistsError:
                return False
            return True

        return self._call("create", key, create)

    def write_file(self, key: str, path: str) -> None:
        # A multipart upload of 16 MiB parts, four in flight, read from the file as they go: at most
        # 64 MiB of the value in memory (s3fs's defaults, 50 MiB x 10, would hold a 256 MiB value whole).
        size = os.path.getsize(path)
        part = max(_PART_SIZE, -(-size // 10_000))  # S3 allows 10,000 parts

        def upload(fs: S3FileSystem) -> None:
            fs.put_file(path, self._path(key), chunksize=part, max_concurrency=_PARTS_IN_FLIGHT)

        self._call("write", key, upload)

    def exists(self, key: str) -> bool:
        def head(fs: S3FileSystem) -> bool:
            try:
                fs.call_s3(
                    "head_object", Bucket=self.bucket, Key=self._object(key), timeout=self._remaining()
                )
            except FileNotFoundError:
                return False
            return True

        return self._call("check", key, head)

    def _list(self, fs: S3FileSystem, path: str) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": path, "Delimiter": "/"}
        try:
            while True:
                page = fs.call_s3("list_objects_v2", **kwargs, timeout=self._remaining())
                names.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
                names.extend(item["Key"] for item in page.get("Contents", []))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return names
                kwargs["ContinuationToken"] = token
        except FileNotFoundError as error:
            raise self._bucket_not_found() from error

    def delete(self, key: str) -> None:
        def delete(fs: S3FileSystem) -> None:
            fs.call_s3("delete_object", Bucket=self.bucket, Key=self._object(key), timeout=self._remaining())

        self._call("delete", key, delete)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` with S3's bulk delete: one request per 1,000 keys."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]

            def delete(fs: S3FileSystem, chunk: Sequence[str] = chunk) -> None:
                objects = [{"Key": self._object(key)} for key in chunk]
                answer = fs.call_s3(
                    "delete_objects",
                    Bucket=self.bucket,
                    Delete={"Objects": objects, "Quiet": True},
                    timeout=self._remaining(),
                )
                if answer.get("Errors"):
                    error = answer["Errors"][0]
                    raise OSError(f"S3 did not delete {error.get('Key')}: {error.get('Message')}")

            self._call("delete", chunk[0], delete)


def _sync(fs: S3FileSystem, function: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Run a coroutine function of aiobotocore on s3fs's event loop and wait for it (cut at ``timeout``)."""
    from fsspec.asyn import sync  # type: ignore[import-untyped, unused-ignore]

    return sync(fs.loop, function, *args, timeout=timeout)
