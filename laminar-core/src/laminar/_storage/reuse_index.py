"""The reuse index: which execution finished a layer with a given key, shared through the datastore.

An entry (``layout.reuse_entry``) is a sealed JSON record naming the execution; it is written after
that layer's record, so it never names a layer that did not finish. Reading one decodes JSON only.
An entry is trusted for nothing: before a layer is reused its record and split batches are read
and checked (their checksums, their shape) and every value they point to outside them must exist,
so a forged or stale entry (its values collected) costs at worst a recomputation.

Reusing a layer copies its records (the split batches and the layer record) into the new
execution; the values they point to are the same, under ``artifacts/``, not copied.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from laminar._serialization.registry import Protocols
from laminar._storage import layout
from laminar._storage.records import Document, Malformed, Record, SplitBatch, SplitRecord, runs
from laminar._storage.schema import record, sorted_keys
from laminar._storage.store import ExecutionStore
from laminar._transport.datastore import Datastore
from laminar.errors import IntegrityError

logger = logging.getLogger("laminar")


@record
@dataclass(frozen=True)
class ReuseEntry(Document):
    """One entry of the reuse index: layer ``layer`` of ``execution`` finished with key ``key``.

    ``components`` are the key's parts by name (code, each function reached, packages, inputs,
    parameters, configuration), so a later run can say which one differs.
    """

    described: ClassVar[str] = "reuse index entry of layer {layer}"

    flow: str
    layer: str
    key: str
    execution: str
    created: float
    components: Mapping[str, str] = field(default_factory=dict, metadata=sorted_keys())


def publish(
    datastore: Datastore, flow: str, layer: str, key: str, execution: str, components: Mapping[str, str]
) -> None:
    """Record that ``layer`` of ``execution`` (its record already written) has ``key``.

    Two executions finishing the same key at once both write; either entry names finished records.
    """
    entry = ReuseEntry(flow, layer, key, execution, time.time(), dict(components))
    datastore.write_bytes(layout.reuse_entry(flow, layer, key), entry.dumps())


def entry(datastore: Datastore, flow: str, layer: str, key: str) -> ReuseEntry | None:
    """The entry for ``key``, or None if there is none or it is not one Laminar wrote for it."""
    try:
        found = ReuseEntry.loads(datastore.read_bytes(layout.reuse_entry(flow, layer, key)))
    except FileNotFoundError:
        return None
    except (Malformed, ValueError) as error:
        logger.warning("reuse index entry of layer %s of flow %s is ignored: %s", layer, flow, error)
        return None
    if (found.flow, found.layer, found.key) != (flow, layer, key):
        logger.warning("reuse index entry of layer %s of flow %s names another key: ignored", layer, flow)
        return None
    return found


def latest(datastore: Datastore, flow: str, layer: str) -> ReuseEntry | None:
    """The layer's most recent entry (for saying what changed since), or None."""
    best: ReuseEntry | None = None
    for name in datastore.list_prefix(layout.reuse_entries(flow, layer)):
        key = name.removesuffix(".json")
        found = entry(datastore, flow, layer, key) if name.endswith(".json") and len(key) == 64 else None
        if found is not None and (best is None or found.created > best.created):
            best = found
    return best


def usable(
    datastore: Datastore, protocols: Protocols, found: ReuseEntry, layer: str
) -> dict[str, SplitBatch] | None:
    """The split batches of the entry's layer if its records read back whole and every value they
    point to exists; else None (the layer runs)."""
    try:
        source = ExecutionStore(datastore, found.flow, found.execution, protocols)
        finished = source.record(layer)
        if finished is None:
            return None
        batches = source.finished_batches(layer)
    except (IntegrityError, ValueError) as error:
        logger.warning("layer %s is not reused from execution %s: %s", layer, found.execution, error)
        return None
    held = {i for batch in batches.values() for i in batch.splits}
    if held != set(range(finished.splits)):
        return None
    keys = sorted(
        {
            layout.artifact(artifact.hexdigest)
            for batch in batches.values()
            for split in batch.splits.values()
            for archive in split.archives.values()
            for artifact in archive.artifacts
            if artifact.inline is None
        }
    )
    if not all(datastore.exists_many(keys)):
        logger.warning(
            "layer %s is not reused from execution %s: values it points to were deleted",
            layer,
            found.execution,
        )
        return None
    return batches


