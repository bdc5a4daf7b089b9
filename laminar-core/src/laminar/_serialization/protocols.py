"""Serialization protocols: how a value of one exact type becomes bytes and back.

Override ``dumps``/``loads`` for bytes, or ``dump``/``load`` to stream through a file. Override
``write``/``read`` to take over the stored form entirely (compression included), e.g. for values that
are already compressed. ``hexdigest`` may return a content address of its own; by default the hash of
the serialized bytes is used.

The earlier laminar's form is kept too: ``write(self, value, uri)`` and ``read(self, uri)`` (the
second parameter named ``uri``) are handed a path to write the value to, or read it from, with any
library that takes one (``df.to_parquet(uri)``); Laminar then hashes and stores that file.

A protocol may also read a large stored value in two phases (:meth:`Protocol.gather`): every byte
read into fresh buffers first, hashed as it arrives, and interpreted only once the hash verified. The
default pickle protocol does this for its out-of-band buffers, so an array is read once, into memory
that becomes the array's own.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import mmap
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, Generic, TypeVar

import cloudpickle

from laminar._serialization.unstorable import refusal, refused_types
from laminar.errors import UnstorableValue

T = TypeVar("T")


def dtype(kind: type) -> str:
    """The name the earlier laminar recorded for a type: ``"module.Name"``."""
    return f"{kind.__module__}.{kind.__name__}"


def takes_uri(protocol: Protocol[Any]) -> bool:
    """Whether ``protocol`` overrides ``write``/``read`` in the earlier form, taking a ``uri``."""
    kind = type(protocol)
    found = _TAKES_URI.get(kind)
    if found is None:
        found = _TAKES_URI[kind] = any(
            getattr(kind, name) is not getattr(Protocol, name)
            and list(inspect.signature(getattr(kind, name)).parameters)[position : position + 1] == ["uri"]
            for name, position in (("write", 2), ("read", 1))
        )
    return found


_TAKES_URI: dict[type, bool] = {}  # per protocol class, so signatures are inspected once


def write_to_path(protocol: Protocol[Any], value: Any, path: str) -> None:
    """Store ``value`` at the local ``path`` the way a URI-taking protocol wants it (see ``takes_uri``)."""
    if type(protocol).write is not Protocol.write:
        protocol.write(value, path)  # type: ignore[arg-type]  # the earlier form: write(value, uri)
    else:
        with open(path, "wb") as file:
            protocol.dump(value, file)


def read_from_path(protocol: Protocol[Any], path: str) -> Any:
    """Read a value a URI-taking protocol stored at the local ``path``."""
    if type(protocol).read is not Protocol.read:
        return protocol.read(path)  # type: ignore[arg-type]  # the earlier form: read(uri)
    with open(path, "rb") as file:
        return protocol.load(file)


def main_module_name() -> str | None:
    """The name under which another process imports the script running as ``__main__``, if any.

    ``python -m pkg.tool`` gives ``pkg.tool``; ``python tool.py`` gives ``tool`` (another program
    imports it as ``import tool``). An interactive session or ``python -c`` has none.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    path = getattr(main, "__file__", None)
    if not path:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem.isidentifier() else None


