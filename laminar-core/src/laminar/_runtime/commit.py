"""Group commit: the records of a layer's splits that finish close together are written as one batch.

Executors hand each split's record back to the scheduler instead of writing it (see
``SplitOutcome``). The log below buffers them and writes a batch at most ``INTERVAL`` seconds after
the first of it arrived, sooner when ``LIMIT`` records wait or the layer ends. A foreach of 100,000
trivial splits so costs a few hundred writes instead of 100,000, and on an object store a few
requests instead of one per split. A split's artifacts are stored before its record is handed back,
so a batch never names anything missing; if the scheduler dies, at most the last ``INTERVAL`` of
finished splits lose their records and run again on resume.

A layer whose splits took more than ``COMPACT_FROM`` batches is compacted when it ends: its records
are written once more as one batch, which alone its layer record names, so a reader (a rerun that
reuses it, a downstream layer) reads one object, not one per ``INTERVAL`` the layer ran. The batches
it supersedes stay until its record is written (a crash before leaves the layer as it was: resume
lists them), then are deleted; ``laminar gc`` deletes any a crash left. A layer of more than
``COMPACT_LIMIT`` archives is not compacted, so the records held for it stay bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from laminar._storage.records import CHUNK, Runs, SplitBatch, SplitRecord, runs
from laminar._storage.store import ExecutionStore
from laminar.errors import add_note

INTERVAL = 0.05  # seconds a finished split's record may wait for others
LIMIT = 4096  # records per batch, to keep each batch a modest read
COMPACT_FROM = 4  # batches a layer's splits may take before they are written again as one
#: Archives (the metadata cache's weight: a split's named values) a compacted batch may hold: the
#: records held to write it, and a fifth of the cache (``cache.CAPACITY``), which keeps it whole
COMPACT_LIMIT = 50_000

T = TypeVar("T")

logger = logging.getLogger(__name__)


async def write(store: ExecutionStore, call: Callable[[], T]) -> T:
    """Run the record write ``call``: on the event loop where small writes cost less than a thread
    hop (``Datastore.small_writes_inline``: a local file), else on a thread, off the loop."""
    if store.datastore.small_writes_inline:
        return call()
    return await asyncio.to_thread(call)


def holdable(split: SplitRecord) -> bool:
    """Whether a layer's record may hold ``split`` (``Record.held``): not if one of its archives has
    more than ``CHUNK`` artifacts (a large shard), whose batch is written in chunks
    (``SplitBatch.dumps``), never built whole as a record's JSON would be."""
    return all(len(archive.artifacts) <= CHUNK for archive in split.archives.values())


