"""Large values on a local store: serialized straight into the staging file that is renamed into place
(not into memory first), and read back straight into the buffers that become the value's memory (not
whole into memory and copied out). The stored bytes are the same as before either way, so what was
stored before reads back as it did, and what a read checks is still checked.

Some tests look at the staged form and at which datastore calls a read makes; those reach into
``laminar._storage`` and say so.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from laminar import Flow, Layer, Parameters

# Internal on purpose: where a value is staged and how it is read are not visible through the public API.
from laminar._runtime.context import store_for
from laminar._storage import layout, staging
from laminar._transport.pieces import PIECE
from laminar.configurations import datastores, executors, serde
from laminar.errors import DatastoreError

ROWS = 60_000  # a few MiB pickled: past the 1 MiB a local store stages in memory, below the 8 MiB read whole


def frame(rows: int = ROWS) -> pd.DataFrame:
    """A frame with the column kinds users store: numbers, strings, categories, tz-aware times and
    Python objects, under a named two-level index."""
    rng = np.random.default_rng(7)
    index = pd.MultiIndex.from_arrays([np.arange(rows) % 7, np.arange(rows)], names=["group", "row"])
    return pd.DataFrame(
        {
            "i": np.arange(rows, dtype=np.int64),
            "x": rng.random(rows),
            "s": [f"k{i % 1000}" for i in range(rows)],
            "c": pd.Categorical(rng.choice(["red", "green", "blue"], rows)),
            "t": pd.date_range("2026-01-01", periods=rows, freq="s", tz="Europe/Paris"),
            "o": [(i, str(i)) if i % 2 else datetime.date(2026, 1, 1 + i % 28) for i in range(rows)],
        },
        index=index,
    )


class Frames(Flow): ...


@Frames.register
class Make(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.table = frame(parameters.rows)


@Frames.register
class Use(Layer):
    def __call__(self, make: Make) -> None:
        self.table = make.table.assign(y=make.table["x"] * 2)


class CountingLocal(datastores.Local):
    """A local store that counts whole reads of artifacts (``read_bytes`` of an artifact key)."""

    whole_reads = 0

    def read_bytes(self, key: str) -> bytes:
        if key.startswith("artifacts/"):
            CountingLocal.whole_reads += 1
        return super().read_bytes(key)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingLocal]:
    monkeypatch.setattr(CountingLocal, "whole_reads", 0)
    return CountingLocal


def test_a_large_value_is_staged_in_the_file_that_is_renamed_into_place(tmp_path: Path) -> None:
    datastore = datastores.Local(tmp_path)
    staged = staging.stage(frame(), datastore=datastore, protocol=serde.Pickle())
    assert staged.data is None and staged.path is not None, "staged in memory, not in its file"
    assert staged.artifact.size > datastore.staged_in_memory
    assert os.path.dirname(staged.path) == datastore.staging_directory()
    inode = os.stat(staged.path).st_ino

    staging.commit(datastore, [staged])

    stored = tmp_path / layout.artifact(staged.artifact.hexdigest)
    assert os.stat(stored).st_ino == inode  # the staged file itself, renamed: its bytes written once
    assert not os.path.exists(staged.path)


def test_a_store_that_does_not_rename_keeps_the_same_value_in_memory(tmp_path: Path) -> None:
    staged = staging.stage(frame(), datastore=datastores.Memory(), protocol=serde.Pickle())
    assert staged.path is None and staged.data is not None
    assert staged.artifact.size <= datastores.Memory.staged_in_memory


class LocalBefore(datastores.Local):
    """A local store staging as the code before did: every value up to 8 MiB in memory."""

    staged_in_memory = 8 << 20


def test_staging_in_a_file_stores_the_same_bytes_as_staging_in_memory(tmp_path: Path) -> None:
    value = frame()
    in_file = staging.stage(value, datastore=datastores.Local(tmp_path), protocol=serde.Pickle())
    in_memory = staging.stage(value, datastore=LocalBefore(tmp_path), protocol=serde.Pickle())
    assert in_file.artifact == in_memory.artifact
    assert in_file.path is not None and in_memory.data is not None
    assert Path(in_file.path).read_bytes() == in_memory.data
    in_file.discard()


@pytest.mark.parametrize("executor", [executors.Thread, executors.Process], ids=["thread", "process"])
def test_frames_read_back_equal_read_once_into_their_own_buffers(
    tmp_path: Path, counting: type[CountingLocal], executor: Any
) -> None:
    flow = Frames(datastore=counting(tmp_path), executor=executor())
    execution = flow(rows=ROWS)
    expected = frame()
    counting.whole_reads = 0

    made = execution.layer(Make).table
    pd.testing.assert_frame_equal(made, expected)
    pd.testing.assert_frame_equal(execution.layer(Use).table, expected.assign(y=expected["x"] * 2))
    assert made["o"].iloc[1] == (1, "1") and made["o"].iloc[0] == datetime.date(2026, 1, 1)
    assert counting.whole_reads == 0  # gathered into the value's own buffers, not read whole and copied


def odd_arrays() -> list[Any]:
    """About 7.8 MB of arrays of odd lengths, so each after the first would start off any boundary."""
    return [
        np.arange(100_001, dtype=np.int8),
        np.arange(600_000, dtype=np.float64),
        np.arange(150_001, dtype=np.int16),
        np.arange(330_000, dtype=np.int64),
    ]


def memory_of(array: Any) -> Any:
    """The object that owns ``array``'s memory (past numpy's views and the buffer it was read into)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


