"""Large values move once, and columnar values are stored in forms other tools read.

* The default protocol writes a numpy array's (a DataFrame's, an Arrow table's) buffers out of band:
  from the value's own memory into the stored bytes, which hold them verbatim; a large one is read
  back in one pass into a fresh buffer that becomes the new value's memory, and hashed as it is read.
  Bytes read from the datastore and memory allocated are counted, not timed.
* ``laminar_arrow.use(datastore)`` stores DataFrames and Tables as Arrow IPC (or Parquet) and arrays
  as ``.npy``: the stored blob reads with plain pyarrow / numpy, and reads back from a datastore
  opened untrusted that did not opt in (laminar-arrow registers its protocols for reading).
"""

from __future__ import annotations

import base64
import io
import mmap
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO

import laminar_arrow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
import stored_splits
from laminar import Flow, Layer, Parameters
from laminar._plugins.manager import plugin_protocols
from laminar._serialization.protocols import FRAMED, Pickle
from laminar._storage import layout
from laminar.configurations import datastores, executors
from laminar.errors import SerializationError, UntrustedArtifact

BIG = 24 << 20  # above the in-memory limit (8 MiB): staged through a file, read as a stream
NOISE = np.random.default_rng(0).integers(0, 2**63, size=BIG // 8, dtype=np.int64)  # incompressible


def frame(rows: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "x": rng.random(rows),
            "name": [f"n{i % 13}" for i in range(rows)],
            "when": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(rows), unit="min"),
        },
        index=pd.Index(np.arange(rows) * 2, name="key"),
    )


