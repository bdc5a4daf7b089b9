"""Integrity and trust on the object stores: damaged blobs are named before decoding, and an
untrusted read unpickles nothing, on S3, GCS and Azure alike; a value compressed otherwise than
its record says (an earlier zstandard) still reads back (tests/test_integrity.py and
tests/test_trust.py cover every kind of damage on Local)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import compressed_otherwise, datastore_at
from laminar import Flow, Layer
from laminar.configurations import executors
from laminar.errors import IntegrityError, UntrustedArtifact

BACKENDS = [
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("gcs", marks=pytest.mark.gcs),
    pytest.param("azure", marks=pytest.mark.azure),
]

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"laminar-unpickled-{os.getpid()}"


def _touch_marker() -> Marker:
    MARKER.touch()
    return Marker()


class Marker:
    """A value whose unpickling runs code (it creates a file), as a hostile store's would."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch_marker, ())


class Stored(Flow): ...


@Stored.register
class Values(Layer):
    def __call__(self) -> None:
        self.noise = random.Random(1).randbytes(200_000)  # incompressible: stored as is
        self.text = " ".join(str(i) for i in range(40_000))  # compressible: stored with zstd
        self.marker = Marker()


def _blobs(datastore: Any) -> list[str]:
    return [
        f"artifacts/{shard}/{name}"
        for shard in datastore.list_prefix("artifacts/")
        for name in datastore.list_prefix(f"artifacts/{shard}/")
    ]


def _rewrite_blobs(location: Any, change: Callable[[bytes], bytes]) -> list[str]:
    """Replace the bytes of each of the two blobs the flow stored with ``change`` of them; their keys."""
    datastore = datastore_at(location)
    blobs = _blobs(datastore)
    assert len(blobs) == 2
    for key in blobs:
        datastore.write_bytes(key, change(datastore.read_bytes(key)))
    return blobs


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_blob_in_an_object_store_is_named_before_decoding(
    backend: str, request: pytest.FixtureRequest
) -> None:
    location = request.getfixturevalue(f"{backend}_location")
    execution = Stored(datastore=location, executor=executors.Thread())(execution="damaged")

    def flipped(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[len(changed) // 2] ^= 0xFF
        return bytes(changed)

    blobs = _rewrite_blobs(location, flipped)  # noise and text; the small marker pickle is inline
    reader = Stored(datastore=location, executor=executors.Thread()).execution(execution.id).layer(Values)
    for name in ("noise", "text"):
        with pytest.raises(IntegrityError) as error:
            getattr(reader, name)
        message = str(error.value)
        assert "is corrupt" in message and name in message, message
        assert any(key in message for key in blobs), message  # the storage key, in its URL


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_untrusted_object_store_unpickles_nothing(backend: str, request: pytest.FixtureRequest) -> None:
    location = request.getfixturevalue(f"{backend}_location")
    execution = Stored(datastore=location, executor=executors.Thread())(execution="planted")
    MARKER.unlink(missing_ok=True)
    untrusted = datastore_at(location).untrusted()
    reader = Stored(datastore=untrusted, executor=executors.Thread()).execution(execution.id).layer(Values)
    with pytest.raises(UntrustedArtifact, match="marker"):
        reader.marker  # noqa: B018
    assert not MARKER.exists()
    trusted = Stored(datastore=location, executor=executors.Thread()).execution(execution.id).layer(Values)
    trusted.marker  # noqa: B018  # the control: trusted, the same bytes do run code
    assert MARKER.exists()
    MARKER.unlink()


class Recompressed(Flow): ...


@Recompressed.register
class Compressible(Layer):
    def __call__(self) -> None:
        self.text = " ".join(str(i) for i in range(40_000))  # read whole
        self.big = " ".join(str(i) for i in range(1_300_000)).encode()  # 9 MB: streamed via a staging file


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_value_an_earlier_zstandard_compressed_otherwise_reads_back_from_an_object_store(
    backend: str, request: pytest.FixtureRequest
) -> None:
    location = request.getfixturevalue(f"{backend}_location")
    execution = Recompressed(datastore=location, executor=executors.Thread())(execution="recompressed")

    _rewrite_blobs(location, compressed_otherwise)
    reader = Recompressed(datastore=location, executor=executors.Thread()).execution(execution.id)
    assert reader.layer(Compressible).text == " ".join(str(i) for i in range(40_000))
    assert reader.layer(Compressible).big == " ".join(str(i) for i in range(1_300_000)).encode()