class Arrays(Flow): ...


@Arrays.register
class Odd(Layer):
    def __call__(self) -> None:
        self.arrays = odd_arrays()


def test_a_values_large_buffers_read_into_one_map_are_each_aligned_writable_and_its_own(
    tmp_path: Path,
) -> None:
    """The out-of-band buffers of a value of a few MiB are read into one map of whole huge pages (see
    ``protocols._Arena``): each array still starts where numpy reads it fastest, can be written, and
    writing one changes no other, nor the value read again."""
    execution = Arrays(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    arrays, made = execution.layer(Odd).arrays, odd_arrays()
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, made, strict=True))
    assert len({id(memory_of(array)) for array in arrays}) == 1  # one map
    assert all(array.flags.aligned and array.ctypes.data % 64 == 0 for array in arrays)
    for array in arrays:
        assert array.flags.writeable
        array[:] = 0
    assert all(np.array_equal(a, b) for a, b in zip(execution.layer(Odd).arrays, made, strict=True))
    assert all(not array.any() for array in arrays)


def test_values_stored_in_memory_first_still_read_back(tmp_path: Path, counting: type[CountingLocal]) -> None:
    """What the code before this change wrote (every value up to 8 MiB staged in memory, then written)
    is the same bytes: it reads back, through the gathering read, to an equal frame."""
    value = frame()
    staged = staging.stage(value, datastore=LocalBefore(tmp_path), protocol=serde.Pickle())
    assert staged.data is not None and staged.artifact.codec == "none"
    datastore = counting(tmp_path)
    datastore.write_bytes(layout.artifact(staged.artifact.hexdigest), staged.data)

    store = store_for(Frames(datastore=datastore).execution("stored-before"))
    pd.testing.assert_frame_equal(store.load(staged.artifact), value)
    assert counting.whole_reads == 0


