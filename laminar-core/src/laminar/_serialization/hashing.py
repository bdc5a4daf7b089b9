"""Content addresses: SHA-256 over the SHA-256 digests of fixed 4 MiB chunks.

Hashing a chunked stream lets large values be hashed on every core while their bytes move (hashlib
releases the GIL), so content addressing does not make a 512 MiB artifact slower than the disk.
Small values are one chunk and hash synchronously. The address depends only on the bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

CHUNK = 4 * 1024 * 1024
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(os.cpu_count() or 1, 2), thread_name_prefix="laminar-hash")
        return _pool


def _digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


class Pending:
    """Chunk digests being computed for one ``submit``; ``wait`` before the bytes may change."""

    def __init__(self, futures: list[Future[bytes]]) -> None:
        self.futures = futures

    def wait(self) -> None:
        for future in self.futures:
            future.result()


class ChunkedHash:
    """Incremental chunked SHA-256. Feed bytes in order with :meth:`submit` (or :meth:`update`)."""

    def __init__(self) -> None:
        self._digests: list[bytes | Future[bytes]] = []
        self._partial = hashlib.sha256()
        self._partial_size = 0

    def submit(self, data: Any) -> Pending:
        """Start hashing ``data``; whole chunks go to other threads. Call ``wait`` on the result."""
        view = memoryview(data).cast("B")
        futures: list[Future[bytes]] = []
        if self._partial_size:
            take = min(CHUNK - self._partial_size, view.nbytes)
            self._partial.update(view[:take])
            self._partial_size += take
            view = view[take:]
            if self._partial_size == CHUNK:
                self._digests.append(self._partial.digest())
                self._partial, self._partial_size = hashlib.sha256(), 0
        while view.nbytes >= CHUNK:
            future = _executor().submit(_digest, view[:CHUNK])
            self._digests.append(future)
            futures.append(future)
            view = view[CHUNK:]
        if view.nbytes:
            self._partial.update(view)
            self._partial_size += view.nbytes
        return Pending(futures)

    def update(self, data: Any) -> None:
        self.submit(data).wait()

    def hexdigest(self) -> str:
        digests = [d if isinstance(d, bytes) else d.result() for d in self._digests]
        if self._partial_size or not digests:
            digests.append(self._partial.digest())
        return hashlib.sha256(b"".join(digests)).hexdigest()


def hexdigest(data: Any) -> str:
    """The content address of ``data`` (bytes-like)."""
    if memoryview(data).nbytes <= CHUNK:  # one chunk: no thread hand-off for the common small value
        return hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()
    chunked = ChunkedHash()
    chunked.update(data)
    return chunked.hexdigest()


def hash_stream(source: Any, sink: Any = None) -> tuple[str, int]:
    """The content address and length of everything ``source`` (a binary stream) holds.

    Chunks hash on other threads while the next is read; at most a few chunks are held at once. If
    ``sink`` is given, every byte is written to it too (a verified copy, for streams read only once).
    """
    chunked = ChunkedHash()
    size = 0
    window: list[Pending] = []
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        window.append(chunked.submit(chunk))  # the future holds the chunk until it is hashed
        if sink is not None:
            sink.write(chunk)
        if len(window) > 1:
            window.pop(0).wait()
    for pending in window:
        pending.wait()
    return chunked.hexdigest(), size