class Protocol(Generic[T]):
    """Base class for serialization protocols. Register with ``@datastore.protocol(type, ...)``."""

    #: Whether the stored bytes may be compressed by Laminar's codecs.
    compress: bool = True
    #: Whether reading runs no code that the stored bytes choose. Only protocols marked safe are read
    #: from a datastore opened untrusted (``trust="none"``); pickle-based ones must never be.
    safe: bool = False

    @property
    def name(self) -> str:
        """Recorded with each artifact so readers pick the same protocol.

        A protocol class defined in the script being run (module ``__main__``) is recorded under the
        name other processes import that script by (see :func:`main_module_name`), fixed when it is
        registered, so worker processes and later readers resolve the same name.
        """
        kind = type(self)
        module = getattr(self, "__dict__", {}).get("_laminar_module") or kind.__module__
        return f"{module}.{kind.__qualname__}"

    def record_main_module(self) -> None:
        """Fix the module name recorded for a protocol class defined in ``__main__`` (see ``name``)."""
        if type(self).__module__ == "__main__" and "_laminar_module" not in getattr(self, "__dict__", {}):
            found = main_module_name()
            if found is not None:
                self.__dict__["_laminar_module"] = found

    def dumps(self, value: T) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} must override dumps() or dump()")

    def loads(self, data: bytes) -> T:
        raise NotImplementedError(f"{type(self).__name__} must override loads() or load()")

    def dump(self, value: T, file: BinaryIO) -> None:
        file.write(self.dumps(value))

    def load(self, file: BinaryIO) -> T:
        return self.loads(file.read())

    def write(self, value: T, file: BinaryIO) -> None:
        """Write the serialized form of ``value``; Laminar hashes and (maybe) compresses ``file``."""
        self.dump(value, file)

    def read(self, file: BinaryIO) -> T:
        """Read a value back from the (already decompressed) ``file``."""
        return self.load(file)

    def hexdigest(self, value: T) -> str | None:
        """A content address for ``value``, or ``None`` to use the SHA-256 of its serialized bytes."""
        return None

    def gather(self, file: BinaryIO, size: int) -> Callable[[], T] | None:
        """Optional: read a large stored value in two phases, for reading it only once.

        Read all ``size`` (decompressed) bytes of ``file`` now, into buffers of your own and without
        interpreting them, and return a function that builds the value from those buffers. Laminar
        hashes the bytes as they are read and calls the function only if they verified, so a value
        is read in one pass instead of a verifying pass and a reading pass. Return ``None`` (having
        consumed nothing, e.g. after ``file.peek``) to be read by :meth:`read` as usual. Raise
        :class:`~laminar._serialization.codecs.DecodeError`-like ``ValueError`` for bytes that are
        not in your format; never allocate more than ``size`` bytes for them.
        """
        return None


#: Its public name, as the earlier laminar recorded it: ``serde.dtype(serde.Protocol)`` is
#: ``"laminar.configurations.serde.Protocol"``. (Only the base class: a protocol's recorded ``name``
#: is its own class's, so no stored name changes.)
Protocol.__module__ = "laminar.configurations.serde"


class GatherError(ValueError):
    """Stored bytes do not have the layout a protocol's :meth:`Protocol.gather` reads."""


#: Buffers at least this large are allocated as fresh anonymous memory maps: their pages are first
#: touched by the read that fills them (a ``bytearray`` would be zero-filled first).
FRESH_MAP = 1 << 20
#: The huge page size a fresh map asks for (x86-64 and most arm64 Linux): a map of whole huge pages
#: is filled with one page fault each instead of 512, the larger part of reading a value back from a
#: local disk's cache here (figures: docs/performance.md).
HUGE_PAGE = 2 << 20
#: Where buffers carved from one map start: numpy and Arrow read aligned memory fastest.
ALIGN = 64


def fresh_buffer(size: int) -> Any:
    """A new writable buffer of ``size`` bytes that no other object shares.

    A large one is a private anonymous map that asks for huge pages where the system has them (as
    numpy does for large arrays): filling it then costs a fraction of the page faults. Private, not
    ``mmap``'s default shared map: shared anonymous memory is shmem, which Linux does not back with
    huge pages by default, so a large read into it takes much longer. Nor memory from the process's
    allocator (numpy's ``empty``, not zeroed, reused where it was freed): in a run its large blocks
    are given back to the system and faulted in again, 4 KiB at a time, so reading a run's values
    into it took longer, with more page faults (figures: docs/performance.md).
    """
    if size < FRESH_MAP:
        return bytearray(size)
    return _fresh_map(size)


def _fresh_map(size: int) -> mmap.mmap:
    if hasattr(mmap, "MAP_PRIVATE"):  # POSIX; Windows maps take no flags
        buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        buffer = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


