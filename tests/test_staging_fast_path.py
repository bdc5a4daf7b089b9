"""A small value's fast way into and out of the store: the same stored bytes as the stream.

The default pickle protocol stages a value that turns out small from its bytes in hand
(``staging._HeldWhileSmall``, ``codecs.encode_whole``); every other protocol streams through
``EncodingWriter``. Here the two are compared on the same values: ``Streamed`` is the default
pickle protocol under its own name, but not the exact class, so it takes the streaming path.
Stored bytes, codecs, sizes and content addresses must be identical (reuse keys and deduplication
depend on it), errors the same, and an inline artifact is still checked before it is unpickled.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import zstandard
from laminar._serialization import codecs
from laminar._serialization.codecs import FRAME_SAMPLE, EncodingWriter
from laminar._serialization.protocols import Pickle, Protocol
from laminar._storage import loading, staging
from laminar._storage.staging import INLINE_LIMIT, StagedArtifact
from laminar._storage.store import ExecutionStore
from laminar._transport.datastore import Datastore
from laminar._transport.memory import Memory
from laminar.configurations import datastores
from laminar.errors import IntegrityError, InvalidName


class Streamed(Pickle):
    """The default protocol, staged the general way (``stage`` takes the fast path for ``Pickle`` only)."""


class Utf8(Protocol[str]):
    """A protocol that is not pickle: its bytes always stream."""

    def dumps(self, value: str) -> bytes:
        return value.encode()

    def loads(self, data: bytes) -> str:
        return data.decode()


class Eager(Memory):
    """A Memory datastore that compresses whatever shrinks at all (the default threshold)."""

    worth_compressing = 0.85


class Spilling(Memory):
    """A datastore that stages values past 512 bytes in files, not memory."""

    staged_in_memory = 512


def noise(count: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(count)


def sized(total: int) -> bytes:
    """Incompressible bytes whose pickle is exactly ``total`` bytes long."""
    overhead = len(Pickle().dumps(b""))
    for extra in range(overhead, overhead + 16):  # a longer bytes object takes a longer length prefix
        value = noise(total - extra)
        if len(Pickle().dumps(value)) == total:
            return value
    raise AssertionError(f"no bytes object pickles to {total} bytes")


def text(total: int) -> str:
    """Compressible: a str whose pickle is exactly ``total`` bytes long."""
    for extra in range(0, 32):
        value = ("laminar " * total)[: total - extra]
        if len(Pickle().dumps(value)) == total:
            return value
    raise AssertionError(f"no str pickles to {total} bytes")


def values() -> dict[str, Any]:
    frame = pd.DataFrame({"a": range(20), "b": [f"x{i}" for i in range(20)]})
    return {
        "small dict": {f"k{i}": i for i in range(10)},
        "chain dict": {f"k{i}": i for i in range(10)} | {f"step{n}": n for n in range(200)},
        "list": [1, "two", 3.0, None, (4, 5)],
        "nested": {"a": [list(range(50))] * 3, "b": {"c": "d" * 300}},
        "small array": np.arange(100, dtype=np.int64),
        "medium array": np.arange(1500, dtype=np.float64),
        "framed array": np.arange(20_000, dtype=np.float64),  # out of band, read whole
        "large array": np.arange(300_000, dtype=np.float64),
        "small frame": frame,
        "large frame": pd.DataFrame({"a": np.arange(100_000), "b": np.ones(100_000)}),
        "noise below inline": sized(INLINE_LIMIT - 1),
        "noise at inline": sized(INLINE_LIMIT),
        "noise above inline": sized(INLINE_LIMIT + 1),
        "text below inline": text(INLINE_LIMIT - 1),
        "text at inline": text(INLINE_LIMIT),
        "text above inline": text(INLINE_LIMIT + 1),
        "text compressed inline": text(3000),
        "text at frame sample": text(FRAME_SAMPLE),
        "text above frame sample": text(FRAME_SAMPLE + 1),
        "noise at frame sample": sized(FRAME_SAMPLE),
        "noise above frame sample": sized(FRAME_SAMPLE + 1),
        "large text": text(3 << 20),
    }


def stored_bytes(item: StagedArtifact) -> bytes:
    if item.data is not None:
        return item.data
    assert item.path is not None
    with open(item.path, "rb") as file:
        return file.read()


def datastore_of(kind: str, tmp_path: Path) -> Datastore:
    if kind == "local":
        return datastores.Local(tmp_path / "store")
    return {"eager": Eager, "spilling": Spilling}.get(kind, Memory)()


@pytest.mark.parametrize("kind", ["memory", "eager", "local", "spilling"])
def test_the_fast_path_stages_what_the_stream_stages(kind: str, tmp_path: Path) -> None:
    datastore = datastore_of(kind, tmp_path)
    codecs_seen = set()
    for name, value in values().items():
        fast = staging.stage(value, datastore=datastore, protocol=Pickle())
        streamed = staging.stage(value, datastore=datastore, protocol=Streamed())
        try:
            assert fast.artifact == streamed.artifact, name  # address, codec, size, stored, inline
            assert fast.artifact.stored == streamed.artifact.stored, name
            assert fast.artifact.inline == streamed.artifact.inline, name
            assert stored_bytes(fast) == stored_bytes(streamed), name
            assert (fast.path is None) == (streamed.path is None), name
            codecs_seen.add(fast.artifact.codec)
        finally:
            fast.discard()
            streamed.discard()
    assert codecs_seen == {"none", "zstd"}


def test_a_value_just_past_the_inline_limit_is_not_inline() -> None:
    datastore = Memory()
    at = staging.stage(sized(INLINE_LIMIT), datastore=datastore, protocol=Pickle()).artifact
    past = staging.stage(sized(INLINE_LIMIT + 1), datastore=datastore, protocol=Pickle()).artifact
    assert at.inline is not None and len(at.inline) == INLINE_LIMIT and at.codec == "none"
    assert past.inline is None and past.size == INLINE_LIMIT + 1
    squeezed = staging.stage(text(3000), datastore=datastore, protocol=Pickle()).artifact
    assert squeezed.codec == "zstd" and squeezed.inline is not None and squeezed.stored is not None
    assert zstandard.ZstdDecompressor().decompress(squeezed.inline) == Pickle().dumps(text(3000))


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_split_stored_the_fast_way_reads_back_and_dedups(kind: str, tmp_path: Path) -> None:
    datastore = datastore_of(kind, tmp_path)
    store = ExecutionStore(datastore, "Fast", "e1", _protocols())
    for name, value in values().items():
        record = store.stage_split({"carried": value}, {})
        artifact = record.archives["carried"].artifacts[0]
        again = store.stage_split({"carried": value}, {}).archives["carried"].artifacts[0]
        assert again == artifact, name
        loaded = store.load(artifact)
        if isinstance(value, np.ndarray):
            assert np.array_equal(loaded, value), name
        elif isinstance(value, pd.DataFrame):
            assert loaded.equals(value), name
        else:
            assert loaded == value, name


def test_a_protocol_that_is_not_pickle_streams_as_encode_whole_says() -> None:
    datastore = Eager()
    for value in ["short", "words " * 1000, noise(3000).hex()[:3000]]:
        staged = staging.stage(value, datastore=datastore, protocol=Utf8())
        codec, data = codecs.encode_whole(value.encode(), worth_it=datastore.worth_compressing)
        assert (staged.artifact.codec, staged.data) == (codec, data)
        assert staged.artifact.size == len(value.encode())
    with pytest.raises(ValueError, match="at most 16384 bytes"):
        codecs.encode_whole(bytes(FRAME_SAMPLE + 1))


def test_encode_whole_decides_as_the_writer_does() -> None:
    for worth_it in (0.02, 0.3, 0.85):
        for data in [b"", b"a" * 1023, b"a" * 1024, noise(5000), b"ab" * 5000, text(8000).encode()]:
            sink = io.BytesIO()
            writer = EncodingWriter(sink, worth_it=worth_it)
            writer.write(data)
            writer.finish()
            assert codecs.encode_whole(data, worth_it=worth_it) == (writer.codec, sink.getvalue())


def test_a_reused_compressor_gives_the_bytes_of_a_fresh_one() -> None:
    inputs = [text(n).encode() for n in (1024, 5000, 40_000)] + [noise(20_000), b"z" * 70_000]
    for data in inputs * 2:  # each after others, on this thread's reused compressor
        fresh = zstandard.ZstdCompressor(level=codecs.ZSTD_LEVEL)
        streaming = fresh.compressobj()
        assert codecs.compress(data, "zstd") == streaming.compress(data) + streaming.flush()
        assert codecs._compress_frame(data) == [
            zstandard.ZstdCompressor(level=codecs.ZSTD_LEVEL).compress(data)
        ]
    other: list[bytes] = []  # another thread's compressor gives the same too
    thread = threading.Thread(target=lambda: other.append(codecs.compress(inputs[1], "zstd")))
    thread.start()
    thread.join()
    assert other == [codecs.compress(inputs[1], "zstd")]


def _protocols() -> Any:
    from laminar._plugins.manager import plugin_protocols
    from laminar._serialization.registry import protocols_for

    return protocols_for(plugin_protocols())


class Refuses:
    """A user's object that cannot be pickled."""

    def __reduce__(self) -> Any:
        raise TypeError("Refuses objects stay in their process")


