"""Compression codecs, recorded by name with each artifact, and the stream wrappers that apply them.

Compression is chosen per artifact from a sample of its first bytes: incompressible data (numpy
noise, images, already-compressed files) is stored as is, so it is moved once and not slowed down.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, BinaryIO

from laminar._serialization.hashing import ChunkedHash

SAMPLE = 256 * 1024  # bytes looked at before choosing a codec
READ_STEP = 16 * 1024 * 1024  # large reads are split so hashing overlaps reading
WORTH_IT = 0.85  # compress only if the sample shrinks to this fraction or less
SMALL = 1024  # values smaller than this are stored uncompressed
CODECS = ("none", "zlib")


def _decompressor(codec: str) -> Any:
    """A fresh decompressor object for ``codec`` (``None`` for ``none``); the one place codecs decode."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; this Laminar reads {', '.join(CODECS)}")
    return zlib.decompressobj() if codec == "zlib" else None


class DecodeError(ValueError):
    """Stored bytes do not decompress with their codec, or to more or fewer bytes than recorded."""


def decode(data: bytes, codec: str, size: int) -> bytes:
    """The stored bytes ``data`` decompressed with ``codec``, for values read whole.

    ``size`` is the recorded decompressed length: no more than that is ever produced, so a damaged
    or hostile blob cannot make decompression allocate more than the value it claims to be.
    """
    decompressor = _decompressor(codec)
    if decompressor is None:
        return data
    try:
        out = decompressor.decompress(data, size + 1)
        if len(out) <= size and not decompressor.unconsumed_tail:
            out += decompressor.flush()
    except zlib.error as error:
        raise DecodeError(f"its {codec} stream is damaged ({error})") from None
    _check_length(len(out), size, decompressor.eof, codec)
    return bytes(out)


def _check_length(produced: int, size: int, ended: bool, codec: str) -> None:
    if produced > size:
        raise DecodeError(f"it decompresses to more than the {size} bytes recorded")
    if not ended:
        raise DecodeError(f"its {codec} stream ends early")
    if produced != size:
        raise DecodeError(f"it decompresses to {produced} bytes, not the {size} recorded")


class EncodingWriter(io.RawIOBase):
    """A write-only stream: hashes what is written, then compresses it (or not) into ``sink``.

    The codec is decided after the first ``SAMPLE`` bytes (or at ``close``); ``codec``,
    ``hexdigest`` and ``stored_hexdigest`` are final after :meth:`finish`. When the bytes are stored
    as they are, ``stored_hexdigest`` is ``hexdigest``; compressed bytes are hashed as they leave, so
    a reader can check what it fetched before decompressing it.
    """

    def __init__(self, sink: BinaryIO, *, compress: bool = True) -> None:
        super().__init__()
        self.sink = sink
        self.hash = ChunkedHash()
        self.size = 0
        self.codec: str | None = None if compress else "none"
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._compressor: Any = None
        self._stored_hash: ChunkedHash | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        length = view.nbytes
        pending = self.hash.submit(view)  # large chunks hash on other threads while the bytes move
        try:
            self._write(view)
        finally:
            pending.wait()
        return length

    def _write(self, view: memoryview) -> None:
        length = view.nbytes
        self.size += length
        if self.codec is None:
            need = SAMPLE - self._pending_size
            self._pending.append(bytes(view[:need]))  # copy the sample only, never a large value
            self._pending_size += min(need, length)
            if self._pending_size < SAMPLE:
                return
            self._decide()
            view = view[need:]
            if not view.nbytes:
                return
        self._emit(view)

    def _decide(self) -> None:
        sample = b"".join(self._pending)
        self._pending = []
        if len(sample) < SMALL:
            self.codec = "none"  # too small for compression to pay for its header and time
        else:
            compressed = zlib.compress(sample[:SAMPLE], 1)
            self.codec = "zlib" if len(compressed) <= WORTH_IT * min(len(sample), SAMPLE) else "none"
        if self.codec == "zlib":
            self._compressor = zlib.compressobj(1)
            self._stored_hash = ChunkedHash()
        self._emit(memoryview(sample))

    def _emit(self, view: memoryview) -> None:
        if self._compressor is not None:
            self._store(self._compressor.compress(view))
        else:
            self.sink.write(view)

    def _store(self, compressed: bytes) -> None:
        if compressed:
            assert self._stored_hash is not None
            self._stored_hash.update(compressed)
            self.sink.write(compressed)

    def finish(self) -> None:
        """Flush everything into ``sink``; call once, after the last write."""
        if self.codec is None:
            self._decide()
        if self._compressor is not None:
            self._store(self._compressor.flush())
            self._compressor = None

    @property
    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    @property
    def stored_hexdigest(self) -> str:
        """The content address of the bytes as stored (compressed or not)."""
        return self._stored_hash.hexdigest() if self._stored_hash is not None else self.hexdigest


class DecodingReader(io.RawIOBase):
    """A read-only stream that decompresses ``source`` with ``codec``, hashing what it returns if asked.

    ``readinto`` reads straight into the caller's buffer when nothing is compressed, so unpickling a
    large array fills the array's own memory with no intermediate copy. At most ``size`` bytes (the
    recorded decompressed length) are ever produced; a stream that would give more, or ends short,
    raises :class:`DecodeError`. ``hash`` is ``None`` when the caller verified the stored bytes already.
    """

    def __init__(self, source: BinaryIO, codec: str, size: int, *, hash: bool = True) -> None:
        super().__init__()
        self._decompressor = _decompressor(codec)
        self.codec = codec
        self.source = source
        self.size = size
        self.produced = 0
        self.hash: ChunkedHash | None = ChunkedHash() if hash else None
        self._buffer = bytearray()
        self._tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._decompressor is None:
            count = 0
            pending = []
            while count < view.nbytes:  # fill completely: pickle treats a short read as the end
                got = self.source.readinto(view[count : count + READ_STEP])  # type: ignore[attr-defined]
                if not got:
                    break
                if self.hash is not None:
                    pending.append(self.hash.submit(view[count : count + got]))  # hash while reading on
                count += got
            for hashing in pending:
                hashing.wait()
            self.produced += count
            return count
        while len(self._buffer) < view.nbytes and not self._decompressor.eof:
            self._inflate()
        count = min(len(self._buffer), view.nbytes)
        view[:count] = self._buffer[:count]
        if self.hash is not None:
            self.hash.update(view[:count])
        del self._buffer[:count]
        return count

    def _inflate(self) -> None:
        decompressor = self._decompressor
        chunk = self._tail or self.source.read(1 << 20)
        room = self.size - self.produced + 1  # one byte more than recorded is enough to tell
        try:
            out = decompressor.decompress(chunk, room) if chunk else decompressor.flush()
        except zlib.error as error:
            raise DecodeError(f"its {self.codec} stream is damaged ({error})") from None
        self._tail = decompressor.unconsumed_tail
        self.produced += len(out)
        if self.produced > self.size or decompressor.eof or not chunk:
            _check_length(self.produced, self.size, decompressor.eof, self.codec)
        self._buffer += out

    def close(self) -> None:
        self.source.close()
        super().close()
