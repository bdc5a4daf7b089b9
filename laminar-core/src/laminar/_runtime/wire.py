"""Length-prefixed cloudpickle messages between the process executor and its workers."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import cloudpickle

HEADER = struct.Struct(">Q")


def encode(message: Any) -> bytes:
    payload: bytes = cloudpickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload)) + payload


def read_message(stream: BinaryIO) -> Any:
    """Read one message from a blocking stream; ``EOFError`` at a clean end."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return cloudpickle.loads(payload)
