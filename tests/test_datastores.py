"""Datastores: choosing one (object, URL, ``LAMINAR_DATASTORE``, the default), names that would escape
it, the Memory datastore's limits, the object-store base class's own rules (URL checks, retries, error
classes, pickling) on a minimal in-memory backend, and each backend's errors for an unreachable
endpoint or a wrong URL: a clear message naming what is wrong, and nothing lost.

The contract every datastore passes is in test_datastore_conformance.py, with the errors for a
missing bucket and refused credentials (laminar.testing's DatastoreConformance holds every backend,
and a third party's, to them); one flow file on every backend is in test_cloud_flows.py.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from emulators.fixtures import (
    S3Service,
    azurite_connection_string,
    closed_endpoint,
    unique_name,
)
from helpers import Diamond, Join, datastore_at, executions_in, files
from laminar.configurations import datastores, executors
from laminar.errors import ConfigurationError, DatastoreError, InvalidName, LaminarError, PluginNotFound
from laminar.plugins import BucketURL, ObjectStore
from laminar.testing.datastore import ConformanceFlow, Total


def run_small_flow(datastore: Any, execution: str = "bad-input") -> None:
    ConformanceFlow(datastore=datastore, executor=executors.Thread())(execution=execution, count=2, label="x")


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (at most 10)."""
    items: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(items) < 10:
        items.append(current)
        current = current.__cause__ or current.__context__
    return items


def full_message(error: BaseException) -> str:
    """The error's message and those of its causes: a wrapper may add context around ours."""
    return "\n".join(map(str, _chain(error)))


# ---- choosing a datastore ----------------------------------------------------------------------


def test_unknown_datastore_scheme_lists_what_is_installed(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound) as error:
        Diamond(datastore="nosuch://bucket", executor="thread")
    message = str(error.value)
    assert "'nosuch'" in message and "file://" in message and "memory://" in message


def test_malformed_datastore_url() -> None:
    with pytest.raises(ConfigurationError, match="has no scheme"):
        Diamond(datastore="just-a-path", executor="thread")


def test_memory_datastore_needs_the_thread_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"only an executor that runs layers in that process"):
        Diamond(datastore=datastores.Memory(), executor=executors.Process())
    assert list(tmp_path.iterdir()) == []
    execution = Diamond(datastore="memory://", executor="thread")(seed=3)
    assert execution.layer(Join).value == 4 + 30


def test_environment_selects_datastore_and_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMINAR_DATASTORE", (tmp_path / "env-store").as_uri())
    monkeypatch.setenv("LAMINAR_EXECUTOR", "thread")
    flow = Diamond()
    assert isinstance(flow.configuration.datastore, datastores.Local)
    assert flow.configuration.datastore.root == str(tmp_path / "env-store")
    assert isinstance(flow.configuration.executor, executors.Thread)
    flow(seed=1)
    assert executions_in(tmp_path / "env-store")


def test_default_datastore_is_dot_laminar_and_default_executor_is_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAMINAR_DATASTORE", raising=False)
    monkeypatch.delenv("LAMINAR_EXECUTOR", raising=False)
    flow = Diamond()
    assert isinstance(flow.configuration.executor, executors.Process)
    assert flow.configuration.datastore.root == str(tmp_path / ".laminar")  # type: ignore[attr-defined]


