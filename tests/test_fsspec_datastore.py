"""laminar-fsspec: any fsspec filesystem as a datastore.

The conformance suite runs against fsspec's local filesystem, its memory filesystem and a real SFTP
server (asyncssh, started on 127.0.0.1 by ``emulators.sftp``; the client is fsspec's ``sftp``, on
paramiko). Then: one flow on Local and on SFTP gives the same results and the same artifact hashes,
read back from a second process; URLs resolve to the plugin; bad URLs are refused before anything is
written; and no password leaks into ``url``, ``repr`` or an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import stored_splits
from emulators.fixtures import free_port
from emulators.sftp import SFTPService
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem
from laminar import Flow, Layer
from laminar.configurations import datastores, executors
from laminar.errors import ConfigurationError, DatastoreError, PluginNotFound
from laminar.plugins import Datastore
from laminar.testing import DatastoreConformance
from laminar.testing.datastore import ConformanceFlow
from laminar_fsspec import CLAIMED, FSSpec, FSSpecInProcess

FAKE_PASSWORD = "Fake-Pa55word-7731"


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    item: BaseException | None = error
    while item is not None and item not in seen:
        seen.append(item)
        yield item
        item = item.__cause__ or item.__context__


def _memory_keys() -> set[str]:
    return set(MemoryFileSystem.store) | set(MemoryFileSystem.pseudo_dirs)


# ---- conformance: local, memory, SFTP ------------------------------------------------------------


class TestFSSpecLocal(DatastoreConformance):
    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Iterator[Datastore]:
        store = FSSpec(f"fsspec+file://{tmp_path}/store")
        assert type(store) is FSSpec and store.commit == "rename"
        yield store
        store.close()


class TestFSSpecMemory(DatastoreConformance):
    @pytest.fixture
    def datastore(self) -> Iterator[Datastore]:
        store = FSSpec(f"fsspec+memory://laminar-{uuid.uuid4().hex}")
        assert type(store) is FSSpecInProcess and not store.shared
        yield store
        store.close()
        for path in [path for path in MemoryFileSystem.store if path.startswith(f"{store.root}/")]:
            del MemoryFileSystem.store[path]


class TestFSSpecSFTP(DatastoreConformance):
    @pytest.fixture
    def datastore(self, sftp_service: SFTPService, sftp_location: str) -> Iterator[Datastore]:
        self.sftp_service = sftp_service
        store = FSSpec(sftp_location)
        assert type(store) is FSSpec and store.kind.sftp and store.commit == "rename"
        yield store
        store.close()

    # An SFTP datastore creates its directory on first use: no missing_storage.

    def rejected_credentials(self, datastore: Any, secret: str) -> Datastore:
        """The same directory, with a wrong password as a query option of the URL (which its ``url``
        keeps, but for secrets)."""
        return FSSpec(self.sftp_service.url(datastore.root.lstrip("/"), auth="none") + f"&password={secret}")


# ---- SFTP specifics --------------------------------------------------------------------------------


def test_sftp_writes_land_by_a_rename_from_the_staging_directory(sftp_service: SFTPService) -> None:
    path = sftp_service.new_path()
    store = FSSpec(sftp_service.url(path))
    disk = sftp_service.root / path
    store.write_bytes("a/b", b"1" * 100_000)
    first = os.stat(disk / "a" / "b").st_ino
    store.write_bytes("a/b", b"2")
    # A new file took the old one's name (a rename), not the old file rewritten in place.
    assert os.stat(disk / "a" / "b").st_ino != first
    assert (disk / "a" / "b").read_bytes() == b"2"
    assert sorted(os.listdir(disk)) == [".staging", "a"] and os.listdir(disk / ".staging") == []
    assert store.list_prefix("") == ["a"]  # the staging directory is never listed
    store.close()


def test_sftp_password_in_the_url_logs_in_and_stays_out_of_url_and_repr(sftp_service: SFTPService) -> None:
    path = sftp_service.new_path()
    store = FSSpec(sftp_service.url(path, auth="password"))
    store.write_bytes("k", b"v")
    assert (sftp_service.root / path / "k").read_bytes() == b"v"
    assert sftp_service.password not in store.url and sftp_service.password not in repr(store)
    assert store.url.startswith(f"sftp://laminar@127.0.0.1:{sftp_service.port}/{path}?")
    copy = pickle.loads(pickle.dumps(store))  # worker processes get the password with the datastore
    assert copy.read_bytes("k") == b"v"
    # The URL alone does not carry the password: a datastore built from it cannot log in.
    with pytest.raises(DatastoreError, match=r"failed: SSHException: No authentication methods available"):
        FSSpec.from_url(store.url).read_bytes("k")
    store.close()
    copy.close()


def test_sftp_password_as_an_option(sftp_service: SFTPService) -> None:
    path = sftp_service.new_path()
    store = FSSpec(sftp_service.url(path, auth="none"), password=sftp_service.password)
    store.write_bytes("k", b"option")
    assert FSSpec(sftp_service.url(path, auth="key")).read_bytes("k") == b"option"
    assert sftp_service.password not in repr(store)
    store.close()


def test_a_refused_password_is_not_retried_and_creates_nothing(sftp_service: SFTPService) -> None:
    """(That it names the datastore and shows the password nowhere is DatastoreConformance's.)"""
    path = sftp_service.new_path()
    url = sftp_service.url(path, auth="password", password=FAKE_PASSWORD)
    store = FSSpec(url)
    started = time.monotonic()
    with pytest.raises(DatastoreError) as error:
        store.write_bytes("k", b"v")
    message = str(error.value)
    assert message.startswith(f"write sftp://laminar@127.0.0.1:{sftp_service.port}/{path}/k failed: ")
    assert "AuthenticationException" in message and "after" not in message  # refused: not retried
    assert time.monotonic() - started < 10
    assert not (sftp_service.root / path).exists()
    # The same through a flow's configuration, by URL.
    flow = ConformanceFlow(datastore=url, executor="thread")
    assert FAKE_PASSWORD not in repr(flow.configuration.datastore)


def test_a_dropped_sftp_connection_is_replaced(sftp_location: str) -> None:
    store = FSSpec(sftp_location)
    store.write_bytes("k", b"v")
    clients = store._clients
    assert clients is not None and clients._all
    for fs in clients._all:
        fs.client.close()  # as if the server had hung up
    assert store.read_bytes("k") == b"v"
    assert store.list_prefix("") == ["k"]
    store.close()


def test_an_unreachable_sftp_server_fails_after_a_few_quick_tries() -> None:
    port = free_port()  # nothing listens there
    store = FSSpec(f"sftp://laminar@127.0.0.1:{port}/x?look_for_keys=false&allow_agent=false")
    started = time.monotonic()
    with pytest.raises(
        DatastoreError, match=rf"^check sftp://laminar@127.0.0.1:{port}/x/k failed after 3 attempts: "
    ):
        store.exists("k")
    assert time.monotonic() - started < 15


def test_an_option_the_filesystem_does_not_take_is_named_at_first_use(sftp_service: SFTPService) -> None:
    store = FSSpec(sftp_service.url(sftp_service.new_path()) + "&bogus_option=1")
    with pytest.raises(DatastoreError, match="bogus_option"):
        store.exists("k")


def test_a_missing_key_file_is_a_datastore_error_not_a_missing_key(
    sftp_service: SFTPService, tmp_path: Path
) -> None:
    url = sftp_service.url(sftp_service.new_path()).replace(
        str(sftp_service.key_path), str(tmp_path / "no-such-key")
    )
    with pytest.raises(
        DatastoreError, match=r"^connect sftp://laminar@127\.0\.0\.1:\d+/runs-\w+ failed: FileNotFoundError"
    ):
        FSSpec(url).read_bytes("k")


def test_the_url_keeps_the_options_it_was_given_except_secrets() -> None:
    store = FSSpec(
        "fsspec+memory://opts/runs?key_filename=/a b/key&timeout=5&look_for_keys=false&token=abcd1234"
    )
    assert store.url == "fsspec+memory://opts/runs?key_filename=/a+b/key&timeout=5&look_for_keys=false"
    assert store.storage_options == {
        "key_filename": "/a b/key",
        "timeout": 5,
        "look_for_keys": False,
        "token": "abcd1234",
    }
    again = FSSpec(store.url, storage_options={"timeout": 7}, token="abcd1234")
    assert again.storage_options == {**store.storage_options, "timeout": 7}


# ---- one flow, Local and SFTP ----------------------------------------------------------------------

FLOW_MODULE = textwrap.dedent(
    '''
    """Parameters -> Items (shard) -> Make (foreach) -> Summary (join); one value large enough to be
    staged to a file (write_file) and streamed back (open_read)."""

    import hashlib
    import random

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter


    class Inventory(Flow): ...


    @Inventory.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(sizes=[2048 * 4**i for i in range(parameters.count - 1)] + [9 * 2**20])
            self.seed = parameters.seed


    @Inventory.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="sizes")]))
    class Make(Layer):
        def __call__(self, items: Items) -> None:
            self.payload = random.Random(items.seed * 1000 + items.sizes).randbytes(items.sizes)
            self.size = len(self.payload)


    @Inventory.register
    class Summary(Layer):
        def __call__(self, make: Make, items: Items) -> None:
            self.sizes = list(make.size)
            self.total = sum(make.size)
            self.digest = hashlib.sha256(b"".join(make.payload)).hexdigest()
    '''
)

READ_BACK = textwrap.dedent(
    """
    import json, sys
    from fsspec_flow import Inventory, Summary

    flow = Inventory(datastore=sys.argv[1], executor="thread")
    execution = flow.execution(sys.argv[2])
    summary = execution.layer(Summary)
    layers = [layer.name for layer in flow.configuration.datastore.list_layers(execution=execution)]
    print(json.dumps([type(flow.configuration.datastore).__name__, list(summary.sizes), summary.total,
                      summary.digest, layers]))
    """
)


def _expected(count: int, seed: int) -> tuple[list[int], int, str]:
    sizes = [2048 * 4**i for i in range(count - 1)] + [9 * 2**20]
    payloads = [random.Random(seed * 1000 + size).randbytes(size) for size in sizes]
    return sizes, sum(sizes), hashlib.sha256(b"".join(payloads)).hexdigest()


def _keys(store: Datastore, prefix: str = "") -> list[str]:
    """Every key below ``prefix``, by delimiter listings."""
    found: list[str] = []
    for name in store.list_prefix(prefix):
        key = prefix + name
        if store.exists(key):
            found.append(key)
        else:
            found.extend(_keys(store, key + "/"))
    return found


def _digests_by_layer(store: Datastore, keys: list[str]) -> dict[str, list[str]]:
    """The artifact hashes each layer's split records name (in ``.../layers/<Layer>/splits/*.json``,
    or held in the layer's ``record.json``: see ``stored_splits``)."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for name, item in value.items():
                if name == "hexdigest":
                    yield item
                else:
                    yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    digests: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        if "layers" in parts and (parts[-2] == "splits" or parts[-1] == "record.json"):
            payload = json.loads(store.read_bytes(key))
            holding = stored_splits.member(key, payload)
            if holding is not None:
                layer = parts[parts.index("layers") + 1]
                digests.setdefault(layer, []).extend(walk(payload[holding]))
    return {layer: sorted(values) for layer, values in digests.items()}


@pytest.fixture
def flow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "module"
    directory.mkdir()
    (directory / "fsspec_flow.py").write_text(FLOW_MODULE)
    monkeypatch.syspath_prepend(str(directory))  # worker processes get the parent's sys.path
    yield directory
    sys.modules.pop("fsspec_flow", None)


def test_one_flow_on_local_and_on_sftp_same_results_and_hashes_read_from_another_process(
    tmp_path: Path, flow_module: Path, sftp_service: SFTPService
) -> None:
    import fsspec_flow  # type: ignore[import-not-found]

    path = sftp_service.new_path()
    urls = {"local": (tmp_path / "local").as_uri(), "sftp": sftp_service.url(path)}
    kinds = {"local": datastores.Local, "sftp": FSSpec}
    expected = _expected(4, 11)
    stores: dict[str, Datastore] = {}
    for name, url in urls.items():
        flow = fsspec_flow.Inventory(datastore=url, executor=executors.Process(concurrency=2))
        assert type(flow.configuration.datastore) is kinds[name]
        execution = flow(execution="same-run", count=4, seed=11)
        summary = execution.layer(fsspec_flow.Summary)
        assert (list(summary.sizes), summary.total, summary.digest) == expected
        stores[name] = flow.configuration.datastore

    keys = {name: _keys(store) for name, store in stores.items()}
    artifacts = {name: sorted(k for k in found if k.startswith("artifacts/")) for name, found in keys.items()}
    assert artifacts["local"] == artifacts["sftp"] and len(artifacts["sftp"]) >= 4
    assert stores["local"].read_many(artifacts["local"]) == stores["sftp"].read_many(artifacts["sftp"])
    digests = {name: _digests_by_layer(store, keys[name]) for name, store in stores.items()}
    assert digests["local"] == digests["sftp"]
    assert set(digests["sftp"]) == {"Parameters", "Items", "Make", "Summary"}
    assert all(digests["sftp"].values())
    # The 9 MiB value is a file on the SFTP server's disk, named by its hash.
    on_disk = {p.name for p in (sftp_service.root / path / "artifacts").rglob("*") if p.is_file()}
    assert on_disk == {key.rsplit("/", 1)[-1] for key in artifacts["sftp"]}

    read_back = {}
    for name, url in urls.items():
        result = subprocess.run(
            [sys.executable, "-c", READ_BACK, url, "same-run"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(flow_module)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        read_back[name] = json.loads(result.stdout)
    assert read_back["local"][:4] == ["Local", list(expected[0]), expected[1], expected[2]]
    assert sorted(read_back["local"][4]) == ["Items", "Make", "Parameters", "Summary"]
    assert read_back["sftp"] == ["FSSpec", *read_back["local"][1:]]
    for store in stores.values():
        store.close()


class Ids(Flow): ...


@Ids.register
class Column(Layer):
    def __call__(self) -> None:
        self.ids = np.arange(1 << 20, dtype=np.int64)  # zstd shrinks it to about 0.13


def test_a_local_disk_through_fsspec_compresses_as_local_does_and_sftp_as_a_network(
    tmp_path: Path, sftp_location: str
) -> None:
    """zstd is slower than a local disk for what shrinks only a few times, not than a network."""
    stored = {}
    for name, url in {"local": f"fsspec+file://{tmp_path}/store", "sftp": sftp_location}.items():
        store = FSSpec(url)
        execution = Ids(datastore=store, executor=executors.Thread())()
        np.testing.assert_array_equal(execution.layer(Column).ids, np.arange(1 << 20))
        (key,) = _keys(store, "artifacts/")
        stored[name] = len(store.read_bytes(key))
        store.close()
    assert stored["local"] > 8 << 20  # as it is (with its pickle)
    assert stored["sftp"] < (8 << 20) // 4  # compressed
    assert FSSpec(f"fsspec+file://{tmp_path}").worth_compressing == datastores.Local.worth_compressing
    assert (
        FSSpec(f"fsspec+memory://{uuid.uuid4().hex}").worth_compressing == datastores.Memory.worth_compressing
    )


# ---- choosing it by URL --------------------------------------------------------------------------


def test_urls_resolve_to_the_fsspec_datastore(sftp_service: SFTPService, tmp_path: Path) -> None:
    def resolved(url: str) -> Datastore:
        return ConformanceFlow(datastore=url, executor="thread").configuration.datastore

    sftp = resolved(sftp_service.url("runs"))
    assert type(sftp) is FSSpec and sftp.url.startswith("sftp://")
    explicit = resolved(sftp_service.url("runs", scheme="fsspec+sftp"))
    assert type(explicit) is FSSpec and explicit.url.startswith("fsspec+sftp://")
    memory = resolved("fsspec+memory://resolved/runs")
    assert type(memory) is FSSpecInProcess and isinstance(memory, FSSpec) and memory.root == "/resolved/runs"
    local = resolved(f"fsspec+file://{tmp_path}/runs")
    assert type(local) is FSSpec and local.root == f"{tmp_path}/runs"
    # Bare schemes other plugins serve stay theirs.
    assert type(resolved(f"file://{tmp_path}/core")) is datastores.Local
    assert type(resolved("memory://")) is datastores.Memory
    assert type(resolved("s3://some-bucket/runs")).__module__ == "laminar_s3.datastore"
    assert type(resolved("gs://some-bucket/runs")).__module__ == "laminar_gcs.datastore"


def test_schemes_are_every_fsspec_protocol_prefixed_and_the_unclaimed_ones_bare() -> None:
    schemes = set(FSSpec.schemes)
    assert {"sftp", "ssh", "ftp", "fsspec+sftp", "fsspec+memory", "fsspec+file", "fsspec+s3"} <= schemes
    assert {"s3", "gs", "gcs", "az", "abfs", "file", "memory"} <= CLAIMED
    for protocol in fsspec.available_protocols():
        assert f"fsspec+{protocol}" in schemes
        assert (protocol in schemes) is (protocol not in CLAIMED), protocol


def test_the_memory_filesystem_only_goes_with_the_thread_executor() -> None:
    with pytest.raises(ConfigurationError):
        ConformanceFlow(datastore="fsspec+memory://only-threads", executor=executors.Process())
    with pytest.raises(TypeError, match="lives in one process"):
        pickle.dumps(FSSpec("fsspec+memory://only-threads"))


class LeakyFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """A real fsspec filesystem whose login error repeats the password it was given."""

    protocol = "leakytest"

    def __init__(self, password: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        raise PermissionError(f"the server refused password {password!r} for this account")


def test_a_protocol_registered_at_run_time_is_served_and_its_errors_are_masked(tmp_path: Path) -> None:
    fsspec.register_implementation("leakytest", LeakyFileSystem, clobber=True)
    url = f"leakytest://accounts/runs?password={FAKE_PASSWORD}&region=north"
    store = ConformanceFlow(datastore=url, executor="thread").configuration.datastore
    assert type(store) is FSSpec
    assert store.url == "leakytest://accounts/runs?region=north"
    with pytest.raises(DatastoreError) as error:
        store.read_bytes("k")
    message = str(error.value)
    assert message == (
        "read leakytest://accounts/runs/k failed: PermissionError: the server refused password '***' for this account"
    )
    assert error.value.__cause__ is None  # the causes repeat the password: they are left out
    assert all(FAKE_PASSWORD not in str(item) for item in _causes(error.value))


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "fsspec+nosuchproto://bucket/x",
            "unknown fsspec protocol 'nosuchproto' in 'fsspec+nosuchproto://bucket/x'",
        ),
        ("fsspec+sftpp://host/x", "did you mean 'sftp'"),
        (
            "fsspec+dropbox://team/x",
            "the fsspec protocol 'dropbox' of 'fsspec+dropbox://team/x' needs a package",
        ),
        ("no-scheme-here", "'no-scheme-here' is not a URL; write fsspec+PROTOCOL://path"),
        ("fsspec+://x", "'fsspec+://x' names no fsspec protocol"),
        (
            f"sftp://laminar:{FAKE_PASSWORD}@127.0.0.1:notaport/x",
            "cannot read 'sftp://laminar:***@127.0.0.1:notaport/x'",
        ),
        ("sftp:///srv/laminar", "the URL 'sftp:///srv/laminar' names no host"),
        (
            "fsspec+memory://runs/../escape",
            "the path of 'fsspec+memory://runs/../escape' has a '.' or '..' part",
        ),
        ("fsspec+file:///tmp/x#part", "has a fragment"),
        ("fsspec+memory://runs?a=1&a=2", "the option 'a' is given twice"),
        ("fsspec+memory://runs?novalue", "is not name=value pairs"),
        (
            f"fsspec+memory://runs?password={FAKE_PASSWORD}&=x",
            "'fsspec+memory://runs?password=***&=x' has a value without a name",
        ),
    ],
)
def test_bad_urls_are_refused_before_anything_is_written(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    memory = _memory_keys()
    with pytest.raises(ConfigurationError) as error:
        FSSpec(url)
    assert message in str(error.value)
    assert FAKE_PASSWORD not in str(error.value)
    assert os.listdir(tmp_path) == [] and _memory_keys() == memory


def test_the_missing_package_case_is_real() -> None:
    import importlib.util

    assert importlib.util.find_spec("dropboxdrivefs") is None  # what the case above relies on


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("fsspec+nosuchproto://bucket/x", PluginNotFound, "'fsspec+nosuchproto'"),
        ("nosuchproto://bucket/x", PluginNotFound, "'nosuchproto'"),
        ("sftp://laminar@127.0.0.1:notaport/x", ConfigurationError, "Port could not be cast to integer"),
        ("fsspec+memory://runs/../x", ConfigurationError, "'..' part"),
    ],
)
def test_bad_urls_in_a_flow_are_refused_before_anything_is_written(
    url: str, error: type[Exception], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    memory = _memory_keys()
    with pytest.raises(error) as raised:
        ConformanceFlow(datastore=url, executor="thread")
    assert message in str(raised.value)
    assert os.listdir(tmp_path) == [] and _memory_keys() == memory


def test_a_bad_commit_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="commit is 'rename' or 'direct', not 'later'"):
        FSSpec("fsspec+memory://runs", commit="later")  # type: ignore[arg-type]