class Counting(datastores.Local):
    """A Local datastore that counts the bytes read through its streams (a real store, counted)."""

    read_count = 0

    def open_read(self, key: str) -> BinaryIO:
        stream = super().open_read(key)
        store = self

        class Counted(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                got = stream.readinto(buffer)  # type: ignore[attr-defined]
                store.read_count += got or 0
                return got or 0

            def close(self) -> None:
                stream.close()
                super().close()

        return Counted()  # type: ignore[return-value]


class Values(Flow): ...


@Values.register
class Store(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.array = NOISE
        self.frame = frame()
        self.table = pa.table({"a": np.arange(10), "b": [str(i) for i in range(10)]})


def entry(root: Path, name: str, flow: str = "Values", layer: str = "Store") -> dict[str, Any]:
    (stored,) = stored_splits.of_layer(root, flow, "x", layer)
    return stored.artifact(name)


def blob(root: Path, name: str, flow: str = "Values", layer: str = "Store") -> Path:
    return root / layout.artifact(entry(root, name, flow, layer)["hexdigest"])


def stored_bytes(root: Path, name: str) -> bytes:
    """What the datastore holds for ``name``: its blob, or its bytes inline in the split batch."""
    found = entry(root, name)
    return base64.b64decode(found["inline"]) if "inline" in found else blob(root, name).read_bytes()


# ---- the default protocol: out-of-band buffers ------------------------------------------------------


def test_a_large_array_is_stored_out_of_band_with_its_bytes_verbatim(tmp_path: Path) -> None:
    Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")
    stored = blob(tmp_path, "array").read_bytes()
    assert entry(tmp_path, "array")["protocol"] == "cloudpickle"
    assert stored.startswith(FRAMED)
    assert NOISE.tobytes() in stored  # one segment: the array's memory
    assert len(stored) - BIG < 4096  # plus the pickle's few hundred bytes and segment headers


def test_a_large_array_is_read_once_into_its_own_fresh_writable_memory(tmp_path: Path) -> None:
    Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")
    datastore = Counting(tmp_path)
    execution = Values(datastore=datastore, executor=executors.Thread()).execution("x")
    size = entry(tmp_path, "array")["size"]
    tracemalloc.start()
    try:
        array = execution.layer(Store).array
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert datastore.read_count == size  # read once, verified as it came (not hashed, then read again)
    assert peak < 4 << 20  # no copy of the 24 MiB went through Python's allocator
    assert np.array_equal(array, NOISE) and array.flags.writeable
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, mmap.mmap) or isinstance(memoryview(base).obj, mmap.mmap)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX; the shared map is a POSIX mmap default")
def test_a_large_array_read_back_is_private_to_its_process(tmp_path: Path) -> None:
    # Its memory is a private map: a forked child (multiprocessing's default on Linux) writing to its
    # copy must not write to the parent's, as it would through a shared anonymous map.
    Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")
    array = (
        Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
        .execution("x")
        .layer(Store)
        .array
    )
    before = int(array[0])
    child = os.fork()
    if child == 0:
        array[0] = before + 1
        os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    assert int(array[0]) == before


def test_staging_a_large_array_copies_none_of_it() -> None:
    array = np.arange(BIG // 8, dtype=np.int64)
    sink = io.BytesIO()
    tracemalloc.start()
    try:
        Pickle().dump(array, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the sink itself grows to the array's size; a copy on the way (a pickled bytes) would double it
    assert peak < BIG * 1.25 + (4 << 20)
    assert sink.getvalue().startswith(FRAMED)


def test_frames_tables_and_small_values_round_trip(tmp_path: Path) -> None:
    pickled = Pickle()
    table = pa.table({"x": np.arange(100_000)})
    readonly = np.arange(100_000)
    readonly.setflags(write=False)
    for value in [frame(100_000), table, readonly, {"a": [1, 2]}, np.arange(3)]:
        data = pickled.dumps(value)
        back = pickled.loads(data)
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(back, value)
        elif isinstance(value, np.ndarray):
            assert np.array_equal(back, value) and back.flags.writeable == value.flags.writeable
        else:
            assert back == value
    assert pickled.dumps({"a": [1, 2]}) == pickle.dumps({"a": [1, 2]}, protocol=5)  # small: plain pickle
    assert pickled.dumps(frame(100_000)).startswith(FRAMED)


def test_a_flipped_byte_in_an_out_of_band_buffer_is_caught_before_unpickling(tmp_path: Path) -> None:
    Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")
    path = blob(tmp_path, "array")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(data)
    from laminar.errors import IntegrityError

    reader = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("x")
    with pytest.raises(IntegrityError, match=r"artifact 'array' .* is corrupt: its bytes hash to"):
        reader.layer(Store).array  # noqa: B018


# ---- laminar-arrow: columnar, safe ------------------------------------------------------------------


def run_columnar(root: Path, **options: Any) -> Any:
    datastore = laminar_arrow.use(datastores.Local(root), **options)
    return Values(datastore=datastore, executor=executors.Thread())(execution="x")


def untrusted(root: Path) -> Any:
    return Values(datastore=datastores.Local(root).untrusted(), executor=executors.Thread()).execution("x")


def test_frames_and_tables_are_arrow_ipc_that_pyarrow_reads_from_the_stored_bytes(tmp_path: Path) -> None:
    run_columnar(tmp_path)
    assert entry(tmp_path, "frame")["protocol"] == "laminar_arrow.ipc"
    assert entry(tmp_path, "frame")["codec"] == "none"
    with pa.ipc.open_stream(pa.OSFile(str(blob(tmp_path, "frame")))) as reader:
        pd.testing.assert_frame_equal(reader.read_all().to_pandas(), frame())
    with pa.ipc.open_stream(stored_bytes(tmp_path, "table")) as reader:
        assert (
            reader.read_all()
            .select(["a", "b"])
            .equals(pa.table({"a": np.arange(10), "b": [str(i) for i in range(10)]}))
        )


def test_arrays_are_npy_that_numpy_reads_without_pickle(tmp_path: Path) -> None:
    run_columnar(tmp_path)
    assert entry(tmp_path, "array")["protocol"] == "laminar.npy"
    loaded = np.load(blob(tmp_path, "array"), allow_pickle=False)
    assert np.array_equal(loaded, NOISE)


def test_columnar_values_read_back_untrusted_without_opting_in(tmp_path: Path) -> None:
    run_columnar(tmp_path)
    store = untrusted(tmp_path).layer(Store)
    pd.testing.assert_frame_equal(store.frame, frame())
    assert store.table.equals(pa.table({"a": np.arange(10), "b": [str(i) for i in range(10)]}))
    assert store.table.schema.metadata is None  # Laminar's mark is not handed back
    assert np.array_equal(store.array, NOISE) and store.array.flags.writeable


FRESH_PROCESS = """
import sys

from laminar import Flow, Layer
from laminar.configurations import datastores, executors


class Tiny(Flow): ...


@Tiny.register
class One(Layer):
    def __call__(self) -> None:
        self.x = 1


class Values(Flow): ...


@Values.register
class Store(Layer):
    def __call__(self) -> None: ...


Tiny(datastore=datastores.Local(sys.argv[1] + "-tiny"), executor=executors.Thread())()
print("after a run:", "pyarrow" in sys.modules)
reader = Values(datastore=datastores.Local(sys.argv[1]).untrusted(), executor=executors.Thread())
frame = reader.execution("x").layer("Store").frame
print("after a read:", "pyarrow" in sys.modules, type(frame).__name__, len(frame))
"""


def test_pyarrow_is_imported_by_the_first_columnar_value_not_by_loading_the_plugin(tmp_path: Path) -> None:
    """Every Laminar process loads laminar-arrow's protocols (to read what they stored); importing
    pyarrow with them cost each one about 0.2 s and 40 MiB, columnar values or not."""
    run_columnar(tmp_path / "store")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "after a run: False" in result.stdout  # the plugin loaded, its protocols registered
    assert "after a read: True DataFrame 1000" in result.stdout  # read back, untrusted, not opted in


def test_parquet_is_readable_by_pyarrow_parquet_and_reads_back_untrusted(tmp_path: Path) -> None:
    run_columnar(tmp_path, format="parquet")
    assert entry(tmp_path, "frame")["protocol"] == "laminar_arrow.parquet"
    pd.testing.assert_frame_equal(pq.read_table(blob(tmp_path, "frame")).to_pandas(), frame())
    pd.testing.assert_frame_equal(untrusted(tmp_path).layer(Store).frame, frame())


def test_a_large_frame_reads_back_untrusted_fetched_once(tmp_path: Path) -> None:
    class Large(Flow): ...

    @Large.register
    class Big(Layer):
        def __call__(self) -> None:
            self.frame = frame(400_000)

    Large(datastore=laminar_arrow.use(datastores.Local(tmp_path)), executor=executors.Thread())(execution="x")
    size = entry(tmp_path, "frame", "Large", "Big")["size"]
    assert size > 8 << 20
    datastore = Counting(tmp_path).untrusted()
    read = Large(datastore=datastore, executor=executors.Thread()).execution("x").layer(Big).frame
    pd.testing.assert_frame_equal(read, frame(400_000))
    assert datastore.read_count == size


def test_without_opting_in_frames_are_pickled_and_refused_untrusted(tmp_path: Path) -> None:
    assert plugin_protocols().get(pd.DataFrame) is None  # installed, yet registered for no type
    Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")
    assert entry(tmp_path, "frame")["protocol"] == "cloudpickle"
    with pytest.raises(UntrustedArtifact, match=r"artifact 'frame'"):
        untrusted(tmp_path).layer(Store).frame  # noqa: B018


class Numbered(Flow): ...


@Numbered.register
class Labels(Layer):
    def __call__(self) -> None:
        self.numbered = pd.DataFrame({1: [1, 2]})


class Mixed(Flow): ...


@Mixed.register
class Objects(Layer):
    def __call__(self) -> None:
        self.mixed = pd.DataFrame({"a": [1, "two"]})


def test_a_frame_arrow_would_change_is_refused_when_written(tmp_path: Path) -> None:
    datastore = laminar_arrow.use(datastores.Local(tmp_path))
    with pytest.raises(
        SerializationError, match=r"artifact 'numbered' of layer Labels cannot be serialized.*str"
    ):
        Numbered(datastore=datastore, executor=executors.Thread())()
    with pytest.raises(
        SerializationError, match=r"artifact 'mixed' of layer Objects cannot be serialized.*Arrow"
    ):
        Mixed(datastore=datastore, executor=executors.Thread())()


def test_a_damaged_ipc_blob_is_named_not_parsed(tmp_path: Path) -> None:
    from laminar.errors import IntegrityError

    run_columnar(tmp_path)
    path = blob(tmp_path, "frame")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=r"artifact 'frame' .* is corrupt: its bytes hash to"):
        untrusted(tmp_path).layer(Store).frame  # noqa: B018


def test_use_names_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'ipc' or 'parquet', not 'orc'"):
        laminar_arrow.use(datastores.Local(tmp_path), format="orc")  # type: ignore[arg-type]
