"""Protocols that run no code when they read: JSON for plain data, raw bytes and str, numpy ``.npy``.

They are what a datastore opened untrusted (``trust="none"``, ``LAMINAR_TRUST=none``) can still
read, and their stored bytes are ordinary files other tools read: ``json.loads``, ``bytes.decode``,
``numpy.load(..., allow_pickle=False)``; so Laminar does not compress them. Each refuses, when writing, a value it could not give back
exactly, so reading never returns something other than what was stored. numpy is imported only when
an array is written or read.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from laminar._serialization.protocols import GatherError, Protocol, fresh_buffer, read_exactly

if TYPE_CHECKING:
    from laminar._serialization.registry import ProtocolRegistry

#: JSON parsers refuse integers of more digits than Python's default limit (4,300); stay below it.
_INT_BITS = 13_000


class Json(Protocol[Any]):
    """Plain data as UTF-8 JSON: dict (str keys), list, str, int, float, bool, None, nested.

    A tuple, a set, a dict with a non-str key, a NaN or infinite float, or a subclass of any of these
    types (an ``IntEnum``, a ``defaultdict``) is refused when written: JSON would read back something else.
    """

    safe = True
    compress = False

    @property
    def name(self) -> str:
        return "laminar.json"

    def dumps(self, value: Any) -> bytes:
        _check_plain(value, "value")
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise TypeError(f"laminar.json cannot store a str that UTF-8 cannot hold: {error}") from None

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` JSON cannot round-trip exactly."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if item.bit_length() > _INT_BITS:
                raise TypeError(f"laminar.json cannot store {path}: an integer this large")
        elif kind is float:
            if not math.isfinite(item):
                raise TypeError(f"laminar.json cannot store {path}: {item!r} is not a JSON number")
        elif kind is list:
            stack.extend((element, f"{path}[{index}]") for index, element in enumerate(item))
        elif kind is dict:
            for key, element in item.items():
                if type(key) is not str:
                    raise TypeError(
                        f"laminar.json cannot store {path}: key {key!r} is a {type(key).__name__}, "
                        "and JSON keys read back as str"
                    )
                stack.append((element, f"{path}[{key!r}]"))
        else:
            raise TypeError(
                f"laminar.json cannot store {path}: a {kind.__name__} would not read back as one "
                "(it stores dict, list, str, int, float, bool and None exactly)"
            )


class Bytes(Protocol[bytes]):
    """``bytes`` stored as they are."""

    safe = True
    compress = False

    @property
    def name(self) -> str:
        return "laminar.bytes"

    def dumps(self, value: bytes) -> bytes:
        if type(value) is not bytes:
            raise TypeError(f"laminar.bytes stores bytes, not {type(value).__name__}")
        return value

    def loads(self, data: bytes) -> bytes:
        return bytes(data)


class Text(Protocol[str]):
    """``str`` stored as UTF-8 (a string with lone surrogates, which UTF-8 cannot hold, is refused)."""

    safe = True
    compress = False

    @property
    def name(self) -> str:
        return "laminar.str"

    def dumps(self, value: str) -> bytes:
        if type(value) is not str:
            raise TypeError(f"laminar.str stores str, not {type(value).__name__}")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise TypeError(f"laminar.str cannot store this str: {error}") from None

    def loads(self, data: bytes) -> str:
        return data.decode("utf-8")


class Npy(Protocol[Any]):
    """A numpy array in the ``.npy`` format, written and read with ``allow_pickle=False``.

    A contiguous array is written from its own memory (the header, then its bytes: what ``np.save``
    writes); a large one is read back in one pass into a fresh buffer that becomes the new array's
    memory (:meth:`gather`). Arrays holding Python objects are refused: only a pickle can store them.
    """

    safe = True
    compress = False

    @property
    def name(self) -> str:
        return "laminar.npy"

    def dump(self, value: Any, file: BinaryIO) -> None:
        import numpy

        if type(value) is not numpy.ndarray:
            raise TypeError(f"laminar.npy stores numpy.ndarray, not {type(value).__name__}")
        if value.dtype.hasobject:
            raise TypeError(
                f"laminar.npy cannot store an array of dtype {value.dtype}: it holds Python objects, "
                "which only a pickle can store"
            )
        fmt = numpy.lib.format
        if not (value.flags.c_contiguous or value.flags.f_contiguous):
            fmt.write_array(file, value, allow_pickle=False)  # copies in chunks, as numpy does
            return
        header = io.BytesIO()
        try:
            fmt.write_array_header_1_0(header, fmt.header_data_from_array_1_0(value))
        except ValueError:  # a header too long for format 1.0
            header = io.BytesIO()
            fmt.write_array_header_2_0(header, fmt.header_data_from_array_1_0(value))
        file.write(header.getbuffer())
        data = value if value.flags.c_contiguous else value.T  # Fortran order: the transpose is C
        if data.size:
            flat: Any = data.reshape(-1).view(numpy.uint8)  # bytes of any dtype, datetime64 too
            file.write(memoryview(flat))

    def load(self, file: BinaryIO) -> Any:
        import numpy

        return numpy.lib.format.read_array(file, allow_pickle=False)

    def gather(self, file: BinaryIO, size: int) -> Callable[[], Any] | None:
        head = bytearray(8)
        read_exactly(file, head)
        if bytes(head[:6]) != b"\x93NUMPY" or head[6] not in (1, 2, 3):
            raise GatherError("it does not start as a .npy file does")
        width = 2 if head[6] == 1 else 4
        length = bytearray(width)
        read_exactly(file, length)
        header = bytearray(int.from_bytes(length, "little"))
        if len(head) + width + len(header) > size:
            raise GatherError(f"its header claims more than the {size} bytes recorded")
        read_exactly(file, header)
        data = fresh_buffer(size - len(head) - width - len(header))
        read_exactly(file, data)
        start = bytes(head + length + header)
        return lambda: _npy_from(start, data)

    def dumps(self, value: Any) -> bytes:
        buffer = io.BytesIO()
        self.dump(value, buffer)
        return buffer.getvalue()

    def loads(self, data: bytes) -> Any:
        return self.load(io.BytesIO(data))


def _npy_from(start: bytes, data: Any) -> Any:
    """The array a verified ``.npy`` header (``start``) describes, over ``data`` (not copied)."""
    import numpy

    fmt = numpy.lib.format
    file = io.BytesIO(start)
    version = fmt.read_magic(file)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(file)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(file)
    else:  # format 3.0 (UTF-8 field names): rare enough to read the ordinary way, with a copy
        return fmt.read_array(io.BytesIO(start + bytes(data)), allow_pickle=False)
    if dtype.hasobject:
        raise ValueError(f"its dtype {dtype} holds Python objects, which laminar.npy never stores")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        raise ValueError(f"its header says {count} items of {dtype.itemsize} bytes, not {len(data)} bytes")
    flat = numpy.frombuffer(data, dtype=dtype, count=count) if count else numpy.empty(0, dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


#: The safe protocols, by the name recorded with their artifacts: always readable, registered or not.
BUILTIN: dict[str, Protocol[Any]] = {p.name: p for p in (Json(), Bytes(), Text(), Npy())}

#: The exact types each safe protocol is registered for by :func:`register`.
JSON_TYPES: tuple[type, ...] = (dict, list, int, float, bool, type(None))


def register(registry: ProtocolRegistry, *, numpy: bool = True) -> ProtocolRegistry:
    """Register the safe protocols in ``registry``: JSON for plain data, bytes, str, and numpy arrays
    (``numpy=True`` and numpy importable). Values of other types still fall back to cloudpickle."""
    types: Iterable[tuple[tuple[type, ...], str]] = [
        (JSON_TYPES, "laminar.json"),
        ((bytes,), "laminar.bytes"),
        ((str,), "laminar.str"),
    ]
    for kinds, name in types:
        registry.add(kinds, BUILTIN[name])
    if numpy:
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            registry.add([np.ndarray], BUILTIN["laminar.npy"])
    return registry
