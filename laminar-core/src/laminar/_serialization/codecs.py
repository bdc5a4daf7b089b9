"""Compression codecs, recorded by name with each artifact, and the stream wrappers that apply them.

Compression is chosen per artifact from a sample of its first bytes, then per frame: what is written
with zstd (``WRITE_CODEC``, level 1: faster than zlib both ways, and smaller; docs/performance.md has
the figures) is cut into independent zstd frames of ``FRAME`` bytes, and each frame is
compressed only if a sample of it shrinks enough; the others are stored as raw zstd frames (the bytes
as they are, behind a few bytes of header). A DataFrame's noise columns are then moved as they are
while its ids and timestamps are compressed, and the stored bytes are still one standard zstd stream
(``zstd -d`` reads it). Incompressible values (numpy noise, images, compressed files) are stored as
is (``none``), so they are moved once and not slowed down.

How much a sample must shrink for compression to pay is the datastore's ``worth_compressing``:
compressing to a fraction ``r`` saves time only where ``1 - r`` of the bytes take longer to move
than compressing all of them takes. Over a network (object stores) that is nearly anything that
shrinks (0.85); a local disk takes bytes into its cache faster than zstd compresses what shrinks only
a few times, so there only what shrinks fifty-fold pays (0.02).

``zlib`` is still read, so artifacts written before zstd (recorded ``"codec": "zlib"``) stay
readable, as do single-frame zstd artifacts; ``none`` is stored as is.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, BinaryIO

import zstandard

from laminar._serialization import hashing, threads

SAMPLE = 256 * 1024  # bytes looked at before choosing a codec
READ_STEP = 16 * 1024 * 1024  # large reads are split so hashing overlaps reading
WORTH_IT = 0.85  # by default, compress only if a sample shrinks to this fraction or less
SMALL = 1024  # values smaller than this are stored uncompressed
CODECS = ("none", "zlib", "zstd")  # every codec this Laminar reads
WRITE_CODEC = "zstd"  # what compressible values are written with
ZSTD_LEVEL = 1
FRAME = 1 << 20  # zstd output is cut into independent frames of this many bytes, each decided alone
FRAME_SAMPLE = 16 * 1024  # bytes of a frame compressed to decide whether the whole frame is
_RAW_BLOCK = 128 * 1024  # the largest block a zstd frame may hold
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RAW_FRAME_HEADER = bytes([0xA0])  # single segment, a 4-byte content size, no checksum or dictionary


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; this Laminar reads {', '.join(CODECS)}")


def _decompressor(codec: str) -> Any:
    """A fresh zlib decompressor object for ``codec`` (``None`` for ``none`` and ``zstd``)."""
    _check_codec(codec)
    return zlib.decompressobj() if codec == "zlib" else None


_local = threading.local()


def _zstd() -> zstandard.ZstdCompressor:
    """This thread's zstd compressor, made once: making one costs as much as compressing a few KiB
    with it, and it gives the same bytes for the same input however often it was used before. Each
    use ends before the next begins (``compress``, ``_compress_frame``), so none interleave."""
    found: zstandard.ZstdCompressor | None = getattr(_local, "zstd", None)
    if found is None:
        found = _local.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return found


def _compressor(codec: str) -> Any:
    """A fresh compressor object (``compress``/``flush``) for ``codec``: the one place codecs encode."""
    if codec == "zstd":
        return _zstd().compressobj()
    if codec == "zlib":
        return zlib.compressobj(1)
    raise ValueError(f"cannot write codec {codec!r}")


def _raw_frame(view: memoryview) -> Iterator[Any]:
    """The parts of one zstd frame holding ``view`` as it is (raw blocks; RFC 8878, section 3.1.1)."""
    size = view.nbytes
    yield _ZSTD_MAGIC + _RAW_FRAME_HEADER + size.to_bytes(4, "little")
    for start in range(0, max(size, 1), _RAW_BLOCK):
        end = min(start + _RAW_BLOCK, size)
        yield ((end - start) << 3 | (end >= size)).to_bytes(3, "little")  # raw block; the last flagged
        yield view[start:end]


def _worth_compressing(view: memoryview, worth_it: float) -> bool:
    """Whether a sample of one frame shrinks to ``worth_it`` of its size with zstd."""
    sample = view[:FRAME_SAMPLE]
    return len(compress(sample, WRITE_CODEC)) <= worth_it * sample.nbytes


def _compress_frame(frame: Any) -> list[Any]:
    """One compressed zstd frame (on the pool, of a copy the caller no longer changes)."""
    return [_zstd().compress(frame)]


def _choose(sample: bytes, worth_it: float) -> str:
    """The codec for a value from its first bytes (at most ``SAMPLE`` of them are looked at).

    Where a piece of ``FRAME_SAMPLE`` bytes could alone overrun what the sample may shrink to (a
    small ``worth_it``: ``Local``'s fifty-fold), the sample is compressed a piece at a time, each
    ended as a zstd block, and given up on once what came out is already too much: a DataFrame
    whose first column shrinks only a few times is then decided from a fraction of the sample.
    """
    if len(sample) < SMALL:
        return "none"  # too small for compression to pay for its header and time
    looked = memoryview(sample)[:SAMPLE]
    allowed = worth_it * looked.nbytes
    if allowed >= FRAME_SAMPLE:  # no piece could overrun it alone: compressed whole, in one call
        return WRITE_CODEC if len(compress(looked, WRITE_CODEC)) <= allowed else "none"
    compressor = _compressor(WRITE_CODEC)
    produced = 0
    last = (looked.nbytes - 1) // FRAME_SAMPLE * FRAME_SAMPLE
    for start in range(0, last, FRAME_SAMPLE):
        produced += len(compressor.compress(looked[start : start + FRAME_SAMPLE]))
        produced += len(compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        if produced > allowed:
            return "none"
    produced += len(compressor.compress(looked[last:])) + len(compressor.flush())
    return WRITE_CODEC if produced <= allowed else "none"


def encode_whole(data: bytes, *, compress: bool = True, worth_it: float = WORTH_IT) -> tuple[str, bytes]:
    """The codec and stored bytes :class:`EncodingWriter` gives for all of a value, ``data``, of at
    most ``FRAME_SAMPLE`` bytes: the same decisions, without the stream (a small value's staging)."""
    if len(data) > FRAME_SAMPLE:
        raise ValueError(f"encode_whole takes at most {FRAME_SAMPLE} bytes, not {len(data)}")
    codec = _choose(data, worth_it) if compress else "none"
    if codec == "none":
        return codec, data
    return codec, b"".join(_compress_frame(data))


def _ready(encoded: Future[list[Any]] | list[Any]) -> bool:
    return not isinstance(encoded, Future) or encoded.done()


def compress(data: Any, codec: str) -> bytes:
    """``data`` compressed whole with ``codec`` (a sample, a small value)."""
    compressor = _compressor(codec)
    out: bytes = compressor.compress(data) + compressor.flush()
    return out


def starts_zstd(head: bytes) -> bool:
    """Whether stored bytes beginning with ``head`` begin as a zstd stream (its frame magic number)."""
    return head[:4] == _ZSTD_MAGIC


class DecodeError(ValueError):
    """Stored bytes do not decompress with their codec, or to more or fewer bytes than recorded."""


def decode(data: bytes, codec: str, size: int) -> bytes:
    """The stored bytes ``data`` decompressed with ``codec``, for values read whole.

    ``size`` is the recorded decompressed length: no more than that is ever produced, so a damaged
    or hostile blob cannot make decompression allocate more than the value it claims to be.
    """
    decompressor = _decompressor(codec)
    if codec == "zstd":
        try:  # bounded: a frame that would give more than ``size`` bytes is an error, not an allocation
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            out_zstd: bytes = reader.read(size + 1)  # one more than recorded is enough to tell
        except zstandard.ZstdError as error:
            raise DecodeError(f"its zstd stream is damaged or not {size} bytes long ({error})") from None
        if len(out_zstd) > size:
            raise DecodeError(f"it decompresses to more than the {size} bytes recorded")
        if len(out_zstd) < size:
            raise DecodeError(f"it decompresses to {len(out_zstd)} bytes, not the {size} recorded")
        return out_zstd
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

    The codec is decided after the first ``SAMPLE`` bytes (or at ``close``), each zstd frame's
    compression from a sample of it (see the module's docstring); ``worth_it`` is the fraction a
    sample must shrink to. ``codec``, ``hexdigest`` and ``stored_hexdigest`` are final after
    :meth:`finish`. When the bytes are stored as they are, ``stored_hexdigest`` is ``hexdigest``;
    stored bytes that differ are hashed as they leave, so a reader can check what it fetched before
    decompressing it.
    """

    def __init__(self, sink: BinaryIO, *, compress: bool = True, worth_it: float = WORTH_IT) -> None:
        super().__init__()
        self.sink = sink
        self.hash = hashing.new()
        self.size = 0
        self.codec: str | None = None if compress else "none"
        self.worth_it = worth_it
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._stored_hash: hashing.Hasher | None = None
        self._tail = bytearray()  # the start of the next frame, until it is whole
        self._flight: deque[Future[list[Any]] | list[Any]] = deque()  # encoded frames, in stream order

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        length = view.nbytes
        pending = self.hash.submit(view)  # the legacy hash runs on other threads while the bytes move
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

    def _decide(self, *, whole: bool = False) -> None:
        """Choose the codec from the sample; ``whole``: the sample is all of the value (``finish``).

        All of a value no larger than a frame's sample is then its one frame, and the frame's own
        sample would be the same bytes as the codec's: it is not compressed a third time to decide
        again, which for a small value costs more than the rest of its staging.
        """
        sample = b"".join(self._pending)
        self._pending = []
        self.codec = _choose(sample, self.worth_it)
        if self.codec != "none":
            self._stored_hash = hashing.new(pieces=True)  # compressed frames and raw blocks: small
            if whole and len(sample) <= FRAME_SAMPLE:
                self._store(_compress_frame(sample))  # what _frames would store (see ``encode_whole``)
                return
        self._emit(memoryview(sample))

    def _emit(self, view: memoryview) -> None:
        if self._stored_hash is None:
            self.sink.write(view)
            return
        if self._tail:  # complete the frame begun by earlier writes
            take = min(FRAME - len(self._tail), view.nbytes)
            self._tail += view[:take]
            view = view[take:]
            if len(self._tail) < FRAME:
                return
            self._frames([memoryview(self._tail)])
            self._tail = bytearray()
        whole = view.nbytes // FRAME * FRAME
        if whole:
            self._frames([view[start : start + FRAME] for start in range(0, whole, FRAME)])
        if view.nbytes > whole:
            self._tail += view[whole:]

    def _frames(self, frames: list[memoryview]) -> None:
        """Encode ``frames`` in stream order, compressing on the pool while later frames arrive.

        A whole frame worth compressing is copied (a fraction of compressing it) and compressed on
        the pool, so up to ``threads.width()`` frames compress at once, across writes too: a value
        written as many one-frame columns compresses on every core. A shorter one (a value's last,
        or all of a small value) is compressed here: handing it to the pool and back costs more
        than compressing it (docs/performance.md has the figures). A frame stored as it is goes
        straight to the sink from the caller's memory, unless frames before it are still
        compressing; then a copy waits its turn. Nothing refers to the caller's memory once
        ``write`` returns.
        """
        for frame in frames:
            if _worth_compressing(frame, self.worth_it):
                if frame.nbytes < FRAME:  # a value's last frame, or all of a small one: compressed
                    self._queue(_compress_frame(frame))  # here, as a hand-off to the pool costs more
                else:
                    self._queue(threads.pool().submit(_compress_frame, bytes(frame)))
            elif self._flight:
                self._queue(list(_raw_frame(memoryview(bytes(frame)))))
            else:
                self._store(list(_raw_frame(frame)))
            while self._flight and _ready(self._flight[0]):
                self._land()

    def _queue(self, encoded: Future[list[Any]] | list[Any]) -> None:
        if len(self._flight) >= threads.width():
            self._land()
        self._flight.append(encoded)

    def _land(self) -> None:
        """Store the oldest encoded frame, waiting for it if it is still compressing."""
        encoded = self._flight.popleft()
        self._store(encoded.result() if isinstance(encoded, Future) else encoded)

    def _store(self, parts: list[Any]) -> None:
        assert self._stored_hash is not None
        for part in parts:
            self._stored_hash.update(part)
            self.sink.write(part)

    def finish(self) -> None:
        """Flush everything into ``sink``; call once, after the last write."""
        if self.codec is None:
            self._decide(whole=True)
        if self._tail:
            self._frames([memoryview(self._tail)])
            self._tail = bytearray()
        while self._flight:
            self._land()

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
    raises :class:`DecodeError`. ``hash`` names the algorithm to hash what is returned with (see
    ``hashing``), ``None`` when the caller verified the stored bytes already.
    """

    def __init__(
        self, source: BinaryIO, codec: str, size: int, *, hash: str | None = hashing.WRITE_HASH
    ) -> None:
        super().__init__()
        self._decompressor = _decompressor(codec)
        self.codec = codec
        self.source = source
        self.size = size
        self.produced = 0
        self.hash: hashing.Hasher | None = hashing.new(hash) if hash is not None else None
        self._buffer = bytearray()
        self._tail = b""
        self._zstd: Any = None
        if codec == "zstd":  # decompresses straight into the caller's buffer, as ``none`` reads
            self._zstd = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=1 << 20, read_across_frames=True, closefd=False
            )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._zstd is not None:
            return self._readinto_zstd(view)
        if self._decompressor is None:
            count = 0
            pending = []
            while count < view.nbytes:  # fill completely: pickle treats a short read as the end
                got = self.source.readinto(view[count : count + READ_STEP])  # type: ignore[attr-defined]
                if not got:
                    break
                piece, count = view[count : count + got], count + got
                if self.hash is None:
                    continue
                if count < view.nbytes:
                    pending.append(self.hash.submit(piece))  # hashed on another thread while reading on
                else:  # the last piece is waited for at once: handing it to another thread only delays it
                    self.hash.update(piece)
            for waiting in pending:
                waiting.wait()
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

    def _readinto_zstd(self, view: memoryview) -> int:
        count = 0
        room = self.size - self.produced + 1  # one byte more than recorded is enough to tell
        view = view[: min(view.nbytes, room)]
        try:
            while count < view.nbytes:  # fill completely: pickle treats a short read as the end
                got = self._zstd.readinto(view[count:])
                if not got:
                    break
                count += got
        except zstandard.ZstdError as error:
            raise DecodeError(f"its zstd stream is damaged ({error})") from None
        if self.hash is not None:
            self.hash.update(view[:count])
        self.produced += count
        if self.produced > self.size or count < view.nbytes:  # more than recorded, or the end
            _check_length(self.produced, self.size, True, self.codec)
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
