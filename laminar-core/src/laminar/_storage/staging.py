"""Staging and writing values as content-addressed artifacts.

A value is serialized once, streamed through a hashing (and maybe compressing) writer into a
*staging* buffer: memory for small values, a file in the datastore's staging directory for large
ones. Only when every value of a split serialized cleanly are the staged bytes written, so a value
that cannot be serialized leaves nothing behind. Artifacts already stored are not written again.
A value the default pickle protocol serializes to a few KiB skips the stream: its bytes, held as
they come, are encoded and hashed once they are all there, to the same stored bytes (``stage``).

Values whose stored bytes are at most ``INLINE_LIMIT`` travel inside their archive instead (the
``Artifact.inline`` field): hashed the same way, but costing no request of their own. Reading them
back is ``loading``'s.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from laminar._serialization import hashing, safe, threads
from laminar._serialization.codecs import FRAME_SAMPLE, SMALL, EncodingWriter, encode_whole
from laminar._serialization.protocols import Pickle, Protocol, plain_pickle, takes_uri, write_to_path
from laminar._storage import layout
from laminar._storage.earlier import gives_own_address
from laminar._storage.records import Artifact
from laminar._transport.datastore import Datastore
from laminar._transport.pieces import PIECE, pieces
from laminar._transport.staging_files import new_file

IN_MEMORY_LIMIT = 8 * 1024 * 1024  # stored values up to this size are read whole (see ``loading``)
INLINE_LIMIT = 1024  # stored values up to this many bytes are kept inside their archive


class _SpillBuffer(io.RawIOBase):
    """Collects bytes in memory, moving them to a file in ``directory`` once they pass ``limit``."""

    def __init__(self, directory: str, limit: int) -> None:
        super().__init__()
        self.directory = directory
        self.limit = limit
        self.memory: io.BytesIO | None = io.BytesIO()
        self.file: BinaryIO | None = None
        self.path: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.memory is not None and self.memory.tell() + memoryview(data).nbytes > self.limit:
            fd, self.path = new_file(self.directory, ".staged")
            self.file = os.fdopen(fd, "wb")
            for piece in pieces(self.memory.getbuffer()):
                self.file.write(piece)
            self.memory = None
        if self.file is not None:
            size = memoryview(data).nbytes
            if size <= PIECE:
                return self.file.write(data)
            for piece in pieces(data):  # see ``pieces``: a large write can cost many times more
                self.file.write(piece)
            return size
        assert self.memory is not None
        return self.memory.write(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@dataclass(slots=True)
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


def surely_small(value: Any) -> bool:
    """Whether ``value`` is a number or short string, which stages in microseconds (``_stage_scalar``):
    never worth handing to another thread."""
    kind = type(value)
    return kind in _SCALARS or (kind in _SHORT and len(value) <= 256)


#: The safe protocols whose ``dumps`` is their whole stored form (not numpy's streamed ``.npy``).
_WHOLE = frozenset(type(safe.BUILTIN[name]) for name in ("laminar.json", "laminar.str", "laminar.bytes"))


def _stage_scalar(value: Any, protocol: Protocol[Any]) -> StagedArtifact | None:
    """A number or short string, serialized in one call: the same bytes, hash and codec as ``stage``
    would give (values under ``codecs.SMALL`` bytes are never compressed), a fraction of the cost.

    The JSON, str and bytes protocols produce their whole stored form in one call and are never
    compressed, so every value of theirs is staged here, whatever its size.
    """
    if type(protocol) in _WHOLE:
        data = protocol.dumps(value)
        inline = data if len(data) <= INLINE_LIMIT else None
        return StagedArtifact(
            Artifact(hashing.hexdigest(data), "none", protocol.name, len(data), inline=inline), data=data
        )
    if type(protocol) is not Pickle or not surely_small(value):
        return None
    data = protocol.dumps(value)
    if len(data) >= SMALL or len(data) > INLINE_LIMIT:  # the streaming path decides those
        return None
    artifact = Artifact(hashing.hexdigest(data), "none", protocol.name, len(data), inline=data)
    return StagedArtifact(artifact, data=data)


#: The stored form of a value a URI-taking protocol kept elsewhere (it wrote nothing at the path it was
#: handed, e.g. into a dict keyed by the uri): these bytes, then the uri, which ``read`` is handed back.
URI_REFERENCE = b"\x00laminar: kept by its protocol at\x00"


def _stage_through_path(value: Any, directory: str, protocol: Protocol[Any]) -> StagedArtifact:
    """A protocol that writes to a URI (the earlier laminar's form) writes a staging file, hashed after.

    The path it is handed does not exist yet. If the protocol leaves it so, it kept the value elsewhere
    under that uri, and the uri itself is stored (``URI_REFERENCE``), so that ``read`` gets the same one.
    """
    fd, path = new_file(directory, ".staged")
    os.close(fd)
    os.remove(path)  # a name no other staging file has, free for the protocol to create
    try:
        write_to_path(protocol, value, path)
        if not os.path.exists(path):
            with open(path, "wb") as file:
                file.write(URI_REFERENCE + path.encode())
        digest, size = hashing.new(), 0
        with open(path, "rb") as file:
            while chunk := file.read(hashing.CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise
    stored = digest.hexdigest()
    hexdigest = protocol.hexdigest(value) or stored
    recorded = stored if stored != hexdigest or gives_own_address(protocol) else None
    if size <= INLINE_LIMIT:
        with open(path, "rb") as file:
            data = file.read()
        os.remove(path)
        artifact = Artifact(hexdigest, "none", protocol.name, size, inline=data, stored=recorded)
        return StagedArtifact(artifact, data=data)
    return StagedArtifact(Artifact(hexdigest, "none", protocol.name, size, stored=recorded), path=path)


def _check_importable(protocol: Protocol[Any]) -> None:
    name = protocol.name
    if name.startswith("__main__."):
        raise TypeError(
            f"protocol {type(protocol).__qualname__} is defined in __main__ with no importable name (an "
            "interactive session or python -c), so no other process could read what it stores; move it "
            "into an importable module (a .py file) and register it from there"
        )


class _HeldWhileSmall:
    """The file the default pickle protocol writes to: its bytes held as they come while they total
    at most ``limit``, staged whole by ``codecs.encode_whole``; past that, the held bytes (in the
    same writes) and everything after go to ``open_writer()``'s stream. Serialized once either way."""

    def __init__(self, limit: int, open_writer: Callable[[], EncodingWriter]) -> None:
        self.limit = limit
        self.open_writer = open_writer
        self.held: list[bytes] | None = []
        self.size = 0
        self.writer: EncodingWriter | None = None

    def write(self, data: Any) -> int:
        if self.writer is not None:
            return self.writer.write(data)
        assert self.held is not None
        size = memoryview(data).nbytes
        self.size += size
        if self.size <= self.limit:
            self.held.append(bytes(data))
            return size
        held, self.held = self.held, None
        self.writer = self.open_writer()
        for chunk in held:
            self.writer.write(chunk)
        return self.writer.write(data)


def stage(value: Any, *, datastore: Datastore, protocol: Protocol[Any]) -> StagedArtifact:
    """Serialize ``value`` into a staging buffer, hashing as it goes. Raises whatever serializing raises.

    The default pickle protocol (importable, taking no uri) stages a value that turns out small
    (``FRAME_SAMPLE`` bytes) from its bytes in hand: the stored bytes, codec and hashes are those the
    stream would give (``codecs.encode_whole``), without a staging buffer or stream to set up. A
    value of built-in types only is pickled in one piece without cloudpickle (``plain_pickle``).
    """
    scalar = _stage_scalar(value, protocol)
    if scalar is not None:
        return scalar
    plain: bytes | None = None
    if type(protocol) is Pickle:
        plain = plain_pickle(value)  # what ``protocol.write`` would write, in one piece
        if plain is not None and len(plain) <= min(FRAME_SAMPLE, datastore.staged_in_memory):
            return _stage_whole(value, plain, datastore, protocol)  # as the held bytes below would be
    else:
        _check_importable(protocol)
        if takes_uri(protocol):
            return _stage_through_path(value, datastore.staging_directory(), protocol)
    opened: list[tuple[_SpillBuffer, EncodingWriter]] = []

    def open_writer() -> EncodingWriter:
        buffer = _SpillBuffer(datastore.staging_directory(), datastore.staged_in_memory)
        writer = EncodingWriter(buffer, compress=protocol.compress, worth_it=datastore.worth_compressing)  # type: ignore[arg-type]
        opened.append((buffer, writer))
        return writer

    if type(protocol) is Pickle:  # held no longer than the stream would hold it in memory
        sink: Any = _HeldWhileSmall(min(FRAME_SAMPLE, datastore.staged_in_memory), open_writer)
    else:
        sink = open_writer()
    try:
        if plain is not None:
            sink.write(plain)
        elif type(protocol) is Pickle:
            protocol.dump_framed(value, sink)  # (``plain_pickle`` gave up on it above)
        else:
            protocol.write(value, sink)
        if opened:
            opened[0][1].finish()
    except BaseException:
        for buffer, _ in opened:
            buffer.close()
            if buffer.path is not None:
                os.remove(buffer.path)
        raise
    if not opened:
        assert isinstance(sink, _HeldWhileSmall) and sink.held is not None
        return _stage_whole(value, b"".join(sink.held), datastore, protocol)
    buffer, writer = opened[0]
    buffer.close()
    hexdigest = protocol.hexdigest(value) or writer.hexdigest
    assert writer.codec is not None
    stored = writer.stored_hexdigest
    data = buffer.memory.getvalue() if buffer.memory is not None else None
    inline = data if data is not None and len(data) <= INLINE_LIMIT else None
    artifact = Artifact(
        hexdigest=hexdigest,
        codec=writer.codec,
        protocol=protocol.name,
        size=writer.size,
        inline=inline,
        stored=stored if stored != hexdigest or gives_own_address(protocol) else None,
    )
    return StagedArtifact(artifact, data=data, path=buffer.path)


def _stage_whole(
    value: Any, serialized: bytes, datastore: Datastore, protocol: Protocol[Any]
) -> StagedArtifact:
    """A value whose serialized bytes are all in hand: staged as ``stage``'s stream would stage them."""
    codec, data = encode_whole(serialized, compress=protocol.compress, worth_it=datastore.worth_compressing)
    content = hashing.hexdigest(serialized)
    hexdigest = protocol.hexdigest(value) or content
    stored = content if data is serialized else hashing.hexdigest(data)
    artifact = Artifact(
        hexdigest=hexdigest,
        codec=codec,
        protocol=protocol.name,
        size=len(serialized),
        inline=data if len(data) <= INLINE_LIMIT else None,
        stored=stored if stored != hexdigest or gives_own_address(protocol) else None,
    )
    return StagedArtifact(artifact, data=data)


#: Once a value this large (serialized) is staged, the values after it are staged several at once.
PARALLEL_AFTER = 1 << 20


def stage_in_order(
    count: int, stage_one: Callable[[int], StagedArtifact], *, second_ahead: bool = False
) -> list[StagedArtifact]:
    """``[stage_one(i) for i in range(count)]``, each after the one before until one is large; then
    the rest several at once, one run of them per core, so the shards of a large value are not
    serialized and hashed one by one. Small values stay on this thread: a hand-off costs more than
    they do.

    ``second_ahead`` (the caller's guess that the values are not all tiny): the second is staged on
    the staging pool while the first is staged here, so the other cores do not wait for a large first
    value to be staged alone before its size is known. If both turn out small, the rest go on here.

    If any raises, everything staged is discarded, and the error of the first that failed is raised.
    """
    staged: list[StagedArtifact] = []
    try:
        if second_ahead and count > 1 and threads.cores() > 1:
            staged = _first_two_at_once(count, stage_one)
        while len(staged) < count:
            if staged and staged[-1].artifact.size >= PARALLEL_AFTER and threads.cores() > 1:
                staged.extend(_stage_at_once(range(len(staged), count), stage_one))
                break
            staged.append(stage_one(len(staged)))
    except BaseException:
        for item in staged:
            item.discard()
        raise
    return staged


def _first_two_at_once(count: int, stage_one: Callable[[int], StagedArtifact]) -> list[StagedArtifact]:
    """The first value staged here and the second on the staging pool at the same time; if the first
    is large, the rest with them, one run a core (``in_runs``). A second no thread took up while the
    first was staged (the pool busy with other splits' values) is taken back: only the first is
    returned, and the caller goes on from the second as without the guess. On failure everything
    staged is discarded and the first failure in order raised (what interrupted this thread, first).
    """
    second = threads.staging_pool().submit(contextvars.copy_context().run, stage_one, 1)
    staged: list[StagedArtifact] = []
    rest: list[StagedArtifact] = []
    failure = rest_failure = None
    try:
        staged.append(stage_one(0))
    except BaseException as error:
        failure = error
    if second.cancel():
        if failure is not None:
            raise failure
        return staged
    if failure is None and count > 2 and staged[0].artifact.size >= PARALLEL_AFTER:
        rest, rest_failure = threads.in_runs(range(2, count), stage_one)
    interrupted = threads.wait_on(second)  # what it staged is ours to keep or discard
    second_failure = second.exception()
    staged += [second.result()] if second_failure is None else []
    staged += rest
    failure = interrupted or failure or second_failure or rest_failure
    if failure is not None:
        for item in staged:
            item.discard()
        raise failure
    return staged


def _stage_at_once(positions: range, stage_one: Callable[[int], StagedArtifact]) -> list[StagedArtifact]:
    """Stage ``positions`` in contiguous runs, one here and the others on the staging pool."""
    staged, error = threads.in_runs(positions, stage_one)
    if error is not None:
        for item in staged:
            item.discard()
        raise error
    return staged


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
        # bytes again under the same key costs no more than asking, and is just as idempotent. Bytes
        # that are not the serialized value itself (compressed) are never replaced: another zlib
        # could compress the same value to other bytes, and records already point at the first.
        asked = [
            k
            for k, item in zip(keys, unique, strict=True)
            if datastore.cheap_exists or item.path is not None or item.artifact.stored is not None
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
