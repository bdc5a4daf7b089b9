"""``memory://`` — a dict in this process. Fast for tests; only the Thread executor can reach it."""

from __future__ import annotations

import threading
from typing import Any

from laminar._transport.datastore import Datastore


class Memory(Datastore):
    """Keeps every key in a dict owned by this object. Nothing survives the process."""

    schemes = ("memory",)
    cheap_exists = True
    small_writes_inline = True
    atomic_create = True
    shared = False
    max_workers = 1
    worth_compressing = 0.3  # everything it holds is this process's memory: space costs more than on a disk

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Memory:
        return cls()

    @property
    def url(self) -> str:
        return "memory://"

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._data[key]
        except KeyError:
            raise FileNotFoundError(key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(data)

    def create(self, key: str, data: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = bytes(data)
            return True

    def exists(self, key: str) -> bool:
        return key in self._data

    def list_prefix(self, prefix: str) -> list[str]:
        with self._lock:
            keys = list(self._data)
        names = {key[len(prefix) :].split("/", 1)[0] for key in keys if key.startswith(prefix)}
        return sorted(name for name in names if name)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "the Memory datastore lives in one process and cannot be sent to another; "
            "use executors.Thread() with it, or a Local or cloud datastore"
        )
