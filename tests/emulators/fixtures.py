"""Real storage servers for the tests, started once per session on free ports of 127.0.0.1.

=======  ==========================================  ==============================================
backend  server                                      installed by
=======  ==========================================  ==============================================
S3       moto's standalone server (``moto_server``)  ``uv sync`` (dev group: ``moto[server]``)
GCS      gcp-storage-emulator (in memory)            ``uv sync`` (dev group: ``gcp-storage-emulator``)
Azure    Azurite (``azurite-blob``)                  ``scripts/install-emulators`` (npm, .emulators/)
=======  ==========================================  ==============================================

A server that cannot start fails the tests that need it with a message saying what to install; no
test is skipped. Each test gets a fresh bucket or container (``s3_datastore``, ``gcs_datastore``,
``azure_datastore``; or ``*_location`` for just the URL), and the environment variables that make
``S3.from_url`` / ``GCS.from_url`` / ``Azure.from_url`` and worker processes find the server.

Set ``LAMINAR_TEST_S3_URL=s3://bucket/prefix`` (``LAMINAR_TEST_GCS_URL``, ``LAMINAR_TEST_AZURE_URL``)
to run the same tests against a real cloud instead: each test then gets a fresh prefix below that URL,
with credentials from the SDK's usual sources, and its keys are deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 90.0  # seconds a server may take to answer; Azurite on a cold node can be slow

_names = itertools.count()


def unique_name(kind: str = "lam") -> str:
    """A bucket/container name valid on S3, GCS and Azure: 3-63 lowercase letters, digits, hyphens."""
    return f"{kind}-{uuid.uuid4().hex[:12]}-{next(_names)}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_endpoint() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


# ---- running a server --------------------------------------------------------------------------


@dataclass
class Server:
    """A server process we started: its name, command, log and how to reach it."""

    name: str
    command: list[str]
    port: int
    install_hint: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/") -> None:
        assert self.log is not None
        environment = {**os.environ, **self.env}
        with open(self.log, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    self.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.cwd,
                    env=environment,
                    start_new_session=True,
                )
            except OSError as error:
                pytest.fail(
                    f"cannot start {self.name} ({' '.join(self.command)}): {error}. {self.install_hint}"
                )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")[-3000:]
                pytest.fail(
                    f"{self.name} exited with code {self.process.returncode} while starting "
                    f"({' '.join(self.command)}). {self.install_hint}\n--- its output ---\n{output}"
                )
            if _answers(self.endpoint + ready_path):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"{self.name} did not answer on {self.endpoint} within {START_TIMEOUT:.0f}s. {self.install_hint}\n"
            f"--- its output ---\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts: it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _script(name: str) -> str | None:
    """A console script of this virtual environment (next to the interpreter), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def _fresh_location(service: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket/container URL on ``service``, its environment set; removed after the test."""
    for name, value in service.env.items():
        monkeypatch.setenv(name, value)
    url = service.new_location()
    yield url
    service.cleanup(url)


def _opened(datastore: Any) -> Iterator[Any]:
    yield datastore
    datastore.close()


# ---- S3: moto ----------------------------------------------------------------------------------

MOTO_HINT = (
    "The S3 tests need moto's server: run `uv sync` at the repository root (the dev group has "
    "moto[server]), or `pip install 'moto[server]'`."
)


@dataclass
class S3Service:
    """Where the S3 tests store: moto (``endpoint``) or a real bucket (``base_url``)."""

    endpoint: str | None
    base_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped, unused-ignore]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.env.get("AWS_SECRET_ACCESS_KEY"),
            region_name=self.env.get("AWS_DEFAULT_REGION"),
        )

    def new_location(self) -> str:
        if self.base_url is not None:
            return f"{self.base_url.rstrip('/')}/{unique_name('test')}"
        bucket = unique_name("lam-s3")
        self.client().create_bucket(Bucket=bucket)
        return f"s3://{bucket}/runs"

    def cleanup(self, url: str) -> None:
        if self.base_url is None:
            return  # moto keeps everything in memory; the session ends it
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def _moto(tmp: Path, name: str, extra_env: dict[str, str] | None = None) -> Server:
    script = _script("moto_server")
    if script is None:
        pytest.fail(f"moto_server is not installed. {MOTO_HINT}")
    port = free_port()
    server = Server(
        name=name,
        command=[script, "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        install_hint=MOTO_HINT,
        env=extra_env or {},
        cwd=tmp,
        log=tmp / f"{name}.log",
    )
    server.start("/moto-api/")
    return server


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    real = os.environ.get("LAMINAR_TEST_S3_URL")
    if real:
        yield S3Service(
            endpoint=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            base_url=real,
        )
        return
    server = _moto(tmp_path_factory.mktemp("moto"), "moto-s3")
    env = {
        "AWS_ACCESS_KEY_ID": "laminar-test",
        "AWS_SECRET_ACCESS_KEY": "laminar-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": server.endpoint,
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                if key != "AWS_ENDPOINT_URL_S3":
                    patch.setenv(key, value)
            yield S3Service(endpoint=server.endpoint, env=env)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_auth_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A second moto server that checks credentials: yields (endpoint, bucket). Knows no access keys."""
    server = _moto(
        tmp_path_factory.mktemp("moto-auth"), "moto-s3-auth", {"INITIAL_NO_AUTH_ACTION_COUNT": "1"}
    )
    bucket = unique_name("lam-auth")
    try:
        anyone = {
            "AWS_ACCESS_KEY_ID": "anyone",
            "AWS_SECRET_ACCESS_KEY": "anyone",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        # The one request moto lets through without checking the credentials:
        S3Service(endpoint=server.endpoint, env=anyone).client().create_bucket(Bucket=bucket)
        yield server.endpoint, bucket
    finally:
        server.stop()


@pytest.fixture
def s3_location(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``s3://fresh-bucket/runs``, with the environment pointing ``S3.from_url`` at the server."""
    yield from _fresh_location(s3_service, monkeypatch)


@pytest.fixture
def s3_datastore(s3_location: str) -> Iterator[Any]:
    from laminar_s3 import S3

    yield from _opened(S3.from_url(s3_location))


# ---- GCS: gcp-storage-emulator -----------------------------------------------------------------

GCS_HINT = (
    "The GCS tests need gcp-storage-emulator: run `uv sync` at the repository root (the dev group has "
    "it), or `pip install gcp-storage-emulator`."
)


@dataclass
class GCSService:
    endpoint: str | None
    base_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        from google.cloud import storage  # type: ignore[import-untyped, unused-ignore]

        if self.endpoint is None:
            return storage.Client()
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project="laminar-test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call, unused-ignore]
            client_options={"api_endpoint": self.endpoint},
        )

    def new_location(self) -> str:
        if self.base_url is not None:
            return f"{self.base_url.rstrip('/')}/{unique_name('test')}"
        bucket = unique_name("lam-gcs")
        self.client().create_bucket(bucket)
        return f"gs://{bucket}/runs"

    def cleanup(self, url: str) -> None:
        if self.base_url is None:
            return
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        client = self.client()
        for blob in client.list_blobs(bucket, prefix=prefix + "/"):
            blob.delete()


@pytest.fixture(scope="session")
def gcs_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSService]:
    real = os.environ.get("LAMINAR_TEST_GCS_URL")
    if real:
        yield GCSService(endpoint=os.environ.get("STORAGE_EMULATOR_HOST"), base_url=real)
        return
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        pytest.fail(f"gcp-storage-emulator is not installed. {GCS_HINT}")
    tmp = tmp_path_factory.mktemp("gcs")
    port = free_port()
    launcher = Path(__file__).with_name("gcs_server.py")
    server = Server(
        name="gcp-storage-emulator",
        command=[sys.executable, str(launcher), "127.0.0.1", str(port)],
        port=port,
        install_hint=GCS_HINT,
        cwd=tmp,
        log=tmp / "gcs.log",
    )
    server.start("/storage/v1/b")
    try:
        yield GCSService(endpoint=server.endpoint, env={"STORAGE_EMULATOR_HOST": server.endpoint})
    finally:
        server.stop()


@pytest.fixture
def gcs_location(gcs_service: GCSService, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``gs://fresh-bucket/runs``, with ``STORAGE_EMULATOR_HOST`` pointing at the emulator."""
    yield from _fresh_location(gcs_service, monkeypatch)


@pytest.fixture
def gcs_datastore(gcs_location: str) -> Iterator[Any]:
    from laminar_gcs import GCS

    yield from _opened(GCS.from_url(gcs_location))


# ---- Azure: Azurite ----------------------------------------------------------------------------

AZURITE_HINT = (
    "The Azure tests need Azurite (Node.js): run `scripts/install-emulators` (it installs azurite from "
    "npm into .emulators/; needs node and npm, e.g. `apt-get install nodejs npm`), or put azurite-blob "
    "on PATH, or set LAMINAR_AZURITE=/path/to/azurite-blob."
)


def azurite_connection_string(endpoint: str, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


@dataclass
class AzureService:
    connection_string: str | None
    base_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        if self.connection_string is not None:
            return BlobServiceClient.from_connection_string(self.connection_string)
        from laminar_azure import Azure

        return Azure.from_url(self.base_url or "az://unused")._connect()

    def new_location(self) -> str:
        if self.base_url is not None:
            return f"{self.base_url.rstrip('/')}/{unique_name('test')}"
        container = unique_name("lam-az")
        self.client().create_container(container)
        return f"az://{container}/runs"

    def cleanup(self, url: str) -> None:
        if self.base_url is None:
            return
        container, _, prefix = url.removeprefix("az://").partition("/")
        client = self.client().get_container_client(container)
        for name in client.list_blob_names(name_starts_with=prefix + "/"):
            client.delete_blob(name)


def _azurite_binary() -> str | None:
    configured = os.environ.get("LAMINAR_AZURITE")
    if configured:
        return configured
    local = ROOT / ".emulators" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azure_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureService]:
    real = os.environ.get("LAMINAR_TEST_AZURE_URL")
    if real:
        yield AzureService(connection_string=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"), base_url=real)
        return
    binary = _azurite_binary()
    if binary is None:
        pytest.fail(f"Azurite is not installed. {AZURITE_HINT}")
    tmp = tmp_path_factory.mktemp("azurite")
    port = free_port()
    server = Server(
        name="Azurite",
        command=[
            binary,
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ],
        port=port,
        install_hint=AZURITE_HINT,
        cwd=tmp,
        log=tmp / "azurite.log",
    )  # fmt: skip
    server.start("/")
    connection_string = azurite_connection_string(server.endpoint)
    try:
        yield AzureService(
            connection_string=connection_string,
            env={"AZURE_STORAGE_CONNECTION_STRING": connection_string},
        )
    finally:
        server.stop()


@pytest.fixture
def azure_location(azure_service: AzureService, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``az://fresh-container/runs``, with ``AZURE_STORAGE_CONNECTION_STRING`` set for Azurite."""
    yield from _fresh_location(azure_service, monkeypatch)


@pytest.fixture
def azure_datastore(azure_location: str) -> Iterator[Any]:
    from laminar_azure import Azure

    yield from _opened(Azure.from_url(azure_location))


# ---- fault-injecting proxies (test_storage_faults.py, test_secrets.py) ---------------------------
# Added for issue 10 (bounded storage faults, no secret leaks); the fixtures above are unchanged.


@pytest.fixture
def fault_proxy() -> Iterator[Any]:
    """``fault_proxy(endpoint, seed=..., faults=Faults(...), plan=[...])``: a started
    :class:`~emulators.faultproxy.FaultProxy` in front of ``endpoint`` (``http://127.0.0.1:PORT``);
    every proxy made is stopped after the test."""
    from emulators.faultproxy import FaultProxy

    proxies: list[FaultProxy] = []

    def make(endpoint: str, **options: Any) -> FaultProxy:
        host, _, port = endpoint.removeprefix("http://").partition("/")[0].partition(":")
        assert host == "127.0.0.1", f"the fault proxy only forwards to 127.0.0.1, not {endpoint}"
        proxy = FaultProxy(int(port), **options).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