class SplitLog:
    """Buffers finished splits of one layer and writes them in batches from a background task.

    ``splits``: how many splits will be added, if known. A layer that runs one (most layers of a
    chain) has nothing to wait for: its batch is written when the log closes, with no background
    task, so a chain pays no task, timer or extra wake-ups of the event loop per layer.
    """

    def __init__(
        self,
        store: ExecutionStore,
        layer: str,
        *,
        fail: Callable[[BaseException], None],
        splits: int | None = None,
    ) -> None:
        self.store = store
        self.layer = layer
        self._fail = fail
        self.pending: dict[int, SplitRecord] = {}
        #: the batches written so far (name: runs of split indices), and the artifact names stored
        self.batches: dict[str, Runs] = {}
        self.artifacts: set[str] = set()
        #: the records of the batches written, kept to compact them (None past ``COMPACT_LIMIT``)
        self._written: list[tuple[dict[int, SplitRecord], bytes]] | None = []
        self._kept = 0
        #: the batches ``compact`` wrote again as one, which the layer's record no longer names
        self.superseded: list[str] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        one = splits is not None and splits <= 1
        self._writer = None if one else asyncio.ensure_future(self._write_batches())

    def add(self, index: int, record: SplitRecord) -> None:
        """Queue a finished split's record for the next batch."""
        self.pending[index] = record
        self.artifacts.update(record.archives)
        self._arrived.set()
        if len(self.pending) >= LIMIT:
            self._full.set()

    def take(self) -> dict[int, SplitRecord]:
        """The records queued and not written, taken out of the log: for a layer of one split, whose
        record holds it (``Record.held``) instead of a batch of its own. Only when no writer runs.

        None is taken if one holds an archive of more than ``CHUNK`` artifacts (a large shard): its
        batch is written in chunks (``SplitBatch.dumps``), never built whole as a record's JSON would
        be, so a shard of a million items stays in bounded memory; ``close`` writes it."""
        assert self._writer is None
        if not all(holdable(split) for split in self.pending.values()):
            return {}
        taken, self.pending = self.pending, {}
        return taken

    async def close(self) -> dict[str, Runs]:
        """Write what is queued and stop; returns every batch written, with its runs of split indices."""
        self._closing = True
        if self._writer is None:  # at most one split: write its batch now
            if self.pending:
                try:
                    await self._write_pending()
                except Exception as error:
                    self._failed(error)
            return self.batches
        self._arrived.set()
        self._full.set()
        await self._writer
        return self.batches

    async def _write_pending(self) -> None:
        """Write the records queued as one batch (taken here, on the loop, where ``add`` runs)."""
        batch, self.pending = self.pending, {}
        name, data = await write(self.store, functools.partial(self.store.store_splits, self.layer, batch))
        self.batches[name] = runs(batch)
        self._keep(batch, data)

    def _keep(self, batch: dict[int, SplitRecord], data: bytes) -> None:
        """Hold a written batch's records and bytes for ``compact``, up to ``COMPACT_LIMIT`` archives."""
        if self._written is None:
            return
        self._kept += sum(len(record.archives) or 1 for record in batch.values())
        if self._kept > COMPACT_LIMIT:
            self._written = None  # too many to hold: the layer keeps its batches
        else:
            self._written.append((batch, data))

    async def compact(self) -> dict[str, Runs]:
        """Once closed: write the splits of more than ``COMPACT_FROM`` batches again as one batch,
        and return the batches the layer's record names (that one, or those written if it was not
        written). The batches it supersedes are listed in ``superseded``, deleted once the record is
        written (``ExecutionStore.discard_batches``); until then resume reads them by listing."""
        if self._written is None or len(self.batches) <= COMPACT_FROM:
            return self.batches
        written, self._written = sorted(self._written, key=lambda kept: min(kept[0])), None
        merged: dict[int, SplitRecord] = {}
        for batch, _ in written:
            merged.update(batch)
        stored = [data for _, data in written]  # copied, not encoded again: off most of its cost
        try:
            name = await write(
                self.store, functools.partial(self.store.write_joined, self.layer, merged, stored)
            )
        except Exception as error:  # the batches written are whole: the record names them instead
            logger.warning("the split batches of layer %s are kept as written: %s", self.layer, error)
            return self.batches
        self.superseded = [other for other in self.batches if other != name]
        self.batches = {name: runs(merged)}
        return self.batches

    def _failed(self, error: Exception) -> None:
        """The datastore failed: stop the run; these splits run again on resume."""
        self.pending.clear()
        add_note(error, f"while writing the records of finished splits of layer {self.layer}")
        self._fail(error)

    async def _write_batches(self) -> None:
        try:
            while True:
                if not self._closing:
                    await self._arrived.wait()
                if not self._closing:  # let more splits finish, unless the batch fills or the layer ends
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._full.wait(), INTERVAL)
                self._arrived.clear()
                self._full.clear()
                if self.pending:
                    await self._write_pending()
                elif self._closing:
                    return
        except asyncio.CancelledError:  # the run is being torn down (Ctrl-C): keep what finished
            if self.pending:
                batch, self.pending = self.pending, {}
                name, data = self.store.store_splits(self.layer, batch)
                self.batches[name] = runs(batch)
                self._keep(batch, data)
            raise
        except Exception as error:
            self._failed(error)


def covering(batches: Mapping[str, SplitBatch]) -> tuple[dict[str, SplitBatch], list[str]]:
    """The batches a resume keeps, and those it drops: each whose splits larger ones hold all (the
    batches a compaction wrote again as one, left by a crash before the layer's record)."""
    kept: dict[str, SplitBatch] = {}
    dropped: list[str] = []
    held: set[int] = set()
    for name, batch in sorted(batches.items(), key=lambda item: -len(item[1].splits)):
        if held.issuperset(batch.splits):
            dropped.append(name)
        else:
            kept[name] = batch
            held.update(batch.splits)
    return kept, dropped