LOCK = "it holds a lock (_thread.lock), which cannot come back when the value is read in another process"
REFUSES = "Refuses objects stay in their process"


def unpicklable(large: bool, culprit: Any) -> list[Any]:
    """A value that fails to pickle only after its first bytes (past ``FRAME_SAMPLE`` if ``large``,
    and then past the Local datastore's in-memory staging, so a staging file was begun)."""
    return [noise(3 << 20) if large else "small", culprit]


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize(("culprit", "message"), [(threading.Lock(), LOCK), (Refuses(), REFUSES)])
def test_an_unpicklable_value_fails_as_before_and_stores_nothing(
    large: bool, culprit: Any, message: str, tmp_path: Path
) -> None:
    datastore = datastores.Local(tmp_path / "store")
    value = unpicklable(large, culprit)
    with pytest.raises(TypeError) as streamed:
        staging.stage(value, datastore=datastore, protocol=Streamed())
    with pytest.raises(TypeError) as fast:
        staging.stage(value, datastore=datastore, protocol=Pickle())
    assert type(fast.value) is type(streamed.value)
    assert str(fast.value) == str(streamed.value) and str(fast.value).startswith(message)
    store = ExecutionStore(datastore, "Fast", "e1", _protocols())
    with pytest.raises(TypeError, match=re.escape(message)):
        store.stage_split({"carried": value}, {})
    assert os.listdir(datastore.staging_directory()) == []
    assert not (tmp_path / "store" / "artifacts").exists()


