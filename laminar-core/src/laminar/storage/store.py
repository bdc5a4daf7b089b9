"""One execution's storage, in the order that keeps state truthful: artifacts, archives, records.

A split is finished when its split record exists; a layer when its record exists. Each is written
only after everything it points to, so a reader that sees a record can read all it names.
Archives and records never change once written, so this process caches what it reads of them.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from laminar.serialization.protocols import Protocol
from laminar.storage import artifacts, layout
from laminar.storage.datastore import Datastore
from laminar.storage.records import Archive, Artifact, ExecutionMetadata, Record, SplitRecord

_CACHE_SIZE = 500_000


class _Cache:
    """A bounded LRU of immutable metadata, one per datastore object."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            if len(self.items) > _CACHE_SIZE:
                self.items.popitem(last=False)


_caches: weakref.WeakKeyDictionary[Datastore, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_for(datastore: Datastore) -> _Cache:
    with _caches_lock:
        cache = _caches.get(datastore)
        if cache is None:
            cache = _caches[datastore] = _Cache()
        return cache


class ExecutionStore:
    """Reads and writes the records of one execution of one flow in one datastore."""

    def __init__(
        self, datastore: Datastore, flow: str, execution: str, defaults: dict[type, Protocol[Any]]
    ) -> None:
        self.datastore = datastore
        self.flow = flow
        self.execution = execution
        self.defaults = defaults
        self._cache = _cache_for(datastore)
        layout.execution(flow, execution)  # validates both names before anything is written

    # ---- execution ----------------------------------------------------------------------------
    def write_metadata(self, layers: Iterable[str]) -> None:
        metadata = ExecutionMetadata(self.flow, self.execution, time.time(), tuple(layers))
        self.datastore.write_bytes(layout.execution_metadata(self.flow, self.execution), metadata.dumps())

    def metadata_exists(self) -> bool:
        return self.datastore.exists(layout.execution_metadata(self.flow, self.execution))

    # ---- writing a split ----------------------------------------------------------------------
    def write_split(
        self,
        layer: str,
        index: int,
        values: Mapping[str, Any],
        shards: Mapping[str, list[Any]],
        *,
        caught: str | None = None,
        on_error: Any = None,
    ) -> SplitRecord:
        """Store a split's artifacts, then its archives, then its split record.

        Every value is serialized before anything is written; ``on_error(name, error)`` turns a
        serialization failure into the exception to raise (naming layer and attribute).
        """
        staged: list[artifacts.StagedArtifact] = []
        archives: dict[str, Archive] = {}
        try:
            for name, items, sharded in [(n, [v], False) for n, v in values.items()] + [
                (n, list(v), True) for n, v in shards.items()
            ]:
                layout.archive(self.flow, self.execution, layer, index, name)  # validate the name
                entries = []
                for item in items:
                    protocol = artifacts.protocol_for(self.datastore, item, self.defaults)
                    try:
                        entry = artifacts.stage(item, datastore=self.datastore, protocol=protocol)
                    except Exception as error:
                        if on_error is None:
                            raise
                        raise on_error(name, error) from error
                    staged.append(entry)
                    entries.append(entry.artifact)
                archives[name] = Archive(tuple(entries), sharded=sharded)
        except BaseException:
            for entry in staged:
                entry.discard()
            raise
        artifacts.commit(self.datastore, staged)
        self.datastore.write_many(
            {
                layout.archive(self.flow, self.execution, layer, index, name): archive.dumps()
                for name, archive in archives.items()
            }
        )
        record = SplitRecord(tuple(sorted(archives)), caught)
        self.datastore.write_bytes(
            layout.split_record(self.flow, self.execution, layer, index), record.dumps()
        )
        return record

    def write_record(self, layer: str, splits: int) -> None:
        record = Record(self.flow, layer, splits)
        self.datastore.write_bytes(layout.record(self.flow, self.execution, layer), record.dumps())

    # ---- reading ------------------------------------------------------------------------------
    def _cached(self, key: str, parse: Any) -> Any:
        value = self._cache.get(key)
        if value is None:
            value = parse(self.datastore.read_bytes(key))  # FileNotFoundError passes through
            self._cache.put(key, value)
        return value

    def record(self, layer: str) -> Record | None:
        try:
            result: Record = self._cached(layout.record(self.flow, self.execution, layer), Record.loads)
        except FileNotFoundError:
            return None
        return result

    def archive(self, layer: str, index: int, name: str) -> Archive | None:
        try:
            key = layout.archive(self.flow, self.execution, layer, index, name)
            result: Archive = self._cached(key, Archive.loads)
        except FileNotFoundError:
            return None
        return result

    def archives(self, layer: str, indices: range, name: str) -> list[Archive | None]:
        """The archives of ``name`` in these splits, reading the uncached ones in one batch."""
        keys = [layout.archive(self.flow, self.execution, layer, index, name) for index in indices]
        found: list[Archive | None] = [self._cache.get(key) for key in keys]
        unread = [key for key, archive in zip(keys, found, strict=True) if archive is None]
        if unread:

            def read(key: str) -> Archive | None:
                try:
                    return Archive.loads(self.datastore.read_bytes(key))
                except FileNotFoundError:
                    return None

            fetched = dict(zip(unread, self.datastore.map_parallel(read, unread), strict=True))
            for key, archive in fetched.items():
                if archive is not None:
                    self._cache.put(key, archive)
            found = [
                archive if archive is not None else fetched[key]
                for key, archive in zip(keys, found, strict=True)
            ]
        return found

    def split_record(self, layer: str, index: int) -> SplitRecord | None:
        try:
            key = layout.split_record(self.flow, self.execution, layer, index)
            result: SplitRecord = self._cached(key, SplitRecord.loads)
        except FileNotFoundError:
            return None
        return result

    def artifact_names(self, layer: str) -> list[str]:
        """Names any split of ``layer`` stored, from one listing."""
        return self.datastore.list_prefix(layout.archives(self.flow, self.execution, layer))

    def finished_splits(self, layer: str) -> set[int]:
        """Indices of the layer's finished splits, from one listing (not one call per split)."""
        prefix = layout.splits(self.flow, self.execution, layer)
        suffix = layout.ARCHIVE_SUFFIX
        return {
            int(name[: -len(suffix)]) for name in self.datastore.list_prefix(prefix) if name.endswith(suffix)
        }

    @functools.cached_property
    def _protocols_by_name(self) -> dict[str, Protocol[Any]]:
        """The protocols an artifact may name, looked up once per store rather than once per artifact."""
        return {p.name: p for p in (*self.datastore.protocols.values(), *self.defaults.values())}

    def load(self, artifact: Artifact) -> Any:
        return artifacts.load(self.datastore, artifact, protocols=self._protocols_by_name)

    def load_many(self, items: list[Artifact]) -> list[Any]:
        """Load several artifacts, in parallel where the datastore allows."""
        return self.datastore.map_parallel(self.load, items)
