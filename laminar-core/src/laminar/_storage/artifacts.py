"""Storing and loading values as content-addressed artifacts.

A value is serialized once, streamed through a hashing (and maybe compressing) writer into a
*staging* buffer: memory for small values, a file in the datastore's staging directory for large
ones. Only when every value of a split serialized cleanly are the staged bytes written, so a value
that cannot be serialized leaves nothing behind. Artifacts already stored are not written again.

Values whose stored bytes are at most ``INLINE_LIMIT`` travel inside their archive instead (the
``Artifact.inline`` field): hashed the same way, but costing no request of their own.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from laminar._serialization import codecs, hashing
from laminar._serialization.codecs import SMALL, DecodingReader, EncodingWriter
from laminar._serialization.protocols import Pickle, Protocol, read_from_path, takes_uri, write_to_path
from laminar._serialization.registry import Protocols
from laminar._storage import layout
from laminar._storage.records import Artifact
from laminar._transport.datastore import Datastore
from laminar.errors import DatastoreError

IN_MEMORY_LIMIT = 8 * 1024 * 1024  # staged values larger than this spill to a file
INLINE_LIMIT = 1024  # stored values up to this many bytes are kept inside their archive


class _SpillBuffer(io.RawIOBase):
    """Collects bytes in memory, moving them to a file in ``directory`` once they pass the limit."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.memory: io.BytesIO | None = io.BytesIO()
        self.file: BinaryIO | None = None
        self.path: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.memory is not None and self.memory.tell() + memoryview(data).nbytes > IN_MEMORY_LIMIT:
            fd, self.path = tempfile.mkstemp(dir=self.directory, suffix=".staged")
            self.file = os.fdopen(fd, "wb")
            self.file.write(self.memory.getbuffer())
            self.memory = None
        if self.file is not None:
            return self.file.write(data)
        assert self.memory is not None
        return self.memory.write(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@dataclass
class StagedArtifact:
    """A serialized value waiting to be written: in memory (``data``) or in a local file (``path``)."""

    artifact: Artifact
    data: bytes | None = None
    path: str | None = None

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


#: Types whose pickle is a few bytes, staged without the streaming machinery (see ``_stage_scalar``).
_SCALARS = frozenset({int, float, bool, complex, type(None)})
_SHORT = frozenset({str, bytes})


def _stage_scalar(value: Any, protocol: Protocol[Any]) -> StagedArtifact | None:
    """A number or short string, pickled in one call: the same bytes, hash and codec as ``stage``
    would give (values under ``codecs.SMALL`` bytes are never compressed), a fraction of the cost."""
    kind = type(value)
    if type(protocol) is not Pickle or not (kind in _SCALARS or (kind in _SHORT and len(value) <= 256)):
        return None
    data = protocol.dumps(value)
    if len(data) >= SMALL or len(data) > INLINE_LIMIT:  # the streaming path decides those
        return None
    artifact = Artifact(hashing.hexdigest(data), "none", protocol.name, len(data), inline=data)
    return StagedArtifact(artifact, data=data)


def _stage_through_path(value: Any, directory: str, protocol: Protocol[Any]) -> StagedArtifact:
    """A protocol that writes to a URI (the earlier laminar's form) writes a staging file, hashed after."""
    fd, path = tempfile.mkstemp(dir=directory, suffix=".staged")
    os.close(fd)
    try:
        write_to_path(protocol, value, path)
        digest, size = hashing.ChunkedHash(), 0
        with open(path, "rb") as file:
            while chunk := file.read(hashing.CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        os.remove(path)
        raise
    hexdigest = protocol.hexdigest(value) or digest.hexdigest()
    if size <= INLINE_LIMIT:
        with open(path, "rb") as file:
            data = file.read()
        os.remove(path)
        return StagedArtifact(Artifact(hexdigest, "none", protocol.name, size, inline=data), data=data)
    return StagedArtifact(Artifact(hexdigest, "none", protocol.name, size), path=path)


def stage(value: Any, *, datastore: Datastore, protocol: Protocol[Any]) -> StagedArtifact:
    """Serialize ``value`` into a staging buffer, hashing as it goes. Raises whatever serializing raises."""
    scalar = _stage_scalar(value, protocol)
    if scalar is not None:
        return scalar
    if takes_uri(protocol):
        return _stage_through_path(value, datastore.staging_directory(), protocol)
    buffer = _SpillBuffer(datastore.staging_directory())
    writer = EncodingWriter(buffer, compress=protocol.compress)  # type: ignore[arg-type]
    try:
        protocol.write(value, writer)  # type: ignore[arg-type]
        writer.finish()
    except BaseException:
        buffer.close()
        if buffer.path is not None:
            os.remove(buffer.path)
        raise
    buffer.close()
    hexdigest = protocol.hexdigest(value) or writer.hexdigest
    assert writer.codec is not None
    data = buffer.memory.getvalue() if buffer.memory is not None else None
    inline = data if data is not None and len(data) <= INLINE_LIMIT else None
    artifact = Artifact(
        hexdigest=hexdigest, codec=writer.codec, protocol=protocol.name, size=writer.size, inline=inline
    )
    return StagedArtifact(artifact, data=data, path=buffer.path)


def commit(datastore: Datastore, staged: Sequence[StagedArtifact]) -> None:
    """Write the staged artifacts that are not stored yet (in parallel), then drop the staging files.

    Inline artifacts are skipped: their bytes are written with their archive.
    """
    unique = list({item.artifact.hexdigest: item for item in staged if item.artifact.inline is None}.values())
    if not unique:
        for item in staged:
            item.discard()
        return
    keys = [layout.artifact(item.artifact.hexdigest) for item in unique]
    try:
        # Ask before writing when asking is cheap or the value is large; otherwise writing the same
        # bytes again under the same key costs no more than asking, and is just as idempotent.
        asked = [
            k for k, item in zip(keys, unique, strict=True) if datastore.cheap_exists or item.path is not None
        ]
        present = set(k for k, there in zip(asked, datastore.exists_many(asked), strict=True) if there)
        missing = [(key, item) for key, item in zip(keys, unique, strict=True) if key not in present]

        def write(entry: tuple[str, StagedArtifact]) -> None:
            key, item = entry
            if item.data is not None:
                datastore.write_bytes(key, item.data)
            else:
                assert item.path is not None
                datastore.write_file(key, item.path)

        datastore.map_parallel(write, missing)
    finally:
        for item in staged:
            item.discard()


def load(
    datastore: Datastore,
    artifact: Artifact,
    *,
    protocols: Protocols,
    verify: bool = True,
) -> Any:
    """Read one artifact back into a value, checking its content hash unless ``verify`` is false."""
    protocol = protocols.by_name(artifact.protocol)
    if takes_uri(protocol):
        return _load_through_path(datastore, artifact, protocol, verify)
    if artifact.inline is not None:
        return _decode(artifact.inline, datastore, None, artifact, protocol, verify)
    key = layout.artifact(artifact.hexdigest)
    if artifact.size <= IN_MEMORY_LIMIT:
        return _decode(datastore.read_bytes(key), datastore, key, artifact, protocol, verify)
    raw = DecodingReader(datastore.open_read(key), artifact.codec)
    stream = io.BufferedReader(raw, buffer_size=1 << 16)
    try:
        value = protocol.read(stream)
        if verify and protocol.hexdigest(value) is None:
            while stream.read(1 << 16):  # account for any bytes the protocol did not read
                pass
            _check(datastore, key, raw.hash.hexdigest(), artifact)
    finally:
        stream.close()
    return value


def _decode(
    data: bytes,
    datastore: Datastore,
    key: str | None,
    artifact: Artifact,
    protocol: Protocol[Any],
    verify: bool,
) -> Any:
    """Most artifacts are small: bytes in hand, one hash, no stream wrappers. ``key`` None: inline."""
    try:
        data = codecs.decode(data, artifact.codec)
    except ValueError as error:
        raise ValueError(f"{error} (artifact {_where(datastore, key, artifact)})") from None
    value = protocol.read(io.BytesIO(data))
    if verify and protocol.hexdigest(value) is None:
        _check(datastore, key, hashing.hexdigest(data), artifact)
    return value


def _load_through_path(
    datastore: Datastore, artifact: Artifact, protocol: Protocol[Any], verify: bool
) -> Any:
    """Hand a URI-taking protocol a local file holding the stored bytes, checked against their hash."""
    inline = artifact.inline
    key = None if inline is not None else layout.artifact(artifact.hexdigest)
    fd, path = tempfile.mkstemp(dir=datastore.staging_directory(), suffix=".reading")
    try:
        digest = hashing.ChunkedHash()
        with os.fdopen(fd, "wb") as file:
            source: BinaryIO = io.BytesIO(inline) if inline is not None else datastore.open_read(key or "")
            with source:
                while chunk := source.read(hashing.CHUNK):
                    digest.update(chunk)
                    file.write(chunk)
        if verify and type(protocol).hexdigest is Protocol.hexdigest:  # a protocol's own address: not bytes
            _check(datastore, key, digest.hexdigest(), artifact)
        return read_from_path(protocol, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _where(datastore: Datastore, key: str | None, artifact: Artifact) -> str:
    if key is None:
        return f"{artifact.hexdigest} (kept inline in a split record in {datastore.url})"
    return f"{datastore.url}/{key}"


def _check(datastore: Datastore, key: str | None, actual: str, artifact: Artifact) -> None:
    if actual != artifact.hexdigest:
        raise DatastoreError(
            f"artifact {_where(datastore, key, artifact)} is corrupt: its bytes hash to {actual}"
        )