def test_a_local_file_that_grows_while_it_is_read_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local reads a file in one call of its size (and a byte more); one longer by then, or a read
    that stops short, reads on."""
    from laminar._transport import local

    datastore = datastores.Local(tmp_path)
    value = bytes(range(256)) * 12_289  # a little over 3 MiB
    datastore.write_bytes("grown", value)
    real_fstat = os.fstat

    class Smaller:  # the size it had when it was opened, before a writer appended to it
        def __init__(self, fd: int) -> None:
            self.st_size = real_fstat(fd).st_size // 3

    monkeypatch.setattr(local.os, "fstat", Smaller)
    assert datastore.read_bytes("grown") == value
    real_read = os.read
    monkeypatch.setattr(local.os, "fstat", real_fstat)
    monkeypatch.setattr(local.os, "read", lambda fd, count: real_read(fd, min(count, 1 << 20)))
    assert datastore.read_bytes("grown") == value  # reads that stop short, as Linux's past 2 GiB do
    monkeypatch.undo()
    assert datastore.read_bytes("grown") == value


# ---- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "/abs", "a\x00b", "", ".hidden", "a/b", ".."])
def test_names_that_would_escape_the_datastore_are_refused(tmp_path: Path, bad: str) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with pytest.raises(InvalidName, match="cannot be used as a storage name"):
        flow(execution=bad, seed=1)
    with pytest.raises(InvalidName):
        flow.execution(bad)
    assert not (tmp_path / "store").exists() or files(tmp_path / "store") == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["store"])


# ---- the object-store base class, on a minimal in-memory backend --------------------------------


URL = BucketURL(
    schemes=("fake",), service="Fake", title="a Fake", pattern=re.compile(r"^[a-z]{3,}$"), rule="use letters"
)


class Gone(DatastoreError):
    pass


class Flaky(Exception):
    pass


class Client:
    """An in-memory client: buckets of objects, and errors to raise on the next calls."""

    def __init__(self, buckets: dict[str, dict[str, bytes]], failures: list[Exception]) -> None:
        self.buckets = buckets
        self.failures = failures
        self.closed = False

    def bucket(self, name: str) -> dict[str, bytes]:
        if self.failures:
            raise self.failures.pop(0)
        if name not in self.buckets:
            raise LookupError(name)
        return self.buckets[name]


class Fake(ObjectStore[Client, dict[str, bytes]]):
    schemes = ("fake",)
    transient_names = frozenset({"Flaky"})
    connects = 0

    def __init__(self, url: str, buckets: dict[str, dict[str, bytes]], failures: list[Exception]) -> None:
        super().__init__(*URL.parse(url), attempts=3)
        self.buckets, self.failures = buckets, failures

    def _connect(self) -> Client:
        type(self).connects += 1
        return Client(self.buckets, self.failures)

    def _open_bucket(self, client: Client) -> dict[str, bytes]:
        return client.buckets.get(self.bucket_name, {})

    def _check_bucket(self, bucket: dict[str, bytes]) -> None:
        assert self._client is not None
        try:
            self._client.bucket(self.bucket_name)
        except LookupError:
            raise self._bucket_not_found() from None

    def _bucket_not_found(self) -> DatastoreError:
        return Gone(f"no bucket {self.bucket_name!r} ({self.url})")

    def _classify(self, error: Exception) -> DatastoreError | None:
        return self._bucket_not_found() if isinstance(error, LookupError) else None

    def _disconnect(self, client: Client) -> None:
        client.closed = True

    def _list(self, bucket: dict[str, bytes], path: str) -> list[str]:
        return [path + name[len(path) :].partition("/")[0] for name in bucket if name.startswith(path)]

    def _run(self, bucket: dict[str, bytes], key: str) -> bytes:
        if self.failures:
            raise self.failures.pop(0)
        if self._object(key) not in bucket:
            raise self._missing(key)
        return bucket[self._object(key)]

    def read_bytes(self, key: str) -> bytes:
        return self._call("read", key, lambda bucket: self._run(bucket, key))

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda bucket: bucket.__setitem__(self._object(key), data))

    def exists(self, key: str) -> bool:
        return self._call("check", key, lambda bucket: self._object(key) in bucket)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda bucket: bucket.pop(self._object(key), None))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("other://abc/x", "not a Fake URL: 'other://abc/x'; write fake://bucket/prefix"),
        ("fake:///x", "the Fake URL 'fake:///x' names no bucket"),
        ("fake://AB/x", "'AB' in 'fake://AB/x' is not a valid Fake bucket name: use letters"),
        ("fake://abc/x?y", "has a query or fragment"),
        ("fake://abc/a/../b", "has an empty, '.' or '..' part"),
    ],
)
def test_bucket_urls(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        URL.parse(url)
    assert URL.parse("fake://abc//runs/a/") == ("abc", "runs/a")


def test_calls_are_prefixed_retried_classified_and_named() -> None:
    failures: list[Exception] = []
    store = Fake("fake://abc/runs", {"abc": {}}, failures)
    store.write_bytes("a/b", b"1")
    store.write_bytes("c", b"2")
    assert store.buckets["abc"] == {"runs/a/b": b"1", "runs/c": b"2"}
    assert (store.url, store.list_prefix(""), store.list_prefix("a/")) == (
        "fake://abc/runs",
        ["a", "c"],
        ["b"],
    )
    failures += [Flaky("once"), Flaky("twice")]
    assert store.read_bytes("c") == b"2"  # two transient errors, then the answer
    with pytest.raises(FileNotFoundError, match="no key 'nope' in fake://abc/runs"):
        store.read_bytes("nope")
    failures += [Flaky("again")] * 3
    with pytest.raises(
        DatastoreError, match=r"^read fake://abc/runs/c failed after 3 attempts: Flaky: again"
    ):
        store.read_bytes("c")
    failures.append(LookupError("abc"))
    with pytest.raises(Gone, match="no bucket 'abc'"):  # classified, raised as it is
        store.read_bytes("c")
    failures.append(ValueError("bad"))
    with pytest.raises(DatastoreError, match=r"^read fake://abc/runs/c failed: ValueError: bad"):
        store.read_bytes("c")


def test_client_is_made_once_checked_once_and_dropped_on_pickling_and_close() -> None:
    Fake.connects = 0
    with pytest.raises(Gone, match=r"no bucket 'xyz' \(fake://xyz\)"):
        Fake("fake://xyz", {}, []).exists("k")
    store = Fake("fake://abc", {"abc": {}}, [Flaky("first check")])
    assert not store.exists("k") and not store.exists("k")
    assert Fake.connects == 2 and store._checked
    client = store._client
    copy: Any = pickle.loads(pickle.dumps(store))
    assert (copy._client, copy._bucket, copy._checked, copy.url) == (None, None, False, "fake://abc")
    store.close()
    assert client is not None and client.closed and store._client is None and not store._checked


# ---- S3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_unreachable_endpoint_fails_after_bounded_retries() -> None:
    from laminar_s3 import S3

    endpoint = closed_endpoint()
    datastore = S3(
        "s3://somebucket/runs", endpoint_url=endpoint, key="k", secret="s", region="us-east-1", attempts=3
    )
    with pytest.raises(DatastoreError) as error:
        datastore.write_bytes("k", b"v")
    message = str(error.value)
    assert "s3://somebucket/runs" in message and endpoint in message
    assert "after 3 attempts" in message


@pytest.mark.s3
def test_s3_found_data_survives_a_failed_run(s3_datastore: Any, s3_service: S3Service) -> None:
    """A run against a wrong URL fails; the data of a good run in the same server is intact."""
    from laminar_s3 import S3, BucketNotFound

    run_small_flow(s3_datastore, "good-run")
    before = sorted(s3_datastore.list_prefix("artifacts/"))
    with pytest.raises(LaminarError) as error:
        run_small_flow(S3(f"s3://{unique_name('missing')}/runs", endpoint_url=s3_service.endpoint))
    assert any(
        isinstance(item, BucketNotFound) for item in _chain(error.value)
    ) or "does not exist" in full_message(error.value)
    assert sorted(s3_datastore.list_prefix("artifacts/")) == before
    flow = ConformanceFlow(datastore=s3_datastore, executor=executors.Thread())
    assert flow.execution("good-run").layer(Total).total == 1 + 4


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3://Upper_Case/x", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", "'..' part"),
        ("s3://bucket/x?versionId=1", "query or fragment"),
        ("gs://bucket/x", "not an S3 URL"),
    ],
)
def test_s3_malformed_urls(url: str, expected: str) -> None:
    from laminar_s3 import S3

    with pytest.raises(ConfigurationError) as error:
        S3.from_url(url)
    assert expected in str(error.value) and repr(url) in str(error.value)


# ---- GCS ---------------------------------------------------------------------------------------


def test_gcs_credentials_file_that_does_not_exist(tmp_path: Path) -> None:
    from laminar_gcs import GCS

    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigurationError) as error:
        GCS("gs://bucket/runs", credentials=missing)
    assert str(missing) in str(error.value) and "does not exist" in str(error.value)


@pytest.mark.gcs
@pytest.mark.timeout(120)
def test_gcs_unreachable_endpoint_fails_after_bounded_retries() -> None:
    from laminar_gcs import GCS

    endpoint = closed_endpoint()
    datastore = GCS("gs://somebucket/runs", endpoint=endpoint, attempts=3)
    with pytest.raises(DatastoreError) as error:
        datastore.read_bytes("k")
    message = str(error.value)
    assert "gs://somebucket/runs" in message and endpoint in message and "after 3 attempts" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://", "names no bucket"),
        ("gs://a/x", "not a valid GCS bucket name"),
        ("gs://Bucket/x", "not a valid GCS bucket name"),
        ("gs://bucket/a//b", "empty, '.' or '..' part"),
        ("s3://bucket/x", "not a Google Cloud Storage URL"),
    ],
)
def test_gcs_malformed_urls(url: str, expected: str) -> None:
    from laminar_gcs import GCS

    with pytest.raises(ConfigurationError) as error:
        GCS.from_url(url)
    assert expected in str(error.value) and repr(url) in str(error.value)


# ---- Azure -------------------------------------------------------------------------------------


@pytest.mark.azure
@pytest.mark.timeout(120)
def test_azure_unreachable_endpoint_fails_after_bounded_retries() -> None:
    from laminar_azure import Azure

    endpoint = closed_endpoint()
    datastore = Azure(
        "az://somecontainer/runs", connection_string=azurite_connection_string(endpoint), attempts=3
    )
    with pytest.raises(DatastoreError) as error:
        datastore.write_bytes("k", b"v")
    message = str(error.value)
    assert "az://somecontainer/runs" in message and endpoint in message and "after 3 attempts" in message


def test_azure_without_any_account_says_how_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar_azure import Azure

    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_ACCOUNT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as error:
        Azure.from_url("az://container/runs")
    message = str(error.value)
    assert "az://container/runs" in message and "AZURE_STORAGE_CONNECTION_STRING" in message
    assert "account_url=" in message


def test_azure_malformed_connection_string() -> None:
    from laminar_azure import Azure

    with pytest.raises(ConfigurationError) as error:
        Azure("az://container/runs", connection_string="this is not a connection string")
    assert "connection string is malformed" in str(error.value)


def test_azure_account_url_without_azure_identity_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from laminar_azure import Azure

    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as if azure-identity were not installed
    datastore = Azure("az://container/runs", account_url="https://account.blob.core.windows.net")
    with pytest.raises(ConfigurationError) as error:
        datastore.read_bytes("k")
    assert "pip install 'laminar-azure[identity]' --find-links dist/" in str(error.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("az://", "names no container"),
        ("az://ab/x", "not a valid Azure container name"),
        ("az://Has_Upper/x", "not a valid Azure container name"),
        ("az://double--hyphen/x", "not a valid Azure container name"),
        ("az://container@Bad_Account/x", "is not an Azure storage account"),
        ("az://container@account.queue.core.windows.net/x", "is not an Azure storage account"),
        ("s3://bucket/x", "not an Azure Blob Storage URL"),
    ],
)
def test_azure_malformed_urls(url: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar_azure import Azure

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string("http://127.0.0.1:1"))
    with pytest.raises(ConfigurationError) as error:
        Azure.from_url(url)
    assert expected in str(error.value) and repr(url) in str(error.value)


def test_azure_account_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar_azure import Azure

    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    store = Azure.from_url("az://runs@myaccount/team/a")
    assert (store.container, store.prefix) == ("runs", "team/a")
    assert store.account_url == "https://myaccount.blob.core.windows.net"
    assert store.connection_string is None
    again = Azure.from_url(store.url)
    assert (again.url, again.account_url) == (store.url, store.account_url)
    spark = datastore_at("abfss://runs@myaccount.dfs.core.windows.net/team/a")
    assert isinstance(spark, Azure) and spark.account_url == store.account_url and spark.prefix == "team/a"


# ---- SQLite (the example plugin) and URL resolution --------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://host/db.sqlite", "not a SQLite URL"),
        ("sqlite:///", "names no file"),
        ("sqlite:///dir/", "names no file"),
    ],
)
def test_sqlite_malformed_urls(url: str, expected: str) -> None:
    from laminar_sqlite import SQLite

    with pytest.raises(ConfigurationError) as error:
        SQLite.from_url(url)
    assert expected in str(error.value)


def test_sqlite_urls_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar_sqlite import SQLite

    monkeypatch.chdir(tmp_path)
    assert SQLite.from_url("sqlite:///runs.sqlite").path == str(tmp_path / "runs.sqlite")
    assert SQLite.from_url(f"sqlite:///{tmp_path}/abs.sqlite").path == str(tmp_path / "abs.sqlite")
    assert SQLite.from_url(f"sqlite:///{tmp_path}/abs.sqlite").url == f"sqlite:///{tmp_path}/abs.sqlite"


@pytest.mark.parametrize(
    ("scheme", "module", "extra"),
    [
        ("s3", "laminar_s3", "laminar[s3]"),
        ("gs", "laminar_gcs", "laminar[gcs]"),
        ("az", "laminar_azure", "laminar[azure]"),
    ],
)
def test_scheme_whose_distribution_is_missing_names_the_extra(scheme: str, module: str, extra: str) -> None:
    """In a fresh interpreter where the backend cannot be imported, its URL names the extra to install."""
    code = textwrap.dedent(
        f"""
        import sys, warnings
        sys.modules[{module!r}] = None  # as if the distribution were not installed
        warnings.simplefilter("ignore")
        from laminar import Flow

        class Probe(Flow): ...

        try:
            Probe(datastore="{scheme}://container-or-bucket/prefix", executor="thread")
        except Exception as error:
            print(type(error).__name__)
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, _, message = result.stdout.partition("\n")
    assert name == PluginNotFound.__name__, result.stdout + result.stderr
    assert extra in message and f"{scheme!r}" in message
    # Laminar is not on PyPI: the hint says how to install from this repository's wheels.
    assert "./run build" in message and "--find-links dist/" in message, message
