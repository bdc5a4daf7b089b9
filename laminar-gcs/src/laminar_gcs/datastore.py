"""``gs://bucket/prefix`` — Google Cloud Storage on the google-cloud-storage SDK.

Project and credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server) or from the constructor. When
``STORAGE_EMULATOR_HOST`` is set (or ``endpoint=`` is given) the client talks to that emulator with
anonymous credentials.

The SDK's own retries (which may wait two minutes) are switched off; every primitive runs under
Laminar's retry loop instead (the one policy of every object store: jittered back-off, at most
``attempts`` tries inside one ``deadline`` per call, each retry logged on ``laminar.storage``), with
every request's time-outs capped by what is left of the deadline, so an unreachable or silent endpoint
gives a :class:`~laminar.errors.DatastoreError` naming the URL within the deadline.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from laminar.errors import ConfigurationError, DatastoreError
from laminar.plugins import BucketURL, ObjectStore, buffered_reader, causes

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.storage import Bucket, Client  # type: ignore[import-untyped, unused-ignore]

_URL = BucketURL(
    schemes=("gs", "gcs"),
    service="GCS",
    title="a Google Cloud Storage",
    pattern=re.compile(r"^[a-z0-9][a-z0-9._\-]{1,61}[a-z0-9]$"),
    rule="use 3-63 lowercase letters, digits, dots, hyphens and underscores, starting and ending with a "
    "letter or digit",
)

_TRANSIENT_NAMES = {
    # google.api_core.exceptions
    "TooManyRequests",
    "InternalServerError",
    "BadGateway",
    "ServiceUnavailable",
    "GatewayTimeout",
    # requests / urllib3 / google.auth transport
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "ChunkedEncodingError",
    "ProtocolError",
    "NewConnectionError",
    "MaxRetryError",
    "TransportError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "TimeoutError",
    "RemoteDisconnected",
    "IncompleteRead",
    "ReadTimeoutError",
    # google.resumable_media: a cut or damaged transfer of an upload or download
    "InvalidResponse",
    "DataCorruption",
}


class BucketNotFound(DatastoreError):
    """The bucket named in the URL does not exist (or these credentials cannot see it)."""


def _not_found(error: BaseException) -> bool:
    return type(error).__name__ == "NotFound" or getattr(error, "code", None) == 404


def parse_url(url: str) -> tuple[str, str]:
    """Split ``gs://bucket/some/prefix`` (or ``bucket/some/prefix``) into bucket and prefix."""
    return _URL.parse(url)


