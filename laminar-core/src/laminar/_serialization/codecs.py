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


def decode(data: bytes, codec: str) -> bytes:
    """The stored bytes ``data`` decompressed with ``codec``, for values read whole."""
    decompressor = _decompressor(codec)
    if decompressor is None:
        return data
    return bytes(decompressor.decompress(data) + decompressor.flush())


class EncodingWriter(io.RawIOBase):
    """A write-only stream: hashes what is written, then compresses it (or not) into ``sink``.

    The codec is decided after the first ``SAMPLE`` bytes (or at ``close``); ``codec`` and
    ``hexdigest`` are final after :meth:`finish`.
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
        self._emit(memoryview(sample))

    def _emit(self, view: memoryview) -> None:
        if self._compressor is not None:
            self.sink.write(self._compressor.compress(view))
        else:
            self.sink.write(view)

    def finish(self) -> None:
        """Flush everything into ``sink``; call once, after the last write."""
        if self.codec is None:
            self._decide()
        if self._compressor is not None:
            self.sink.write(self._compressor.flush())
            self._compressor = None

    @property
    def hexdigest(self) -> str:
        return self.hash.hexdigest()


class DecodingReader(io.RawIOBase):
    """A read-only stream that decompresses ``source`` with ``codec`` and hashes what it returns.

    ``readinto`` reads straight into the caller's buffer when nothing is compressed, so unpickling a
    large array fills the array's own memory with no intermediate copy.
    """

    def __init__(self, source: BinaryIO, codec: str) -> None:
        super().__init__()
        self._decompressor = _decompressor(codec)
        self.source = source
        self.hash = ChunkedHash()
        self._buffer = bytearray()

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
                pending.append(self.hash.submit(view[count : count + got]))  # hash while reading on
                count += got
            for hashing in pending:
                hashing.wait()
            return count
        while len(self._buffer) < view.nbytes:
            chunk = self.source.read(1 << 20)
            if not chunk:
                self._buffer += self._decompressor.flush()
                break
            self._buffer += self._decompressor.decompress(chunk)
        count = min(len(self._buffer), view.nbytes)
        view[:count] = self._buffer[:count]
        self.hash.update(view[:count])
        del self._buffer[:count]
        return count

    def close(self) -> None:
        self.source.close()
        super().close()
