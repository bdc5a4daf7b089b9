"""A split attempt's logs in the datastore: written in chunks as they come, capped, read back whole.

A :class:`LogWriter` holds at most ``CHUNK`` bytes before it writes them as the next chunk
(``logs/<index>/<attempt>/<n>.log``, see :mod:`laminar._storage.layout`), so a layer that prints
without end costs bounded memory; past its cap it keeps counting and stores one line saying how
much was left out. Chunks are plain UTF-8 text, readable by any tool. Nothing is written for an
attempt that printed nothing.
"""

from __future__ import annotations

import os
import re
import threading

from laminar._storage import layout
from laminar._transport.datastore import Datastore
from laminar.errors import ConfigurationError

CHUNK = 256 * 1024  # bytes held in memory before they are written
CAP = "LAMINAR_LOG_CAP"  # bytes kept per split attempt, e.g. 10M; 0 keeps none
DEFAULT_CAP = 16 * 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)


def cap_from_environment() -> int:
    """The per-attempt cap in bytes from ``LAMINAR_LOG_CAP`` (``16M`` by default)."""
    text = os.environ.get(CAP, "").strip()
    if not text:
        return DEFAULT_CAP
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"{CAP}={text!r} is not a size; write a number of bytes, optionally with K, M or G (e.g. 10M)"
        )
    unit = (match[2] or "b")[0].lower()
    return int(match[1]) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


class LogWriter:
    """Collects what one split attempt printed and logged, and stores it in chunks (thread-safe)."""

    def __init__(
        self, datastore: Datastore, flow: str, execution: str, layer: str, index: int, attempt: int, cap: int
    ) -> None:
        self._where = (flow, execution, layer, index, attempt)
        self.datastore = datastore
        self.cap = cap
        self.kept = 0  # bytes kept (written or held)
        self.dropped = 0  # bytes past the cap
        self._held: list[bytes] = []
        self._holding = 0
        self._chunks = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self._lock:
            room = self.cap - self.kept
            if len(data) > room:
                kept = data[: max(room, 0)]
                self.dropped += len(data) - len(kept)
                data = kept
            if not data:
                return
            self.kept += len(data)
            self._held.append(data)
            self._holding += len(data)
            if self._holding >= CHUNK:
                self._flush()

    def close(self) -> None:
        """Store what is held, and a last line saying how much the cap left out."""
        with self._lock:
            if self.dropped:
                self._held.append(
                    f"\n[laminar: {self.dropped} more bytes were not kept: the cap is {self.cap} bytes a split "
                    f"attempt; raise it with {CAP}]\n".encode()
                )
                self.dropped = 0
            self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        data, self._held, self._holding = b"".join(self._held), [], 0
        self.datastore.write_bytes(layout.log_chunk(*self._where, self._chunks), data)
        self._chunks += 1


def read_logs(datastore: Datastore, flow: str, execution: str, layer: str, index: int, attempt: int) -> str:
    """What the attempt printed and logged ("" if nothing), its chunks read in order."""
    prefix = layout.logs(flow, execution, layer, index, attempt)
    chunks = sorted(
        (number, prefix + name)
        for name in datastore.list_prefix(prefix)
        if (number := layout.parse_log_chunk(name)) is not None
    )
    return b"".join(datastore.read_many([key for _, key in chunks])).decode("utf-8", "replace")


def logged_attempts(datastore: Datastore, flow: str, execution: str, layer: str, index: int) -> list[int]:
    """The attempts of split ``index`` that stored logs, in order."""
    prefix = layout.logs(flow, execution, layer, index)
    return sorted(int(name) for name in datastore.list_prefix(prefix) if name.isdigit())


def logged_splits(datastore: Datastore, flow: str, execution: str, layer: str) -> list[int]:
    """The splits of ``layer`` that stored logs."""
    return sorted(
        int(name) for name in datastore.list_prefix(layout.logs(flow, execution, layer)) if name.isdigit()
    )
