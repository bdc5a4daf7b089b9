"""Content addresses, by the hash algorithm each artifact records.

New artifacts are addressed by BLAKE3 (``WRITE_HASH``, recorded as ``"hash": "blake3"``): a
cryptographic hash about four times SHA-256's speed on one core here, and tree-parallel across the
cores for large values on machines with more than two, so hashing costs a fraction of moving the
bytes. It is one incremental hasher, updated in order as the bytes pass (the GIL released for long
inputs).

Artifacts written before (no ``hash`` recorded: ``LEGACY_HASH``) are addressed by the chunked SHA-256
(SHA-256 over the SHA-256 digests of fixed 4 MiB chunks, hashed on a pool of threads) and are still
verified by it. Either way the address depends only on the bytes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future
from typing import Any, Protocol

import blake3

from laminar._serialization.threads import cores, pool

CHUNK = 4 * 1024 * 1024  # the legacy SHA-256's chunk; also the unit large streams are read in
WRITE_HASH = "blake3"  # what new artifacts are addressed by
LEGACY_HASH = "sha256"  # what an artifact without a recorded ``hash`` is addressed by
HASHES = (LEGACY_HASH, WRITE_HASH)  # every algorithm this Laminar verifies
THREADED = 1 << 20  # BLAKE3 inputs this large are hashed on the pool (see ``_threads``)


def check_hash(algorithm: str) -> None:
    if algorithm not in HASHES:
        raise ValueError(f"unknown hash {algorithm!r}; this Laminar verifies {', '.join(HASHES)}")


class Pending:
    """Digests being computed for one ``submit``; ``wait`` before the bytes may change."""

    def __init__(self, futures: list[Future[Any]]) -> None:
        self.futures = futures

    def wait(self) -> None:
        for future in self.futures:
            future.result()


_DONE = Pending([])


class Hasher(Protocol):
    """An incremental content address: feed bytes in order with ``submit`` (or ``update``)."""

    def submit(self, data: Any) -> Pending: ...

    def update(self, data: Any) -> None: ...

    def hexdigest(self) -> str: ...


#: Whether BLAKE3's own thread pool (rayon's, started on first threaded use) has run in this process,
#: and whether it did in the process this one was forked from: its threads were not forked, and a
#: threaded hash would wait for them forever, so a forked child hashes on its own thread.
_pool_started = [False, False]


#: BLAKE3 splits a large input across every core only on machines with more cores than this. With
#: two, the hashing already runs beside the reading or writing it follows (``submit``), on the other
#: core: splitting it across both as well made large reads and writes slower, the more so when the
#: layers' own threads were busy too (figures: docs/performance.md).
TREE_PARALLEL_ABOVE = 2


def _threads() -> int:
    if _pool_started[1] or cores() <= TREE_PARALLEL_ABOVE:
        return 1
    _pool_started[0] = True
    return blake3.blake3.AUTO


def _forked() -> None:
    _pool_started[1] = _pool_started[1] or _pool_started[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class Blake3Hash:
    """Incremental BLAKE3: what new artifacts are addressed by.

    A large ``submit`` is hashed on the shared pool while the caller moves the bytes (a write to the
    staging file, the next read), each after the one before it: hashing stays off the critical path.
    ``pieces``: the bytes come in pieces under ``THREADED`` (compressed frames), hashed on one core.
    BLAKE3's tree-parallel hashing splits even a small piece across threads, and while the other
    cores are busy compressing that hashed small pieces far slower than one core alone (figures:
    docs/performance.md).
    """

    def __init__(self, *, pieces: bool = False) -> None:
        self._hasher = blake3.blake3(max_threads=1 if pieces else _threads())
        self._last: Future[None] | None = None  # the latest update still running on the pool

    def submit(self, data: Any) -> Pending:
        view = memoryview(data)
        if view.nbytes < THREADED:
            self._settle()
            self._hasher.update(view)
            return _DONE
        self._last = pool().submit(self._update_after, self._last, view)
        return Pending([self._last])

    def _update_after(self, before: Future[None] | None, view: memoryview) -> None:
        if before is not None:
            before.result()
        self._hasher.update(view)

    def _settle(self) -> None:
        if self._last is not None:
            self._last.result()
            self._last = None

    def update(self, data: Any) -> None:
        """Hash ``data`` on this thread, after what was submitted before: a caller that waits at once
        gains nothing from a hand-off (BLAKE3 releases the GIL while it hashes a long input)."""
        self._settle()
        self._hasher.update(data)

    def hexdigest(self) -> str:
        self._settle()
        return self._hasher.hexdigest()


def _digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


class ChunkedHash:
    """Incremental chunked SHA-256 (``LEGACY_HASH``): whole chunks hash on other threads."""

    def __init__(self) -> None:
        self._digests: list[bytes | Future[bytes]] = []
        self._partial = hashlib.sha256()
        self._partial_size = 0

    def submit(self, data: Any) -> Pending:
        """Start hashing ``data``; whole chunks go to other threads. Call ``wait`` on the result."""
        view = memoryview(data).cast("B")
        futures: list[Future[Any]] = []
        if self._partial_size:
            take = min(CHUNK - self._partial_size, view.nbytes)
            self._partial.update(view[:take])
            self._partial_size += take
            view = view[take:]
            if self._partial_size == CHUNK:
                self._digests.append(self._partial.digest())
                self._partial, self._partial_size = hashlib.sha256(), 0
        while view.nbytes >= CHUNK:
            future = pool().submit(_digest, view[:CHUNK])
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


def new(algorithm: str = WRITE_HASH, *, pieces: bool = False) -> Hasher:
    """A fresh incremental hasher for ``algorithm``; ``pieces``: fed only small pieces (see Blake3Hash)."""
    if algorithm == WRITE_HASH:
        return Blake3Hash(pieces=pieces)
    check_hash(algorithm)
    return ChunkedHash()


def hexdigest(data: Any, algorithm: str = WRITE_HASH) -> str:
    """The content address of ``data`` (bytes-like) under ``algorithm``."""
    if algorithm == WRITE_HASH:
        if memoryview(data).nbytes < THREADED:  # the common small value: no thread pool at all
            return blake3.blake3(data).hexdigest()
        return blake3.blake3(data, max_threads=_threads()).hexdigest()
    check_hash(algorithm)
    if memoryview(data).nbytes <= CHUNK:  # one chunk: no thread hand-off for the common small value
        return hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()
    chunked = ChunkedHash()
    chunked.update(data)
    return chunked.hexdigest()


def hash_stream(source: Any, sink: Any = None, algorithm: str = WRITE_HASH) -> tuple[str, int]:
    """The content address and length of everything ``source`` (a binary stream) holds.

    Read in chunks; the legacy SHA-256 hashes them on other threads while the next is read, holding
    a few chunks at once. If ``sink`` is given, every byte is written to it too (a verified copy, for
    streams read only once).
    """
    hasher = new(algorithm)
    size = 0
    window: list[Pending] = []
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        window.append(hasher.submit(chunk))  # a pending future holds the chunk until it is hashed
        if sink is not None:
            sink.write(chunk)
        if len(window) > 1:
            window.pop(0).wait()
    for pending in window:
        pending.wait()
    return hasher.hexdigest(), size
