"""``az://container/prefix`` — Azure Blob Storage on the azure-storage-blob SDK.

Which account, and how to sign in, in this order:

0. an account named in the URL, ``az://container@account/prefix`` (``abfs[s]://container@account.dfs.
   core.windows.net/prefix`` too), signed in with ``credential=``, ``AZURE_STORAGE_KEY``,
   ``AZURE_STORAGE_SAS_TOKEN`` or ``DefaultAzureCredential``;
1. ``connection_string=`` (an account key, SAS or emulator connection string);
2. ``account_url=`` (``https://ACCOUNT.blob.core.windows.net``) with ``credential=`` (account key,
   SAS token, or a token credential), or without it ``DefaultAzureCredential`` from azure-identity
   (``pip install 'laminar-azure[identity]'``);
3. the environment: ``AZURE_STORAGE_CONNECTION_STRING``; else ``AZURE_STORAGE_ACCOUNT_URL`` or
   ``AZURE_STORAGE_ACCOUNT_NAME`` (with ``AZURE_STORAGE_KEY`` / ``AZURE_STORAGE_SAS_TOKEN`` or
   ``DefaultAzureCredential``).

The SDK's own retries (which back off for tens of seconds) are switched off; every primitive runs under
:func:`~laminar.storage.retries.with_retries` with short connect timeouts instead, so an unreachable
account gives a :class:`~laminar.errors.DatastoreError` naming the URL within seconds.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from laminar.errors import ConfigurationError, DatastoreError
from laminar.storage.datastore import Datastore
from laminar.storage.retries import caused_by, with_retries

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient, StorageStreamDownloader

T = TypeVar("T")

_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9\-]{1,61}[a-z0-9]$")
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
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class ContainerNotFound(DatastoreError):
    """The container named in the URL does not exist in the account."""


class CredentialsRejected(DatastoreError):
    """The account refused the credentials (wrong key, expired SAS, no role)."""


def _transient(error: BaseException) -> bool:
    if isinstance(error, (DatastoreError, ConfigurationError)):
        return False
    if getattr(error, "status_code", None) in _TRANSIENT_STATUS:
        return True
    return caused_by(error, _TRANSIENT_NAMES)


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
    rest = url
    if "://" in url:
        scheme, _, rest = url.partition("://")
        if scheme not in ("az", "azure", "abfs", "abfss"):
            raise ConfigurationError(f"not an Azure Blob Storage URL: {url!r}; write az://container/prefix")
    container, _, prefix = rest.partition("/")
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
    if not container:
        raise ConfigurationError(f"the Azure URL {url!r} names no container; write az://container/prefix")
    if not _CONTAINER.match(container):
        raise ConfigurationError(
            f"{container!r} in {url!r} is not a valid Azure container name: use 3-63 lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit"
        )
    if "?" in prefix or "#" in prefix:
        raise ConfigurationError(
            f"the Azure URL {url!r} has a query or fragment; write az://container/prefix"
        )
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigurationError(f"the prefix of {url!r} has an empty, '.' or '..' part")
    return container, prefix, account_url


class _DownloadStream(io.RawIOBase):
    """A raw binary stream over an Azure download, fetched chunk by chunk as it is read."""

    def __init__(self, downloader: StorageStreamDownloader[bytes]) -> None:
        super().__init__()
        self._downloader = downloader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._downloader.read(len(view))
        view[: len(data)] = data
        return len(data)


class Azure(Datastore):
    """Stores keys as block blobs below ``az://container/prefix``.

    Options: ``connection_string``, ``account_url``, ``credential`` (see the module docs);
    ``connect_timeout`` / ``read_timeout`` (seconds) and ``attempts`` bound every call;
    ``max_concurrency`` is the number of parallel block transfers of one large value.
    """

    schemes = ("az", "abfs", "abfss")
    max_workers = 32

    def __init__(
        self,
        url: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        attempts: int = 3,
        max_concurrency: int = 4,
        max_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.container, self.prefix, url_account = parse_url(url)
        #: The account named in the URL (az://container@account/...), kept so ``url`` round-trips.
        self.url_account = url_account
        if account_url is None and connection_string is None and url_account is not None:
            account_url = url_account  # the URL's account wins over the environment's
            if credential is None:
                credential = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if connection_string is None and account_url is None:
            connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None
            if connection_string is None:
                account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL") or None
                name = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
                if account_url is None and name:
                    account_url = f"https://{name}.blob.core.windows.net"
                if credential is None:
                    credential = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get(
                        "AZURE_STORAGE_SAS_TOKEN"
                    )
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
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = max(1, attempts)
        self.max_concurrency = max(1, max_concurrency)
        if max_workers is not None:
            self.max_workers = max_workers
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._checked = False
        self._client_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Azure:
        return cls(url)

    @property
    def url(self) -> str:
        where = self.container
        if self.url_account is not None:
            where += "@" + self.url_account.removeprefix("https://")
        return f"az://{where}/{self.prefix}" if self.prefix else f"az://{where}"

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint, for messages."""
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
    def _container_client(self) -> ContainerClient:
        container = self._container
        if container is not None and self._checked:
            return container
        with self._client_lock:
            if self._container is None:
                self._service = self._connect()
                self._container = self._service.get_container_client(self.container)
            if not self._checked:
                self._check_container(self._container)
                self._checked = True
            return self._container

    def _connect(self) -> BlobServiceClient:
        try:
            import requests
            import requests.adapters
            from azure.core.pipeline.transport import RequestsTransport
            from azure.storage.blob import BlobServiceClient
        except ImportError as error:  # pragma: no cover - a dependency
            raise DatastoreError(
                "the Azure datastore needs azure-storage-blob: pip install 'laminar[azure]'"
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
            raise ConfigurationError(f"cannot set up the Azure client for {self.url}: {error}") from error

    def _check_container(self, container: ContainerClient) -> None:
        def check() -> None:
            try:
                container.get_container_properties()
            except Exception as error:
                if _not_found(error):
                    raise self._container_not_found() from error
                self._permanent(error)
                raise

        try:
            with_retries(
                check,
                transient=_transient,
                describe=f"open {self.url} at {self.endpoint}",
                attempts=self.attempts,
            )
        except DatastoreError as error:
            if isinstance(error.__cause__, (ContainerNotFound, CredentialsRejected, ConfigurationError)):
                raise error.__cause__ from None
            raise

    def _permanent(self, error: BaseException) -> None:
        """Turn a refusal of the credentials into :class:`CredentialsRejected`; else return."""
        status = getattr(error, "status_code", None)
        code = _code(error)
        if code == "AuthenticationFailed" or (status == 403 and code in (None, "AuthorizationFailure")):
            raise CredentialsRejected(
                f"the Azure account at {self.endpoint} rejected the credentials for {self.url} "
                f"({code or status}); check the account key, SAS token or connection string "
                "(AZURE_STORAGE_CONNECTION_STRING), or the role assignment of the signed-in identity"
            ) from error
        if type(error).__name__ == "ClientAuthenticationError" and status is None:
            raise CredentialsRejected(
                f"could not sign in to the Azure account at {self.endpoint} for {self.url}: {error}"
            ) from error

    def _container_not_found(self) -> ContainerNotFound:
        return ContainerNotFound(
            f"Azure container {self.container!r} does not exist at {self.endpoint} (datastore {self.url}); "
            f"create it first (az storage container create --name {self.container}) or fix the URL"
        )

    # ---- helpers -------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, verb: str, key: str, operation: Callable[[ContainerClient], T]) -> T:
        container = self._container_client()

        def attempt() -> T:
            try:
                return operation(container)
            except FileNotFoundError:
                raise
            except Exception as error:
                if _code(error) == "ContainerNotFound":
                    raise self._container_not_found() from error
                self._permanent(error)
                raise

        try:
            return with_retries(
                attempt,
                transient=_transient,
                describe=f"{verb} az://{self.container}/{self._name(key)} at {self.endpoint}",
                attempts=self.attempts,
            )
        except DatastoreError as error:
            if isinstance(error.__cause__, (ContainerNotFound, CredentialsRejected)):
                raise error.__cause__ from None
            raise

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"no key {key!r} in {self.url}")

    def _download(self, container: ContainerClient, key: str) -> StorageStreamDownloader[bytes]:
        try:
            return container.download_blob(self._name(key), max_concurrency=self.max_concurrency)
        except Exception as error:
            if _not_found(error) and _code(error) != "ContainerNotFound":
                raise self._missing(key) from error
            raise

    # ---- primitives ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self._call("read", key, lambda container: self._download(container, key).readall())

    def open_read(self, key: str) -> BinaryIO:
        def open_(container: ContainerClient) -> BinaryIO:
            stream = _DownloadStream(self._download(container, key))
            return cast(BinaryIO, io.BufferedReader(stream, buffer_size=2**20))

        return self._call("read", key, open_)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "write",
            key,
            lambda container: container.upload_blob(
                self._name(key), bytes(data), overwrite=True, max_concurrency=self.max_concurrency
            ),
        )

    def write_file(self, key: str, path: str) -> None:
        def upload(container: ContainerClient) -> None:
            # Blocks are read from the file one at a time and committed together: atomic, streamed.
            size = os.path.getsize(path)
            with open(path, "rb") as file:
                container.upload_blob(
                    self._name(key), file, length=size, overwrite=True, max_concurrency=self.max_concurrency
                )

        self._call("write", key, upload)

    def exists(self, key: str) -> bool:
        return self._call(
            "check", key, lambda container: bool(container.get_blob_client(self._name(key)).exists())
        )

    def list_prefix(self, prefix: str) -> list[str]:
        full = self._name(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")

        def listing(container: ContainerClient) -> list[str]:
            names = {
                item.name[len(full) :].rstrip("/")
                for item in container.walk_blobs(name_starts_with=full, delimiter="/")
            }
            names.discard("")
            return sorted(names)

        return self._call("list", prefix, listing)

    def delete(self, key: str) -> None:
        def delete(container: ContainerClient) -> None:
            try:
                container.delete_blob(self._name(key))
            except Exception as error:
                if not _not_found(error) or _code(error) == "ContainerNotFound":
                    raise

        self._call("delete", key, delete)

    def close(self) -> None:
        with self._client_lock:
            service, self._service, self._container, self._checked = self._service, None, None, False
        if service is not None:
            service.close()
        super().close()

    # ---- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_service"] = None
        state["_container"] = None
        state["_checked"] = False
        state.pop("_client_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Azure(url={self.url!r})"  # never the connection string: it holds the key


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
            "which needs azure-identity: pip install 'laminar-azure[identity]' (or pass credential=, "
            "connection_string=, or set AZURE_STORAGE_CONNECTION_STRING)"
        ) from error
    return DefaultAzureCredential()