def prefetch(store: ExecutionStore, layers: Iterable[str]) -> None:
    """Read the records and split batches of ``layers`` in ``store`` (an execution a run reuses
    from) at once, into the metadata cache, so that checking each layer before reusing it, one
    after another down a chain, costs no request of its own. What cannot be read is left to those
    checks, which read it again and say why.

    A layer of several batches reads them in parallel itself, from this thread: on the datastore's
    threads it would wait for threads its neighbours hold, waiting in turn."""
    layers = list(layers)

    def read_record(layer: str) -> Record | None:
        try:
            return store.record(layer)
        except (IntegrityError, ValueError):
            return None

    def read_batches(layer: str) -> None:
        with contextlib.suppress(IntegrityError, ValueError):
            store.finished_batches(layer)

    records = dict(zip(layers, store.datastore.map_parallel(read_record, layers), strict=True))
    store.datastore.map_parallel(
        read_batches, [n for n, r in records.items() if r is not None and len(r.batches) == 1]
    )
    for layer in [n for n, r in records.items() if r is not None and len(r.batches) > 1]:
        read_batches(layer)


def adopt(store: ExecutionStore, layer: str, batches: Mapping[str, SplitBatch]) -> None:
    """Write ``batches`` (another execution's finished layer) as ``layer``'s own, then its record.

    The splits are written as one batch: one request, however many batches the layer was first
    committed in (on an object store each is a round trip).
    """
    splits = {index: split for batch in batches.values() for index, split in batch.splits.items()}
    artifacts = {name for split in splits.values() for name in split.archives}
    written = {store.write_splits(layer, splits): runs(splits)} if splits else {}
    store.write_record(layer, len(splits), batches=written, artifacts=artifacts)


@record
@dataclass(frozen=True)
class SplitEntries(Document):
    """The reuse index of a foreach layer's splits: for the layer's key without its foreach axes
    (``base``), each split's key (the digests of the items it was given) -> ``"<execution>/<index>"``.

    One record per layer and base, so finding which splits of a run are unchanged costs one read.
    """

    described: ClassVar[str] = "reuse index of the splits of layer {layer}"

    flow: str
    layer: str
    base: str
    splits: Mapping[str, str] = field(default_factory=dict, metadata=sorted_keys())


def publish_splits(datastore: Datastore, flow: str, layer: str, base: str, splits: Mapping[str, str]) -> None:
    entries = SplitEntries(flow, layer, base, dict(splits))
    datastore.write_bytes(layout.reuse_splits(flow, layer, base), entries.dumps())


def split_entries(datastore: Datastore, flow: str, layer: str, base: str) -> Mapping[str, str]:
    """Split key -> ``"<execution>/<index>"`` for ``base``; empty if none or not one Laminar wrote."""
    try:
        found = SplitEntries.loads(datastore.read_bytes(layout.reuse_splits(flow, layer, base)))
    except FileNotFoundError:
        return {}
    except (Malformed, ValueError) as error:
        logger.warning("reuse index of the splits of layer %s of flow %s is ignored: %s", layer, flow, error)
        return {}
    if (found.flow, found.layer, found.base) != (flow, layer, base):
        return {}
    return found.splits


def usable_splits(
    datastore: Datastore, protocols: Protocols, flow: str, layer: str, wanted: Mapping[int, str]
) -> dict[int, SplitRecord]:
    """The records of the splits ``wanted`` names (index here -> ``"<execution>/<index>"``) that read
    back whole and whose values all exist; the others are left out (they run)."""
    by_execution: dict[str, list[tuple[int, int]]] = {}
    for index, where in wanted.items():
        execution, _, there = where.rpartition("/")
        if there.isdigit() and execution:
            by_execution.setdefault(execution, []).append((index, int(there)))
    found: dict[int, SplitRecord] = {}
    for execution, pairs in by_execution.items():
        try:
            source = ExecutionStore(datastore, flow, execution, protocols)
            if source.record(layer) is None:
                continue
            records = source.split_records(layer, [there for _, there in pairs])
        except (IntegrityError, ValueError) as error:
            logger.warning("splits of layer %s are not reused from execution %s: %s", layer, execution, error)
            continue
        for (index, _), split in zip(pairs, records, strict=True):
            if split is not None:
                found[index] = split
    keys = sorted(
        {
            layout.artifact(artifact.hexdigest)
            for split in found.values()
            for archive in split.archives.values()
            for artifact in archive.artifacts
            if artifact.inline is None
        }
    )
    present = dict(zip(keys, datastore.exists_many(keys), strict=True))
    return {
        index: split
        for index, split in found.items()
        if all(
            present[layout.artifact(a.hexdigest)]
            for archive in split.archives.values()
            for a in archive.artifacts
            if a.inline is None
        )
    }