class _Arena:
    """One fresh map of whole huge pages for all the large buffers of one stored value, handed out in
    order (``take``): a frame of 1 MB columns fills 2 MiB pages, where a map of its own for each
    column is too small for even one. Used only where rounding up to whole pages wastes at most an
    eighth (``for_value``). The buffers share the map: it is freed when the last of them is."""

    def __init__(self, size: int) -> None:
        self.memory = memoryview(_fresh_map(size))
        self.offset = 0

    @classmethod
    def for_value(cls, size: int | None) -> _Arena | None:
        if size is None or size < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
            return None
        whole = -(-size // HUGE_PAGE) * HUGE_PAGE
        return cls(whole) if (whole - size) * 8 <= size else None

    def take(self, length: int) -> Any:
        """``length`` bytes of the map, aligned; a buffer of their own once the map is used up."""
        start = -(-self.offset // ALIGN) * ALIGN
        if start + length > self.memory.nbytes:
            return fresh_buffer(length)
        self.offset = start + length
        return self.memory[start : self.offset]


def peek(file: BinaryIO, count: int) -> bytes:
    """The first ``count`` bytes ``file`` would give, without consuming them (fewer at its end)."""
    if hasattr(file, "peek"):
        head: bytes = file.peek(count)[:count]
        if len(head) >= count or not file.seekable():
            return head  # fewer: the stream ended (a fresh buffered reader's peek fills its buffer)
    if file.seekable():
        position = file.tell()
        head = file.read(count)
        file.seek(position)
        return head
    raise TypeError(f"cannot look ahead in {type(file).__name__}: it has no peek() and is not seekable")


def read_exactly(file: BinaryIO, buffer: Any) -> None:
    """Fill ``buffer`` from ``file``; :class:`GatherError` if the stream ends first."""
    view = memoryview(buffer).cast("B")
    filled = 0
    while filled < view.nbytes:
        got = file.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            raise GatherError(f"the stream ends after {filled} of the {view.nbytes} bytes expected")
        filled += got


#: The first bytes of a pickle stored with out-of-band buffers (a plain pickle starts with ``\x80``).
FRAMED = b"LMNRPB5\n"
#: Buffers smaller than this stay inside the pickle (a segment of their own would cost more).
OUT_OF_BAND = 64 * 1024
#: Pickle bytes held back waiting for a large buffer; past this, the value is stored as a plain
#: pickle (streamed, large buffers in band) rather than hold more of it in memory.
HELD = 1 << 20
_PICKLE, _BUFFER, _END = b"p", b"b", b"e"
_HEADER = 9  # one kind byte, then the segment's length as 8 bytes little-endian


class _Framer:
    """The file a pickler writes to, and its ``buffer_callback``: the stored form of ``Pickle``.

    A value with no large buffer (``OUT_OF_BAND``) in its first ``HELD`` bytes of pickle is stored
    as its plain pickle, the same bytes as ``cloudpickle.dumps`` (streamed: a large buffer after that
    is written in band, still from its own memory). Otherwise the stored bytes are ``FRAMED`` followed by segments, each a
    kind byte (``p`` pickle bytes, ``b`` one out-of-band buffer, ``e`` the end) and an 8-byte length:
    each buffer is written from the value's own memory, in the order the pickle refers to it, and
    before the pickle bytes that refer to it.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.framed = False
        self.plain = False  # decided: a plain pickle, streamed through as the pickler writes it
        self.held: list[bytes] = []
        self.held_size = 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.framed:
            if size:
                self._segment(_PICKLE, data, size)
        elif self.plain:
            self.file.write(data)
        else:
            self.held.append(bytes(data))
            self.held_size += size
            if self.held_size > HELD:  # much pickle and no large buffer yet: a plain pickle, streamed
                self.plain = True
                self.file.write(b"".join(self.held))
                self.held = []
        return size

    def buffer(self, buffer: pickle.PickleBuffer) -> bool:
        """``buffer_callback``: large contiguous buffers go out of band (``False``), others stay in."""
        if self.plain:
            return True  # the pickler writes it in band, still from the value's own memory
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: the pickle copies it in band
            return True
        if raw.nbytes < OUT_OF_BAND:
            return True
        if not self.framed:
            self._start()
        self._segment(_BUFFER, raw, raw.nbytes)
        return False

    def _start(self) -> None:
        self.framed = True
        self.file.write(FRAMED)
        held, self.held = b"".join(self.held), []
        if held:
            self._segment(_PICKLE, held, len(held))

    def _segment(self, kind: bytes, data: Any, size: int) -> None:
        self.file.write(kind + size.to_bytes(8, "little"))
        self.file.write(data)

    def finish(self) -> None:
        if self.framed:
            self.file.write(_END + bytes(8))
        elif self.held:
            self.file.write(b"".join(self.held))


def _gather_framed(file: BinaryIO, size: int | None) -> Callable[[], Any]:
    """Read a framed pickle (see :class:`_Framer`) into its pickle bytes and fresh buffers; at most
    ``size`` bytes in all, and exactly that many if ``size`` is given."""
    remaining = (sys.maxsize if size is None else size) - len(FRAMED)
    read_exactly(file, bytearray(len(FRAMED)))
    pieces: list[bytearray] = []  # the pickle's bytes, a segment each (joined only if several)
    buffers: list[Any] = []
    arena = _Arena.for_value(size)
    header = bytearray(_HEADER)
    while True:
        read_exactly(file, header)
        remaining -= _HEADER
        kind, length = bytes(header[:1]), int.from_bytes(header[1:], "little")
        if kind == _END:
            break
        if kind not in (_PICKLE, _BUFFER) or length > remaining:
            raise GatherError(f"it has a segment of kind {kind!r} and {length} bytes where none can be")
        remaining -= length
        if kind == _PICKLE:
            pieces.append(bytearray(length))  # pickle bytes are small beside the buffers; held whole
            read_exactly(file, pieces[-1])
        else:
            buffer = fresh_buffer(length) if arena is None else arena.take(length)
            read_exactly(file, buffer)
            buffers.append(buffer)
    if size is not None and remaining:
        raise GatherError(f"{remaining} bytes follow the end of its last segment")

    pickled = pieces[0] if len(pieces) == 1 else b"".join(pieces)  # none: as damaged as before

    def build() -> Any:
        return pickle.loads(pickled, buffers=buffers)

    return build


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, refusing what cannot come back (:mod:`.unstorable`) instead of storing
    something else in its place (an open file as a ``StringIO``). Called for nearly every object
    pickled, so the common case is one ``isinstance`` against the refused types."""

    def __init__(self, file: Any, value: Any, **options: Any) -> None:
        super().__init__(file, **options)
        self._value = value
        self._refused = refused_types()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self._refused):
            refused = refusal(obj, whole=obj is self._value)
            if refused is not None:
                raise UnstorableValue(refused)
        return _reducer_override(self, obj)


_reducer_override = cloudpickle.Pickler.reducer_override


#: The types the standard library's pickler writes itself, never asking ``reducer_override`` about
#: them (a ``PickleBuffer`` goes to ``buffer_callback``): what a value built of these alone pickles
#: to is the same through cloudpickle's pickler and through the standard one.
_PLAIN = frozenset({dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool, type(None)})
#: The largest pickle made by :func:`plain_pickle`: the C pickler holds one frame of this size
#: before its first write, so a larger value is known to be larger before it is all pickled.
PLAIN_LIMIT = 64 * 1024


class _NotPlain(Exception):
    """The value is not plain (see :func:`plain_pickle`), or its pickle is larger than ``PLAIN_LIMIT``."""


class _PlainPickler(pickle.Pickler):
    """The standard library's pickler, giving up at the first object it does not write itself."""

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


def _no_buffers(buffer: pickle.PickleBuffer) -> bool:
    """cloudpickle's path stores a buffer of ``OUT_OF_BAND`` bytes or more out of band (``_Framer``).
    Such a pickle is past ``PLAIN_LIMIT`` anyway; this keeps that so whatever the two limits."""
    raise _NotPlain


class _PlainSink:
    """Takes the C pickler's one write of a pickle of at most ``PLAIN_LIMIT`` bytes (it writes a
    pickle that large in one go, at its end); a second write, or a larger one, gives up."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None

    def write(self, data: Any) -> int:
        size = len(data)  # bytes, or a memoryview of bytes
        if self.data is not None or size > PLAIN_LIMIT:
            raise _NotPlain
        self.data = bytes(data)
        return size


#: .pickler: this thread's plain pickler and its sink, kept between values (setting one up costs a
#: third of pickling a small dict); taken out while in use, so a nested use makes its own.
_plain_local = threading.local()


def plain_pickle(value: Any) -> bytes | None:
    """The bytes :class:`Pickle` stores for ``value``, made without cloudpickle, if ``value`` is built
    only of the types the standard library's pickler writes itself (dicts, lists, tuples, sets,
    strings, bytes, numbers, ``None``) and pickles to at most ``PLAIN_LIMIT`` bytes; else None.

    Such a value pickles to the same bytes either way (the same C code writes every object of it),
    and :class:`_Framer` writes a pickle of no large buffer as it is. Setting up cloudpickle's
    pickler costs more than pickling a small dict. Any other value, and any error, is left to the
    full pickler (which raises the error again): this gives up at the first object it would hand to
    ``reducer_override``, having pickled at most one frame (``PLAIN_LIMIT``) before that. No code
    of the value's runs meanwhile: every object it pickles is of a built-in type.
    """
    kind = type(value)
    if kind not in _PLAIN or (kind in (str, bytes, bytearray) and len(value) > PLAIN_LIMIT):
        return None
    kept: tuple[_PlainPickler, _PlainSink] | None = getattr(_plain_local, "pickler", None)
    if kept is None:
        sink = _PlainSink()
        kept = (_PlainPickler(sink, protocol=5, buffer_callback=_no_buffers), sink)
    _plain_local.pickler = None
    pickler, sink = kept
    sink.data = None
    try:
        pickler.dump(value)
    except Exception:
        return None
    finally:
        pickler.clear_memo()  # holds no reference to the value, and pickles the next one afresh
        _plain_local.pickler = kept
    return sink.data


class Pickle(Protocol[Any]):
    """The default: cloudpickle with pickle protocol 5 and out-of-band buffers.

    A large buffer (a numpy array's memory, a pandas block, an Arrow buffer) is written from the
    value's own memory, not copied into the pickle, and read back into a fresh buffer that becomes
    the new value's own memory (see :class:`_Framer`). Values without one are plain pickles.

    Unpickling runs whatever code the stored bytes name: never read it from a store you do not trust.
    """

    @property
    def name(self) -> str:
        return "cloudpickle"

    def dumps(self, value: Any) -> bytes:
        plain = plain_pickle(value)
        if plain is not None:
            return plain
        file = io.BytesIO()
        self.dump_framed(value, file)
        return file.getvalue()

    def loads(self, data: bytes) -> Any:
        if bytes(data[: len(FRAMED)]) == FRAMED:
            return self.load(io.BytesIO(data))
        return cloudpickle.loads(data)

    def dump(self, value: Any, file: BinaryIO) -> None:
        plain = plain_pickle(value)
        if plain is not None:
            file.write(plain)  # as ``_Framer`` writes a pickle of no large buffer: whole, at its end
            return
        self.dump_framed(value, file)

    def dump_framed(self, value: Any, file: BinaryIO) -> None:
        """``dump`` through cloudpickle's pickler, for a value ``plain_pickle`` did not make."""
        framer = _Framer(file)
        _Pickler(framer, value, protocol=5, buffer_callback=framer.buffer).dump(value)
        framer.finish()

    def load(self, file: BinaryIO) -> Any:
        if not hasattr(file, "peek") and not file.seekable():
            file = io.BufferedReader(file)  # type: ignore[type-var]
        if peek(file, len(FRAMED)) != FRAMED:
            return cloudpickle.load(file)
        return _gather_framed(file, None)()

    def gather(self, file: BinaryIO, size: int) -> Callable[[], Any] | None:
        if peek(file, len(FRAMED)) != FRAMED:
            return None  # a plain pickle: unpickled as it streams, by ``read``
        return _gather_framed(file, size)