def test_an_unpicklable_value_is_named_by_on_error() -> None:
    store = ExecutionStore(Memory(), "Fast", "e1", _protocols())

    def named(name: str, error: Exception) -> Exception:
        return RuntimeError(f"artifact {name}: {error}")

    with pytest.raises(RuntimeError, match=f"^artifact carried: {REFUSES}$"):
        store.stage_split({"carried": unpicklable(False, Refuses())}, {}, on_error=named)
    assert store.datastore.list_prefix("") == []


@pytest.mark.parametrize("value", [{"k": 1, "v": list(range(20))}, text(3000)])
def test_a_damaged_inline_artifact_is_refused_before_it_is_unpickled(value: Any) -> None:
    store = ExecutionStore(Memory(), "Fast", "e1", _protocols())
    artifact = store.stage_split({"carried": value}, {}).archives["carried"].artifacts[0]
    assert artifact.inline is not None
    damaged = bytearray(artifact.inline)
    damaged[-2] ^= 1
    bad = dataclasses.replace(artifact, inline=bytes(damaged))
    expected = artifact.stored_hexdigest
    with pytest.raises(IntegrityError) as refused:
        store.load(bad)
    actual = loading.hashing.hexdigest(bytes(damaged))
    assert str(refused.value) == (
        f"an artifact ({artifact.hash} {artifact.hexdigest}) at a split batch in {store.datastore.url} "
        f"(kept inline) is corrupt: its bytes hash to {actual}, not the {expected} recorded; "
        "no value was deserialized from it"
    )


@pytest.mark.parametrize("values", [{"a/b": noise(5000)}, {"ok": 1, "a/b": noise(5000)}])
def test_a_split_of_one_value_checks_its_name_as_any_split(values: dict[str, Any]) -> None:
    store = ExecutionStore(Memory(), "Fast", "e1", _protocols())
    with pytest.raises(InvalidName, match=r"^artifact name 'a/b' cannot be used as a storage name"):
        store.stage_split(values, {})
    assert store.datastore.list_prefix("") == []  # refused before anything was staged or written
