"""``az://container/prefix`` — Azure Blob Storage on the azure-storage-blob SDK.

Which account, and how to sign in, in this order:

0. an account named in the URL, ``az://container@account/prefix`` (``abfs[s]://container@account.dfs.
   core.windows.net/prefix`` too), signed in with ``credential=``, ``AZURE_STORAGE_KEY``,
   ``AZURE_STORAGE_SAS_TOKEN`` or ``DefaultAzureCredential``;
1. ``connection_string=`` (an account key, SAS or emulator connection string);
2. ``account_url=`` (``https://ACCOUNT.blob.core.windows.net``) with ``credential=`` (account key,
   SAS token, or a token credential), or without it ``DefaultAzureCredential`` from azure-identity
   (the ``identity`` extra: ``pip install 'laminar-azure[identity]' --find-links dist/`` after
   ``./run build``);
3. the environment: ``AZURE_STORAGE_CONNECTION_STRING``; else ``AZURE_STORAGE_ACCOUNT_URL`` or
   ``AZURE_STORAGE_ACCOUNT_NAME`` (with ``AZURE_STORAGE_KEY`` / ``AZURE_STORAGE_SAS_TOKEN`` or
   ``DefaultAzureCredential``).

The SDK's own retries (which back off for tens of seconds) are switched off; every primitive runs under
Laminar's retry loop instead (the one policy of every object store: jittered back-off, at most
``attempts`` tries inside one ``deadline`` per call, each retry logged on ``laminar.storage``), with
every request's time-outs capped by what is left of the deadline, so an unreachable or silent account
gives a :class:`~laminar.errors.DatastoreError` naming the URL within the deadline. Account keys and
SAS tokens (in the connection string, the account URL or ``credential=``) are never shown.
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any, BinaryIO

from laminar.errors import ConfigurationError, DatastoreError
from laminar.plugins import BucketURL, ObjectStore, buffered_reader

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient, StorageStreamDownloader

_URL = BucketURL(
    schemes=("az", "azure", "abfs", "abfss"),
    service="Azure",
    title="an Azure Blob Storage",
    pattern=re.compile(r"^[a-z0-9](?!.*--)[a-z0-9\-]{1,61}[a-z0-9]$"),
    rule="use 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
    bucket="container",
)
_TRANSIENT_NAMES = {
    # azure.core.exceptions: the request never got an answer, or the answer was cut short
    "ServiceRequestError",
    "ServiceRequestTimeoutError",
    "ServiceResponseError",
    "ServiceResponseTimeoutError",
    "IncompleteReadError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "ChunkedEncodingError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "TimeoutError",
    "RemoteDisconnected",
    "ProtocolError",
}


class ContainerNotFound(DatastoreError):
    """The container named in the URL does not exist in the account."""


class CredentialsRejected(DatastoreError):
    """The account refused the credentials (wrong key, expired SAS, no role)."""


def _code(error: BaseException) -> str | None:
    code = getattr(error, "error_code", None)
    if code is None:
        return None
    return str(getattr(code, "value", code))  # StorageErrorCode is a str enum


def _not_found(error: BaseException) -> bool:
    return type(error).__name__ == "ResourceNotFoundError" or getattr(error, "status_code", None) == 404


_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


def parse_url(url: str) -> tuple[str, str, str | None]:
    """Split ``az://container[@account]/some/prefix`` into container, prefix and account URL.

    The account may be a name (``az://runs@myaccount/p``) or a host
    (``abfs://runs@myaccount.dfs.core.windows.net/p``, as adlfs and Spark write it); either becomes
    ``https://myaccount.blob.core.windows.net``.
    """
    container, prefix = _URL.split(url)
    account_url: str | None = None
    if "@" in container:
        container, _, host = container.partition("@")
        account, _, domain = host.partition(".")
        if not _ACCOUNT.match(account) or (domain and not domain.startswith(("blob.", "dfs."))):
            raise ConfigurationError(
                f"{host!r} in {url!r} is not an Azure storage account: write az://container@ACCOUNT/prefix "
                "(3-24 lowercase letters and digits) or az://container@ACCOUNT.blob.core.windows.net/prefix"
            )
        suffix = domain.split(".", 1)[1] if domain else "core.windows.net"
        account_url = f"https://{account}.blob.{suffix}"
    return container, _URL.check(url, container, prefix), account_url


class Azure(ObjectStore["BlobServiceClient", "ContainerClient"]):
    """Stores keys as block blobs below ``az://container/prefix``.

    Options: ``connection_string``, ``account_url``, ``credential`` (see the module docs);
    ``deadline`` (seconds, default ``LAMINAR_STORAGE_DEADLINE``, else 60) bounds every call, retries
    included, ``attempts`` (default 8) its tries, ``connect_timeout`` / ``read_timeout`` one request;
    ``max_concurrency`` is the number of parallel block transfers of one large value.
    """

    schemes = _URL.schemes
    transient_names = frozenset(_TRANSIENT_NAMES)

    def __init__(
        self,
        url: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        attempts: int | None = None,
        max_concurrency: int = 4,
        max_workers: int | None = None,
        deadline: float | None = None,
    ) -> None:
        container, prefix, url_account = parse_url(url)
        super().__init__(
            container,
            prefix,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
            max_workers=max_workers,
            deadline=deadline,
        )
        #: The account named in the URL (az://container@account/...), kept so ``url`` round-trips.
        self.url_account = url_account
        if connection_string is None and account_url is None:
            if url_account is not None:
                account_url = url_account  # the URL's account wins over the environment's
            else:
                connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None
                if connection_string is None:
                    account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL") or None
                    name = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
                    if account_url is None and name:
                        account_url = f"https://{name}.blob.core.windows.net"
            # An account from the URL or the environment signs in with the environment's key or SAS.
            if connection_string is None and credential is None:
                credential = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if connection_string is None and account_url is None:
            raise ConfigurationError(
                f"no Azure storage account for {url}: pass connection_string= or account_url=, or set "
                "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_URL or AZURE_STORAGE_ACCOUNT_NAME"
            )
        if connection_string is not None and not _parse_connection_string(connection_string):
            raise ConfigurationError(
                "the Azure connection string is malformed: expected 'Key=Value;' pairs such as "
                "'AccountName=...;AccountKey=...;BlobEndpoint=...'"
            )
        self.connection_string = connection_string
        self.account_url = account_url.rstrip("/") if account_url else None
        self.credential = credential
        self.max_concurrency = max(1, max_concurrency)

    @classmethod
    def from_url(cls, url: str) -> Azure:
        return cls(url)

    @property
    def container(self) -> str:
        return self.bucket_name

    @property
    def url(self) -> str:
        where = self.container
        if self.url_account is not None:
            where += "@" + self.url_account.removeprefix("https://")
        return f"az://{where}/{self.prefix}" if self.prefix else f"az://{where}"

    @functools.cached_property
    def endpoint(self) -> str:
        """The account's blob endpoint, for messages (worked out once: every request's message names it)."""
        if self.account_url:
            return self.account_url
        fields = _parse_connection_string(self.connection_string or "")
        if "BlobEndpoint" in fields:
            return fields["BlobEndpoint"].rstrip("/")
        account = fields.get("AccountName", "?")
        suffix = fields.get("EndpointSuffix", "core.windows.net")
        protocol = fields.get("DefaultEndpointsProtocol", "https")
        return f"{protocol}://{account}.blob.{suffix}"

    # ---- the client ----------------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        return self.endpoint

    @property
    def _shown_endpoint(self) -> str:
        return self.redact(self.endpoint)

    def _secrets(self) -> tuple[str | None, ...]:
        fields = _parse_connection_string(self.connection_string or "")
        credential = self.credential
        found: list[str | None] = [fields.get("AccountKey"), fields.get("SharedAccessSignature")]
        if isinstance(credential, str):
            found.append(credential)
        elif isinstance(credential, dict):
            found.extend(value for value in credential.values() if isinstance(value, str))
        else:
            found.append(getattr(credential, "signature", None))  # AzureSasCredential
            found.append(getattr(credential, "account_key", None))  # AzureNamedKeyCredential
        return tuple(found)

    def _request(self) -> dict[str, Any]:
        """Per-request time-outs of the next SDK call: at most what is left of the call's deadline."""
        connect, read = self._timeouts()
        return {"connection_timeout": connect, "read_timeout": read}

    def _connect(self) -> BlobServiceClient:
        try:
            import requests
            import requests.adapters
            from azure.core.pipeline.transport import RequestsTransport
            from azure.storage.blob import BlobServiceClient
        except ImportError as error:  # pragma: no cover - a dependency
            raise DatastoreError(
                "the Azure datastore needs azure-storage-blob: build the wheels with ./run build in the Laminar repository, then pip install 'laminar[azure]' --find-links dist/"
            ) from error
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(10, self.max_workers * 2)
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        options: dict[str, Any] = {
            "transport": RequestsTransport(session=session, session_owner=True),
            "connection_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retry_total": 0,  # with_retries is the one retry loop
            "max_single_put_size": 32 * 2**20,
            "max_block_size": 8 * 2**20,
            "max_single_get_size": 32 * 2**20,
            "max_chunk_get_size": 8 * 2**20,
        }
        try:
            if self.connection_string is not None:
                return BlobServiceClient.from_connection_string(self.connection_string, **options)
            assert self.account_url is not None
            credential = self.credential if self.credential is not None else _default_credential(self.url)
            return BlobServiceClient(self.account_url, credential=credential, **options)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(
                self.redact(f"cannot set up the Azure client for {self.url}: {error}")
            ) from None  # the SDK's message may quote the connection string

    def _open_bucket(self, service: BlobServiceClient) -> ContainerClient:
        return service.get_container_client(self.container)

    def _disconnect(self, service: BlobServiceClient) -> None:
        service.close()

    def _check_bucket(self, container: ContainerClient) -> None:
        try:
            container.get_container_properties(**self._request())
        except Exception as error:
            if _not_found(error):
                raise self._bucket_not_found() from error
            rejected = self._rejected(error)
            if rejected is not None:
                raise rejected from error
            raise

    def _transient(self, error: BaseException) -> bool:
        return getattr(error, "status_code", None) in self.transient_status or super()._transient(error)

    def _classify(self, error: Exception) -> DatastoreError | None:
        if _code(error) == "ContainerNotFound":
            return self._bucket_not_found()
        return self._rejected(error)

    def _rejected(self, error: BaseException) -> CredentialsRejected | None:
        """A refusal of the credentials as :class:`CredentialsRejected`; else ``None``."""
        status = getattr(error, "status_code", None)
        code = _code(error)
        if code == "AuthenticationFailed" or (status == 403 and code in (None, "AuthorizationFailure")):
            return CredentialsRejected(
                f"the Azure account at {self._shown_endpoint} rejected the credentials for {self.url} "
                f"({code or status}); check the account key, SAS token or connection string "
                "(AZURE_STORAGE_CONNECTION_STRING), or the role assignment of the signed-in identity"
            )
        if type(error).__name__ == "ClientAuthenticationError" and status is None:
            return CredentialsRejected(
                self.redact(
                    f"could not sign in to the Azure account at {self.endpoint} for {self.url}: {error}"
                )
            )
        return None

    def _bucket_not_found(self) -> ContainerNotFound:
        return ContainerNotFound(
            f"Azure container {self.container!r} does not exist at {self._shown_endpoint} (datastore {self.url}); "
            f"create it first (az storage container create --name {self.container}) or fix the URL"
        )

    # ---- primitives ----------------------------------------------------------------------------
    def _download(self, container: ContainerClient, key: str) -> StorageStreamDownloader[bytes]:
        try:
            return container.download_blob(
                self._object(key), max_concurrency=self.max_concurrency, **self._request()
            )
        except Exception as error:
            if _not_found(error) and _code(error) != "ContainerNotFound":
                raise self._missing(key) from error
            raise

    def read_bytes(self, key: str) -> bytes:
        return self._call("read", key, lambda container: self._download(container, key).readall())

    def open_read(self, key: str) -> BinaryIO:
        def open_(container: ContainerClient) -> BinaryIO:
            return buffered_reader(self._download(container, key).read)

        return self._call("read", key, open_)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "write",
            key,
            lambda container: container.upload_blob(
                self._object(key),
                bytes(data),
                overwrite=True,
                max_concurrency=self.max_concurrency,
                **self._request(),
            ),
        )

    atomic_create = True

    def create(self, key: str, data: bytes) -> bool:
        """An upload that refuses to overwrite: of two racing creators exactly one succeeds."""

        def create(container: ContainerClient) -> bool:
            try:
                container.upload_blob(self._object(key), bytes(data), overwrite=False, **self._request())
            except Exception as error:
                if type(error).__name__ == "ResourceExistsError":
                    return False
                raise
            return True

        return self._call("create", key, create)

    def write_file(self, key: str, path: str) -> None:
        def upload(container: ContainerClient) -> None:
            # Blocks are read from the file one at a time and committed together: atomic, streamed.
            size = os.path.getsize(path)
            with open(path, "rb") as file:
                container.upload_blob(
                    self._object(key), file, length=size, overwrite=True, max_concurrency=self.max_concurrency
                )

        self._call("write", key, upload)

    def exists(self, key: str) -> bool:
        return self._call(
            "check",
            key,
            lambda container: bool(container.get_blob_client(self._object(key)).exists(**self._request())),
        )

    def _list(self, container: ContainerClient, path: str) -> list[str]:
        return [
            item.name
            for item in container.walk_blobs(name_starts_with=path, delimiter="/", **self._request())
        ]

    def delete(self, key: str) -> None:
        def delete(container: ContainerClient) -> None:
            try:
                container.delete_blob(self._object(key), **self._request())
            except Exception as error:
                if not _not_found(error) or _code(error) == "ContainerNotFound":
                    raise

        self._call("delete", key, delete)

    # ObjectStore.__repr__ shows the URL only, redacted: never the connection string (it holds the key).


def _parse_connection_string(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value.strip().split(";"):
        if not part.strip():
            continue
        name, sep, content = part.partition("=")
        if not sep or not name.strip():
            return {}
        fields[name.strip()] = content.strip()
    return fields


def _default_credential(url: str) -> Any:
    try:
        from azure.identity import DefaultAzureCredential  # type: ignore[import-untyped, unused-ignore]
    except ImportError as error:
        raise ConfigurationError(
            f"{url} has an account URL but no credential, so it signs in with DefaultAzureCredential, "
            "which needs azure-identity: pip install 'laminar-azure[identity]' --find-links dist/ after ./run build in the Laminar repository (or pass credential=, "
            "connection_string=, or set AZURE_STORAGE_CONNECTION_STRING)"
        ) from error
    return DefaultAzureCredential()