def test_a_damaged_large_frame_is_refused_before_it_is_built(tmp_path: Path) -> None:
    flow = Frames(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(rows=ROWS)
    artifact = store_for(flow.execution(execution.id)).archive("Make", 0, "table")
    assert artifact is not None
    path = tmp_path / layout.artifact(artifact.artifacts[0].hexdigest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(DatastoreError, match="is corrupt"):
        flow.execution(execution.id).layer(Make).table  # noqa: B018


class OrderedLocal(datastores.Local):
    """A local store that lists every key it wrote, in order (artifacts renamed in from staging too)."""

    written: list[str] = []

    def write_bytes(self, key: str, data: bytes) -> None:
        super().write_bytes(key, data)
        type(self).written.append(key)

    def write_file(self, key: str, path: str) -> None:
        super().write_file(key, path)
        type(self).written.append(key)


def test_a_layers_record_is_written_only_after_the_values_staged_in_files_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OrderedLocal, "written", [])
    flow = Frames(datastore=OrderedLocal(tmp_path), executor=executors.Thread())
    execution = flow(rows=ROWS)
    written = OrderedLocal.written
    for layer in ("Make", "Use"):
        store = store_for(flow.execution(execution.id))
        archive = store.archive(layer, 0, "table")
        assert archive is not None
        value = layout.artifact(archive.artifacts[0].hexdigest)
        record = store.record_location(layer)  # its record.json, or the record pack holding it
        assert value in written and record in written
        assert written.index(value) < written.index(record), f"{layer}'s record came before its value"


class CountingOpens(CountingLocal):
    """Counts streamed opens of artifacts too; ``cheap_exists`` False stands for an object store."""

    opens = 0

    def open_read(self, key: str) -> Any:
        if key.startswith("artifacts/"):
            CountingOpens.opens += 1
        return super().open_read(key)


class RemoteLike(CountingOpens):
    cheap_exists = False


@pytest.mark.parametrize(
    ("datastore", "opens"), [(CountingOpens, 1), (RemoteLike, 0)], ids=["local", "object-store"]
)
def test_a_plain_pickle_the_gathering_read_declines_is_read_whole_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datastore: type[CountingOpens], opens: int
) -> None:
    """A value with no large buffer (a plain pickle of 1-8 MiB) is read whole as before: on a local
    store after one look at its first bytes, on an object store with no look (no second request)."""
    monkeypatch.setattr(CountingOpens, "opens", 0)
    monkeypatch.setattr(CountingLocal, "whole_reads", 0)
    value = [f"row {i}" for i in range(200_000)]
    store = store_for(Frames(datastore=datastore(tmp_path)).execution("plain"))
    staged = staging.stage(value, datastore=store.datastore, protocol=serde.Pickle())
    assert staged.artifact.codec == "none" and 1 << 20 < staged.artifact.size <= 8 << 20
    staging.commit(store.datastore, [staged])

    assert store.load(staged.artifact) == value
    assert (CountingOpens.opens, CountingLocal.whole_reads) == (opens, 1)


def write_calls() -> int:
    """This process's write system calls so far, as Linux counts them."""
    with open("/proc/self/io") as counters:
        return next(int(line.split()[1]) for line in counters if line.startswith("syscw:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="Linux counts write calls in /proc")
def test_large_values_are_written_to_local_files_in_pieces(tmp_path: Path) -> None:
    """One write of many MiB can cost many times more than the same bytes in pieces (see
    ``laminar._transport.pieces``): a value staged in its file, and bytes written whole, go in pieces."""
    datastore = datastores.Local(tmp_path)
    array = np.arange(1 << 20, dtype=np.int64)  # 8 MiB, one buffer out of band
    before = write_calls()
    staged = staging.stage(array, datastore=datastore, protocol=serde.Pickle())
    assert staged.path is not None
    assert write_calls() - before >= array.nbytes // PIECE

    data = os.urandom(3 << 20)
    before = write_calls()
    datastore.write_bytes("artifacts/whole", data)
    assert write_calls() - before >= len(data) // PIECE
    assert (tmp_path / "artifacts" / "whole").read_bytes() == data

    staging.commit(datastore, [staged])
    np.testing.assert_array_equal(
        store_for(Frames(datastore=datastore).execution("pieces")).load(staged.artifact), array
    )
