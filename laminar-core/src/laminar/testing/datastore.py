"""``DatastoreConformance``: the tests every Datastore must pass, for any backend to reuse.

Subclass it in a test module and give it a ``datastore`` fixture that yields a datastore on fresh,
empty storage (a new bucket, directory, database) for each test::

    import pytest
    from laminar.testing import DatastoreConformance
    from laminar_foo import Foo

    class TestFoo(DatastoreConformance):
        @pytest.fixture
        def datastore(self, tmp_path):
            store = Foo(tmp_path / "db")
            yield store
            store.close()

pytest then runs every ``test_*`` method below against it: the primitives, atomic overwrite,
delimiter listing, ``FileNotFoundError`` for missing keys, the batch calls, streaming reads and
uploads, large values, pickling, whole flows (shard, foreach, a join) whose results are read back,
content addressing (one blob under ``artifacts/`` per distinct value too large to be kept inline),
incremental runs (:mod:`laminar.testing.reuse`: the reuse index lives in the datastore), and
the errors a user meets: storage that does not exist, credentials the store refuses, and no secret
shown in either.

Knobs a subclass may override: ``large_value_size`` (bytes; default 20 MiB), ``listing_size`` (keys
written to check paginated listings; default 1,050, past S3's page of 1,000), :meth:`reopen` (how
to build a second datastore on the same storage; default ``type(datastore).from_url(datastore.url)``),
and, for the error checks, :meth:`missing_storage` and :meth:`rejected_credentials` (each ``None`` by
default: the checks that need them are skipped, saying so, for backends without such a thing).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from laminar import Flow, Layer, Parameters
from laminar._storage.staging import INLINE_LIMIT
from laminar.configurations import executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import ConfigurationError, LaminarError
from laminar.plugins import Datastore
from laminar.testing.reuse import (
    check_a_changed_input_runs_what_reads_it,
    check_a_rerun_after_gc_computes_again,
    check_an_unchanged_rerun_runs_nothing,
    check_two_executions_computing_a_layer_at_once_both_succeed,
)

# ---- a small flow that exercises parameters, shard, foreach (a grid and a chain) and a join ------


class ConformanceFlow(Flow):
    """Parameters -> Numbers (shard) -> Square (foreach) -> Shifted (chained foreach) -> Total (join)."""


@ConformanceFlow.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(1, parameters.count + 1)))
        self.label = parameters.label
        self.blob = bytes(range(256)) * 64


@ConformanceFlow.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="values")]))
class Square(Layer):
    def __call__(self, numbers: Numbers) -> None:
        self.value = numbers.values**2
        self.position = (self.index, self.splits)


@ConformanceFlow.register(
    foreach=ForEach(parameters=[Parameter(layer=Square, attribute="value", index=None)])
)
class Shifted(Layer):
    def __call__(self, square: Square) -> None:
        self.value = square.value + 1


@ConformanceFlow.register
class Total(Layer):
    def __call__(self, square: Square, shifted: Shifted, numbers: Numbers) -> None:
        self.squares = list(square.value)
        self.total = sum(square.value)
        self.shifted = list(shifted.value)
        self.summary = {"label": numbers.label, "count": len(numbers.values), "blob": len(numbers.blob)}


def _expected(count: int, label: str) -> dict[str, Any]:
    squares = [n * n for n in range(1, count + 1)]
    return {
        "squares": squares,
        "total": sum(squares),
        "shifted": [s + 1 for s in squares],
        "summary": {"label": label, "count": count, "blob": 256 * 64},
    }


# ---- a flow whose values are too large to be kept inline, some of them equal ----------------------


def large_value(seed: int) -> bytes:
    """Incompressible bytes, four times the inline limit: stored as a blob under ``artifacts/``."""
    return random.Random(seed).randbytes(4 * INLINE_LIMIT)


class StoredOnceFlow(Flow):
    """Large values under several names and layers; ``seed`` picks them, and equal seeds equal values."""


@StoredOnceFlow.register
class Large(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.first = large_value(parameters.seed)
        self.again = large_value(parameters.seed)  # equal to ``first``
        self.other = large_value(parameters.seed + 1)
        self.shard(items=[large_value(parameters.seed + 2 + i) for i in range(3)])


@StoredOnceFlow.register
class Equal(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.same = large_value(parameters.seed)  # equal to ``Large.first``, in another layer


#: Distinct large values one execution of StoredOnceFlow stores: first (= again = same), other, 3 items.
STORED_ONCE_BLOBS = 5


class DatastoreConformance:
    """Base class of a datastore's conformance tests; subclasses provide a ``datastore`` fixture."""

    large_value_size: int = 20 * 2**20
    listing_size: int = 1050

    @pytest.fixture
    def datastore(self) -> Iterator[Datastore]:  # pragma: no cover - always overridden
        raise NotImplementedError("subclass DatastoreConformance and define a `datastore` fixture")

    #: The secret :meth:`rejected_credentials` is given to put in the credentials (a password, a key,
    #: a token); valid base64 too, so an account-key parser takes it.
    planted_secret: str = "SECRETSECRET1234"

    def reopen(self, datastore: Datastore) -> Datastore:
        """A second datastore object on the same storage, as another process would build it."""
        return type(datastore).from_url(datastore.url)

    def missing_storage(self, datastore: Datastore) -> Datastore | None:
        """A datastore like ``datastore`` whose storage does not exist (a bucket, a container, a
        database nobody created), which using it must not create.

        ``None`` (the default) where a datastore creates its storage on first use, as ``Local``
        creates its directory: the missing-storage check is skipped.
        """
        return None

    def rejected_credentials(self, datastore: Datastore, secret: str) -> Datastore | None:
        """A datastore on the storage of ``datastore`` with credentials that hold ``secret`` (as a
        password, key or token) and that the store refuses.

        Point it at the same bucket, container or directory where the test server allows, so that
        the check that nothing is lost means something. ``None`` (the default) where there are no
        credentials: the rejected-credentials and masking checks are skipped.
        """
        return None

    # ---- read, write, overwrite ----------------------------------------------------------------
    def test_write_then_read(self, datastore: Datastore) -> None:
        datastore.write_bytes("conformance/one", b"hello")
        datastore.write_bytes("conformance/binary", bytes(range(256)))
        datastore.write_bytes("conformance/empty", b"")
        assert datastore.read_bytes("conformance/one") == b"hello"
        assert datastore.read_bytes("conformance/binary") == bytes(range(256))
        assert datastore.read_bytes("conformance/empty") == b""

    def test_overwrite_replaces_the_whole_value(self, datastore: Datastore) -> None:
        datastore.write_bytes("conformance/key", b"a much longer first value")
        datastore.write_bytes("conformance/key", b"short")
        assert datastore.read_bytes("conformance/key") == b"short"
        datastore.write_bytes("conformance/key", b"")
        assert datastore.read_bytes("conformance/key") == b""

    def test_overwrite_is_atomic_for_concurrent_readers(self, datastore: Datastore) -> None:
        size = 2**20
        values = [bytes([ord("a") + i]) * size for i in range(3)]
        datastore.write_bytes("conformance/atomic", values[0])
        seen: list[bytes] = []
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for round_ in range(6):
                    datastore.write_bytes("conformance/atomic", values[round_ % 3])
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        def read() -> None:
            try:
                for _ in range(6):
                    seen.append(datastore.read_bytes("conformance/atomic"))
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [
            threading.Thread(target=write),
            threading.Thread(target=read),
            threading.Thread(target=read),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for value in [*seen, datastore.read_bytes("conformance/atomic")]:
            assert value in values, "a reader saw a partial or mixed value"

    def test_keys_with_layout_characters(self, datastore: Datastore) -> None:
        keys = ["conformance/A-b_c.d/e.json", "conformance/0/1.json", "conformance/x.y-z_/0123456789abcdef"]
        for number, key in enumerate(keys):
            datastore.write_bytes(key, str(number).encode())
        assert [datastore.read_bytes(key) for key in keys] == [b"0", b"1", b"2"]

    # ---- missing keys --------------------------------------------------------------------------
    def test_missing_key_raises_file_not_found(self, datastore: Datastore) -> None:
        with pytest.raises(FileNotFoundError):
            datastore.read_bytes("conformance/missing")
        with pytest.raises(FileNotFoundError):
            datastore.read_bytes("never/written/anywhere")

    def test_missing_key_open_read_raises_file_not_found(self, datastore: Datastore) -> None:
        with pytest.raises(FileNotFoundError):
            stream = datastore.open_read("conformance/missing")
            try:
                stream.read()
            finally:
                stream.close()

    def test_exists(self, datastore: Datastore) -> None:
        assert not datastore.exists("conformance/key")
        datastore.write_bytes("conformance/key", b"x")
        assert datastore.exists("conformance/key")
        assert not datastore.exists("conformance/ke")

    def test_create_makes_a_key_only_once(self, datastore: Datastore) -> None:
        assert datastore.create("conformance/created", b"first") is True
        assert datastore.create("conformance/created", b"second") is False
        assert datastore.read_bytes("conformance/created") == b"first"
        datastore.write_bytes("conformance/written", b"x")
        assert datastore.create("conformance/written", b"y") is False

    def test_racing_creates_have_one_winner_where_create_is_atomic(self, datastore: Datastore) -> None:
        import threading

        barrier = threading.Barrier(8)
        won: list[bytes] = []

        def race(number: int) -> None:
            barrier.wait()
            if datastore.create("conformance/raced", f"racer {number}".encode()):
                won.append(f"racer {number}".encode())

        threads = [threading.Thread(target=race, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if datastore.atomic_create:
            assert len(won) == 1 and datastore.read_bytes("conformance/raced") == won[0]
        else:  # ask-then-write: someone wins, and what is stored is one racer's bytes
            assert won and datastore.read_bytes("conformance/raced") in won

    def test_delete(self, datastore: Datastore) -> None:
        datastore.write_bytes("conformance/key", b"x")
        datastore.write_bytes("conformance/other", b"y")
        datastore.delete("conformance/key")
        assert not datastore.exists("conformance/key")
        with pytest.raises(FileNotFoundError):
            datastore.read_bytes("conformance/key")
        assert datastore.read_bytes("conformance/other") == b"y"
        assert datastore.list_prefix("conformance/") == ["other"]

    def test_a_prefix_is_not_a_key(self, datastore: Datastore) -> None:
        datastore.write_bytes("conformance/nested/key", b"x")
        assert not datastore.exists("conformance/nested")
        assert datastore.exists_many(["conformance/nested", "conformance/nested/key"]) == [False, True]

    def test_delete_leaves_no_empty_prefix_behind(self, datastore: Datastore) -> None:
        datastore.write_bytes("conformance/gone/key", b"x")
        datastore.write_bytes("conformance/kept", b"y")
        datastore.delete("conformance/gone/key")
        assert datastore.list_prefix("conformance/") == ["kept"]

    def test_delete_of_missing_key_is_not_an_error(self, datastore: Datastore) -> None:
        datastore.delete("conformance/missing")
        datastore.delete("never/written/anywhere")
        datastore.write_bytes("conformance/key", b"x")
        datastore.delete("conformance/key")
        datastore.delete("conformance/key")

    def test_delete_many_deletes_those_keys_and_a_missing_one_is_not_an_error(
        self, datastore: Datastore
    ) -> None:
        for key in ("conformance/a", "conformance/b", "conformance/kept"):
            datastore.write_bytes(key, b"x")
        datastore.delete_many(["conformance/a", "conformance/missing", "conformance/b"])
        datastore.delete_many([])
        assert datastore.list_prefix("conformance/") == ["kept"]

    # ---- listing -------------------------------------------------------------------------------
    def test_list_prefix_gives_immediate_children(self, datastore: Datastore) -> None:
        for key in ["p/a/x", "p/a/y", "p/b", "p/c/d/e/f", "p/c.json", "q/z"]:
            datastore.write_bytes(key, b".")
        assert datastore.list_prefix("p/") == ["a", "b", "c", "c.json"]
        assert datastore.list_prefix("p/a/") == ["x", "y"]
        assert datastore.list_prefix("p/c/") == ["d"]
        assert datastore.list_prefix("p/c/d/e/") == ["f"]
        assert datastore.list_prefix("q/") == ["z"]

    def test_list_prefix_of_the_root(self, datastore: Datastore) -> None:
        datastore.write_bytes("r1/x", b".")
        datastore.write_bytes("r2", b".")
        assert datastore.list_prefix("") == ["r1", "r2"]

    def test_list_prefix_missing_or_empty_is_empty(self, datastore: Datastore) -> None:
        assert datastore.list_prefix("") == []
        assert datastore.list_prefix("nothing/here/") == []
        datastore.write_bytes("gone/key", b".")
        datastore.delete("gone/key")
        assert datastore.list_prefix("gone/") == []

    def test_list_prefix_matches_whole_names_only(self, datastore: Datastore) -> None:
        datastore.write_bytes("m/ab/x", b".")
        datastore.write_bytes("m/abc", b".")
        datastore.write_bytes("m/a/y", b".")
        assert datastore.list_prefix("m/a/") == ["y"]
        assert datastore.list_prefix("m/ab/") == ["x"]
        assert datastore.list_prefix("m/abc/") == []

    def test_list_prefix_is_sorted_without_slashes(self, datastore: Datastore) -> None:
        names = ["b", "a", "10", "9", "B", "a.json", "a-b", "_x"]
        for name in names:
            datastore.write_bytes(f"s/{name}/inner", b".")
            datastore.write_bytes(f"s/{name}.leaf", b".")
        listed = datastore.list_prefix("s/")
        assert listed == sorted(listed)
        assert set(listed) == set(names) | {f"{name}.leaf" for name in names}
        assert not any("/" in name for name in listed)

    def test_list_prefix_many_entries(self, datastore: Datastore) -> None:
        names = [f"{i:05d}" for i in range(self.listing_size)]
        datastore.write_many({f"many/{name}": b"." for name in names})
        datastore.write_bytes("many/dir/inner", b".")
        assert datastore.list_prefix("many/") == sorted([*names, "dir"])

    # ---- batches -------------------------------------------------------------------------------
    def test_batch_calls(self, datastore: Datastore) -> None:
        items = {f"batch/{i:03d}": f"value {i}".encode() * (i + 1) for i in range(60)}
        datastore.write_many(items)
        keys = list(items)[::-1]
        assert datastore.read_many(keys) == [items[key] for key in keys]
        probes = [*keys[:5], "batch/missing", keys[-1]]
        assert datastore.exists_many(probes) == [True] * 5 + [False, True]
        assert datastore.read_many([]) == []
        assert datastore.exists_many([]) == []
        datastore.write_many({})

    def test_batch_read_of_a_missing_key_raises_file_not_found(self, datastore: Datastore) -> None:
        datastore.write_many({"batch/a": b"a", "batch/b": b"b"})
        with pytest.raises(FileNotFoundError):
            datastore.read_many(["batch/a", "batch/missing", "batch/b"])

    # ---- streaming -----------------------------------------------------------------------------
    def test_open_read_streams(self, datastore: Datastore) -> None:
        value = os.urandom(3 * 2**20 + 17)
        datastore.write_bytes("stream/value", value)
        parts = []
        with datastore.open_read("stream/value") as stream:
            while chunk := stream.read(256 * 1024):
                parts.append(chunk)
        assert b"".join(parts) == value
        with datastore.open_read("stream/value") as stream:
            assert stream.read(10) == value[:10]
            assert stream.read() == value[10:]

    def test_open_read_of_small_and_empty_values(self, datastore: Datastore) -> None:
        datastore.write_bytes("stream/empty", b"")
        datastore.write_bytes("stream/small", b"abc")
        with datastore.open_read("stream/empty") as stream:
            assert stream.read() == b""
        with datastore.open_read("stream/small") as stream:
            assert stream.read(2) == b"ab"
            assert stream.read() == b"c"
            assert stream.read() == b""

    def test_write_file(self, datastore: Datastore, tmp_path: Any) -> None:
        value = os.urandom(2**20 + 3)
        path = tmp_path / "value.bin"
        path.write_bytes(value)
        datastore.write_file("files/value", str(path))
        if path.exists():
            path.unlink()  # the datastore must not depend on the file afterwards
        assert datastore.read_bytes("files/value") == value
        datastore.write_bytes("files/value", b"replaced")
        assert datastore.read_bytes("files/value") == b"replaced"

    def test_write_file_from_the_staging_directory(self, datastore: Datastore) -> None:
        staging = datastore.staging_directory()
        assert os.path.isdir(staging)
        path = os.path.join(staging, f"conformance-{uuid.uuid4().hex}")
        with open(path, "wb") as file:
            file.write(b"staged value")
        datastore.write_file("files/staged", path)
        if os.path.exists(path):
            os.remove(path)
        assert datastore.read_bytes("files/staged") == b"staged value"
        assert datastore.list_prefix("files/") == ["staged"]

    def test_large_values(self, datastore: Datastore, tmp_path: Any) -> None:
        value = os.urandom(self.large_value_size)
        datastore.write_bytes("large/bytes", value)
        assert datastore.read_bytes("large/bytes") == value
        path = tmp_path / "large.bin"
        path.write_bytes(value)
        datastore.write_file("large/file", str(path))
        with datastore.open_read("large/file") as stream:
            read = bytearray()
            while chunk := stream.read(4 * 2**20):
                read += chunk
        assert bytes(read) == value

    # ---- identity, pickling, reuse -------------------------------------------------------------
    def test_url_and_repr(self, datastore: Datastore) -> None:
        url = datastore.url
        assert isinstance(url, str) and "://" in url
        scheme = url.split("://", 1)[0]
        assert scheme in type(datastore).schemes
        assert url in repr(datastore)

    def test_pickle_round_trip(self, datastore: Datastore) -> None:
        datastore.write_bytes("pickle/before", b"1")
        datastore.read_many(["pickle/before", "pickle/before"])  # start any clients and thread pools
        if not type(datastore).shared:
            with pytest.raises(TypeError):
                pickle.dumps(datastore)
            return
        copy = pickle.loads(pickle.dumps(datastore))
        assert type(copy) is type(datastore) and copy.url == datastore.url
        assert copy.read_bytes("pickle/before") == b"1"
        copy.write_bytes("pickle/after", b"2")
        assert datastore.read_bytes("pickle/after") == b"2"
        assert copy.read_many(["pickle/before", "pickle/after"]) == [b"1", b"2"]
        copy.close()

    def test_reopen_from_url_sees_the_same_data(self, datastore: Datastore) -> None:
        datastore.write_bytes("reopen/key", b"shared")
        if not type(datastore).shared:
            return  # an in-process store: a second object is a second, empty store
        other = self.reopen(datastore)
        try:
            assert other.read_bytes("reopen/key") == b"shared"
            assert other.list_prefix("reopen/") == ["key"]
        finally:
            other.close()

    def test_close_then_use_again(self, datastore: Datastore) -> None:
        datastore.write_many({"close/a": b"a", "close/b": b"b"})
        datastore.close()
        assert datastore.read_bytes("close/a") == b"a"
        assert datastore.read_many(["close/a", "close/b"]) == [b"a", b"b"]
        datastore.close()

    # ---- errors a user meets: storage that is not there, credentials refused, no secret shown ---
    def test_missing_storage_is_named_and_never_created(self, datastore: Datastore) -> None:
        """A missing bucket is an error naming the datastore, not a missing key or an empty listing
        (the results API would then say "no such execution"), and nothing creates it."""
        missing = self.missing_storage(datastore)
        if missing is None:
            pytest.skip(
                f"{type(datastore).__name__} creates its storage on first use (missing_storage is None)"
            )
        try:
            for name, operation in _primitives(missing):
                with pytest.raises(LaminarError) as error:
                    operation()
                assert _where(missing) in str(error.value), (
                    f"{name}: {error.value} does not name the datastore"
                )
                assert _MISSING.search(str(error.value)), (
                    f"{name}: {error.value} does not say it does not exist"
                )
            missing.close()  # a new client asks again: the failed write created nothing
            with pytest.raises(LaminarError):
                missing.exists("conformance/key")
            with pytest.raises(LaminarError) as failure:
                ConformanceFlow(datastore=missing, executor=executors.Thread())(
                    execution="conformance-missing", count=2, label="missing"
                )
            assert _where(missing) in _shown(failure.value)
        finally:
            missing.close()

    def test_rejected_credentials_are_named_and_lose_nothing(self, datastore: Datastore) -> None:
        """Refused credentials are an error naming the datastore and saying so (not a missing key, a
        ``False`` or an empty listing), and what is stored stays as it was."""
        refused = self.rejected_credentials(datastore, self.planted_secret)
        if refused is None:
            pytest.skip(f"{type(datastore).__name__} takes no credentials (rejected_credentials is None)")
        datastore.write_bytes("conformance/kept", b"precious")
        try:
            for name, operation in _primitives(refused, "conformance/kept"):
                with pytest.raises(LaminarError) as error:
                    operation()
                assert _where(refused) in str(error.value), (
                    f"{name}: {error.value} does not name the datastore"
                )
                assert _CREDENTIALS.search(str(error.value)), (
                    f"{name}: {error.value} does not say what was refused"
                )
        finally:
            refused.close()
        assert datastore.read_bytes("conformance/kept") == b"precious"

    def test_secrets_are_masked_in_errors_logs_and_reprs(
        self, datastore: Datastore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The secret in refused credentials shows nowhere: messages, causes, notes, tracebacks, the
        log, ``repr``, ``url``, nor the error of a flow run on it."""
        secret = self.planted_secret
        caplog.set_level(logging.DEBUG, logger="laminar")
        refused = self.rejected_credentials(datastore, secret)
        if refused is None:
            pytest.skip(f"{type(datastore).__name__} takes no credentials (rejected_credentials is None)")
        shown = [repr(refused), str(refused), refused.url]
        try:
            for _, operation in _primitives(refused):
                with pytest.raises(LaminarError) as error:
                    operation()
                shown.append(_shown(error.value))
            with pytest.raises(LaminarError) as failure:
                ConformanceFlow(datastore=refused, executor=executors.Thread())(
                    execution="conformance-refused", count=2, label="refused"
                )
            shown.append(_shown(failure.value))
        finally:
            refused.close()
        shown += [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
        for text in shown:
            assert secret not in text, f"the planted secret is shown in: {text[:2000]}"

    # ---- whole flows ---------------------------------------------------------------------------
    def test_flow_runs_and_results_read_back(self, datastore: Datastore) -> None:
        flow = ConformanceFlow(datastore=datastore, executor=executors.Thread())
        execution = flow(execution="conformance-thread", count=4, label="thread")
        self._check_results(flow, execution.id, _expected(4, "thread"))
        if type(datastore).shared:
            other = self.reopen(datastore)
            try:
                self._check_results(
                    ConformanceFlow(datastore=other, executor=executors.Thread()),
                    execution.id,
                    _expected(4, "thread"),
                )
            finally:
                other.close()

    def test_flow_in_worker_processes(self, datastore: Datastore) -> None:
        if not type(datastore).shared:
            with pytest.raises(ConfigurationError):
                ConformanceFlow(datastore=datastore, executor=executors.Process())
            return
        flow = ConformanceFlow(datastore=datastore, executor=executors.Process(concurrency=2))
        execution = flow(execution="conformance-process", count=3, label="process")
        self._check_results(flow, execution.id, _expected(3, "process"))

    def test_flow_artifacts_are_stored_once(self, datastore: Datastore) -> None:
        flow = StoredOnceFlow(datastore=datastore, executor=executors.Thread())
        flow(execution="conformance-first", seed=1)
        first = self._artifact_keys(datastore)
        expected = STORED_ONCE_BLOBS
        assert len(first) == expected, f"expected {expected} blobs under artifacts/, found {sorted(first)}"
        assert all(key.split("/")[1].startswith(key.split("/")[0]) for key in first), sorted(first)
        execution = flow(execution="conformance-second", seed=1)  # the same values again: nothing new
        assert self._artifact_keys(datastore) == first
        flow(execution="conformance-third", seed=2)  # shares 4 values with seed 1, adds one
        assert len(self._artifact_keys(datastore) - first) == 1
        executions = datastore.list_executions(flow=flow)
        assert [e.id for e in executions] == ["conformance-first", "conformance-second", "conformance-third"]
        large = execution.layer(Large)
        assert (large.first, large.again, large.other) == (large_value(1), large_value(1), large_value(2))
        assert list(large.items) == [large_value(3), large_value(4), large_value(5)]
        assert execution.layer(Equal).same == large_value(1)

    # ---- incremental runs (laminar.testing.reuse) -----------------------------------------------
    def test_reuse_an_unchanged_rerun_runs_nothing(self, datastore: Datastore) -> None:
        check_an_unchanged_rerun_runs_nothing(datastore, executors.Thread)

    def test_reuse_a_changed_input_runs_what_reads_it(self, datastore: Datastore) -> None:
        check_a_changed_input_runs_what_reads_it(datastore, executors.Thread)

    def test_reuse_a_rerun_after_gc_computes_again(self, datastore: Datastore) -> None:
        check_a_rerun_after_gc_computes_again(datastore, executors.Thread)

    def test_reuse_two_executions_computing_a_layer_at_once_both_succeed(
        self, datastore: Datastore, tmp_path: Any
    ) -> None:
        check_two_executions_computing_a_layer_at_once_both_succeed(
            datastore, executors.Thread, tmp_path / "marks"
        )

    @staticmethod
    def _artifact_keys(datastore: Datastore) -> set[str]:
        return {
            f"{shard}/{name}"
            for shard in datastore.list_prefix("artifacts/")
            for name in datastore.list_prefix(f"artifacts/{shard}/")
        }

    @staticmethod
    def _check_results(flow: ConformanceFlow, execution_id: str, expected: dict[str, Any]) -> None:
        datastore = flow.configuration.datastore
        execution = flow.execution(execution_id)
        assert execution_id in [e.id for e in datastore.list_executions(flow=flow)]
        ran = [layer.name for layer in datastore.list_layers(execution=execution)]
        assert ran == ["Numbers", "Parameters", "Shifted", "Square", "Total"]  # stored artifacts, by name
        total = execution.layer(Total)
        assert total.state.finished
        assert total.squares == expected["squares"]
        assert total.total == expected["total"]
        assert total.shifted == expected["shifted"]
        assert total.summary == expected["summary"]
        squares = execution.layer(Square)
        assert list(squares.value) == expected["squares"]
        count = len(expected["squares"])
        assert list(squares.position) == [(i, count) for i in range(count)]
        numbers = execution.layer(Numbers)
        assert (
            len(numbers.values) == count
            and numbers.values[1] == 2
            and list(numbers.values[1:]) == list(range(2, count + 1))
        )
        assert datastore.list_artifacts(layer=numbers) == ["blob", "label", "values"]
        assert datastore.list_artifacts(layer=squares) == ["position", "value"]


def _primitives(datastore: Datastore, key: str = "conformance/key") -> list[tuple[str, Callable[[], Any]]]:
    """Each primitive once on ``key`` (a write first), named for messages."""
    return [
        ("write_bytes", lambda: datastore.write_bytes(key, b"overwritten")),
        ("read_bytes", lambda: datastore.read_bytes(key)),
        ("exists", lambda: datastore.exists(key)),
        ("list_prefix", lambda: datastore.list_prefix("")),
    ]


#: Words by which an error says that the storage is not there.
_MISSING = re.compile(r"(?i)does not exist|not found|no such")
#: Words by which an error says that credentials were refused.
_CREDENTIALS = re.compile(
    r"(?i)credential|password|authenticat|access key|account key|denied|forbidden|unauthori[sz]ed"
)


def _where(datastore: Datastore) -> str:
    """What an error must name: the datastore's URL, without a query (options, never secrets)."""
    return datastore.url.partition("?")[0]


def _shown(error: BaseException) -> str:
    """All a user can see of ``error``: its traceback with every cause, and every message and note."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    current: BaseException | None = error
    for _ in range(40):
        if current is None:
            break
        text += f"\n{current}\n" + "\n".join(map(str, getattr(current, "__notes__", [])))
        current = current.__cause__ or current.__context__
    return text