class GCS(ObjectStore["Client", "Bucket"]):
    """Stores keys as objects below ``gs://bucket/prefix``.

    ``GCS("gs://bucket/prefix")`` or ``GCS("bucket/prefix")``; options:

    - ``project``: the project to bill (default: from the credentials / ``GOOGLE_CLOUD_PROJECT``);
    - ``credentials``: a ``google.auth`` credentials object or the path of a service-account JSON key
      (default: Application Default Credentials);
    - ``endpoint``: an emulator or private endpoint (default: ``STORAGE_EMULATOR_HOST``); with an
      emulator and no credentials the client is anonymous;
    - ``deadline`` (seconds, default ``LAMINAR_STORAGE_DEADLINE``, else 60) bounds every call, retries
      included; ``attempts`` (default 8) its tries; ``connect_timeout`` / ``read_timeout`` one request;
    - ``chunk_size``: bytes per request of resumable uploads and streaming reads.
    """

    schemes = _URL.schemes
    transient_names = frozenset(_TRANSIENT_NAMES)

    def __init__(
        self,
        url: str,
        *,
        project: str | None = None,
        credentials: Credentials | str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        attempts: int | None = None,
        chunk_size: int | None = None,
        max_workers: int | None = None,
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
        self.project = project
        if isinstance(credentials, (str, os.PathLike)):
            credentials = os.fspath(credentials)
            if not os.path.isfile(credentials):
                raise ConfigurationError(
                    f"the GCS credentials file {credentials!r} does not exist; pass the path of a "
                    "service-account JSON key, or leave credentials out to use Application Default Credentials"
                )
        self.credentials = credentials
        self.endpoint = endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or None
        self._explicit_endpoint = endpoint is not None
        self.chunk_size = chunk_size

    @classmethod
    def from_url(cls, url: str) -> GCS:
        return cls(url)

    @property
    def _timeout(self) -> tuple[float, float]:
        """(connect, read) time-outs of the next request: at most what is left of the call's deadline."""
        return self._timeouts()

    def _secrets(self) -> tuple[str | None, ...]:
        token = getattr(self.credentials, "token", None)
        return (token if isinstance(token, str) else None,)

    def _transient(self, error: BaseException) -> bool:
        return super()._transient(error) or any(
            getattr(item, "code", None) in self.transient_status
            or getattr(getattr(item, "response", None), "status_code", None) in self.transient_status
            for item in causes(error)
        )

    # ---- the client ----------------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        return self.endpoint

    def _connect(self) -> Client:
        try:
            import requests.adapters
            from google.cloud import storage  # type: ignore[import-untyped, unused-ignore]
        except ImportError as error:  # pragma: no cover - a dependency
            raise DatastoreError(
                "the GCS datastore needs google-cloud-storage: build the wheels with ./run build in the Laminar repository, then pip install 'laminar[gcs]' --find-links dist/"
            ) from error
        credentials: Any = self.credentials
        if isinstance(credentials, str):
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call, unused-ignore]
                    credentials
                )
            except (ValueError, KeyError) as error:
                raise ConfigurationError(
                    self.redact(
                        f"the credentials of {self.url}, {self.credentials!r}, are not a service-account "
                        f"JSON key: {error}"
                    )
                ) from None  # the parser's error may quote the key
        kwargs: dict[str, Any] = {}
        project: str | None
        if self.endpoint:
            endpoint = self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}"
            if self._explicit_endpoint:
                kwargs["client_options"] = {"api_endpoint": endpoint}
            if credentials is None:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()  # type: ignore[no-untyped-call, unused-ignore]
            project = self.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "laminar-emulator"
        else:
            project = self.project
        try:
            client = storage.Client(project=project, credentials=credentials, **kwargs)
        except Exception as error:
            raise DatastoreError(
                self.redact(
                    f"cannot create a Google Cloud Storage client for {self.url}: {type(error).__name__}: {error}. "
                )
                + "Set up Application Default Credentials (gcloud auth application-default login, or "
                "GOOGLE_APPLICATION_CREDENTIALS=/path/key.json), or pass credentials= and project="
            ) from error
        # One pooled connection per batch thread instead of requests' default of ten.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(10, self.max_workers))
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        return client

    def _open_bucket(self, client: Client) -> Bucket:
        return client.bucket(self.bucket_name)

    def _disconnect(self, client: Client) -> None:
        client.close()

    def _check_bucket(self, bucket: Bucket) -> None:
        try:
            found = bucket.exists(retry=None, timeout=self._timeout)
        except Exception as error:
            if type(error).__name__ in ("Forbidden", "Unauthorized"):
                return  # may lack storage.buckets.get yet reach objects; let each call decide
            raise
        if not found:
            raise self._bucket_not_found()

    def _bucket_not_found(self) -> BucketNotFound:
        return BucketNotFound(
            f"GCS bucket {self.bucket_name!r} does not exist{self._where()} (datastore {self.url}); "
            f"create it first (gcloud storage buckets create gs://{self.bucket_name}) or fix the URL"
        )

    # ---- primitives ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        def read(bucket: Bucket) -> bytes:
            try:
                return cast(
                    bytes, bucket.blob(self._object(key)).download_as_bytes(retry=None, timeout=self._timeout)
                )
            except Exception as error:
                if _not_found(error):
                    raise self._missing(key) from error
                raise

        return self._call("read", key, read)

    def open_read(self, key: str) -> BinaryIO:
        def open_(bucket: Bucket) -> BinaryIO:
            # One streamed GET of the media, whatever the size (the SDK's BlobReader sends one
            # ranged request per chunk, and ``download_as_bytes`` holds the whole value).
            assert self._client is not None
            blob = bucket.blob(self._object(key))
            url = blob._get_download_url(self._client)
            response = self._client._http.get(url, stream=True, timeout=self._timeout)
            if response.status_code == 404:
                response.close()
                raise self._missing(key)
            if response.status_code >= 400:
                try:
                    from google.cloud.exceptions import from_http_response

                    raise from_http_response(response)  # type: ignore[no-untyped-call, unused-ignore]
                finally:
                    response.close()
            response.raw.decode_content = True
            return buffered_reader(response.raw.read, response.close)  # closing frees the connection

        return self._call("read", key, open_)

    def write_bytes(self, key: str, data: bytes) -> None:
        def write(bucket: Bucket) -> None:
            blob = bucket.blob(self._object(key), chunk_size=self.chunk_size)
            blob.upload_from_string(
                bytes(data), content_type="application/octet-stream", retry=None, timeout=self._timeout
            )

        self._call("write", key, write)

    @property
    def atomic_create(self) -> bool:  # type: ignore[override]
        """Real GCS honours ``if_generation_match``; gcp-storage-emulator (``STORAGE_EMULATOR_HOST``)
        ignores it, so there the lease falls back to waiting and reading back what it wrote."""
        return not os.environ.get("STORAGE_EMULATOR_HOST")

    def create(self, key: str, data: bytes) -> bool:
        """Asks first, then uploads with ``if_generation_match=0``, which GCS refuses when the object
        appeared meanwhile."""

        def create(bucket: Bucket) -> bool:
            blob = bucket.blob(self._object(key), chunk_size=self.chunk_size)
            if blob.exists(timeout=self._timeout, retry=None):
                return False
            try:
                blob.upload_from_string(
                    bytes(data),
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    retry=None,
                    timeout=self._timeout,
                )
            except Exception as error:
                if type(error).__name__ == "PreconditionFailed":
                    return False
                raise
            return True

        return self._call("create", key, create)

    def write_file(self, key: str, path: str) -> None:
        def write(bucket: Bucket) -> None:
            # Resumable upload read from the file chunk by chunk: never the whole value in memory.
            blob = bucket.blob(self._object(key), chunk_size=self.chunk_size)
            blob.upload_from_filename(
                path, content_type="application/octet-stream", retry=None, timeout=self._timeout
            )

        self._call("write", key, write)

    def exists(self, key: str) -> bool:
        return self._call(
            "check",
            key,
            lambda bucket: bool(bucket.blob(self._object(key)).exists(retry=None, timeout=self._timeout)),
        )

    def _list(self, bucket: Bucket, path: str) -> list[str]:
        assert self._client is not None
        try:
            iterator = self._client.list_blobs(
                bucket, prefix=path, delimiter="/", retry=None, timeout=self._timeout
            )
            names = [blob.name for blob in iterator]
        except Exception as error:
            if _not_found(error):
                raise self._bucket_not_found() from error
            raise
        return names + list(iterator.prefixes)

    def delete(self, key: str) -> None:
        def delete(bucket: Bucket) -> None:
            try:
                bucket.blob(self._object(key)).delete(retry=None, timeout=self._timeout)
            except Exception as error:
                if not _not_found(error):
                    raise

        self._call("delete", key, delete)
