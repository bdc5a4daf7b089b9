"""The reuse index: which execution finished a layer with a given key, shared through the datastore.

An entry (``layout.reuse_entry``) is a sealed JSON record naming the execution; it is written after
that layer's record, so it never names a layer that did not finish. Reading one decodes JSON only.
An entry is trusted for nothing: before a layer is reused its record must carry the key wanted
(``Record.key``, or for one split ``Record.base``: the execution itself says which code, inputs and
configuration computed it), its record and split batches are read and checked (their checksums,
their shape) and every value they point to outside them must exist, so a forged or stale entry
(naming other code's values, or values collected) costs at worst a recomputation.

Reusing a layer writes one record in the new execution: its layer record, which points at the
split records of the execution that stored them (``Record.borrowed``, see
:mod:`laminar._storage.borrowing`). Neither a split record nor a value is copied.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from laminar._serialization.hashing import LEGACY_HASH
from laminar._serialization.registry import Protocols
from laminar._storage import borrowing, collector, layout
from laminar._storage.borrowing import Place
from laminar._storage.records import (
    LAYOUT,
    Document,
    Malformed,
    Record,
    Reuse,
    SplitRecord,
    unseal,
)
from laminar._storage.schema import record, sorted_keys, sparse
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


def summarise(splits: Mapping[int, SplitRecord]) -> dict[str, str]:
    """A finished layer's values summarised per artifact (``splits``: its split records by index):
    ``{name: digest}`` over every split's content digests, protocols and shards, in split order (and
    ``(caught)`` for errors Catch absorbed): what the key of a layer reading it takes
    (``laminar._runtime.reuse.outputs``), and what its record holds (``Record.outputs``)."""
    texts: dict[str, list[str]] = {}
    caught: list[str] = []
    for index, split in sorted(splits.items()):
        for name, archive in split.archives.items():
            text = texts.get(name)
            if text is None:
                text = texts[name] = []
            artifacts = archive.artifacts
            if len(artifacts) == 1:  # the usual case, without a generator's frames
                a = artifacts[0]
                text.append(f"{index}:{archive.sharded}:{a.hash}:{a.hexdigest}:{a.protocol};")
            else:
                items = ",".join(f"{a.hash}:{a.hexdigest}:{a.protocol}" for a in artifacts)
                text.append(f"{index}:{archive.sharded}:{items};")
        if split.caught is not None:
            caught.append(f"{index}:{split.caught};")
    found = {name: _sha256("".join(text)) for name, text in sorted(texts.items())}
    if caught:
        found["(caught)"] = _sha256("".join(caught))
    return found


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    datastore: Datastore, protocols: Protocols, found: ReuseEntry, layer: str, checked: Checked | None = None
) -> int | str:
    """The number of splits of the entry's layer if its record says it was computed with the entry's
    key, they read back whole (from wherever its record says they are stored), every value they
    point to exists, and the summary of them its record holds (``Record.outputs``), if any, is
    theirs; else why not, in a phrase (the layer runs). ``checked``: its batches as ``checked``
    read them (for the execution and layer the entry names), if they were."""
    gone = f"the values execution {found.execution} stored for it are gone or damaged"
    try:
        source = ExecutionStore(datastore, found.flow, found.execution, protocols)
        finished = source.record(layer)
        if finished is None:
            return gone
        if finished.key != found.key:
            logger.warning(
                "layer %s is not reused from execution %s: its record does not say it was computed with "
                "the key its reuse index entry names",
                layer,
                found.execution,
            )
            return (
                f"the entry's execution {found.execution} does not record this key (its record of the layer "
                "was written before records held keys, or the entry is stale or forged)"
            )
        if checked is None:
            splits = source.finished_splits(layer)
            summary = summarise(splits) if finished.outputs else {}
            checked = Checked(
                frozenset(splits),
                tuple(sorted({k for split in splits.values() for k in _stored_keys(split)})),
                summary,
            )
    except (IntegrityError, ValueError) as error:
        logger.warning("layer %s is not reused from execution %s: %s", layer, found.execution, error)
        return gone
    if checked.indices != set(range(finished.splits)):
        return gone
    if finished.outputs and checked.summary != finished.outputs:
        logger.warning(
            "layer %s is not reused from execution %s: its record's summary of its values does not "
            "match the values its splits hold",
            layer,
            found.execution,
        )
        return (
            f"the record of it in execution {found.execution} does not summarise the values it holds "
            "(the record is damaged or forged)"
        )
    if not all(datastore.exists_many(list(checked.stored))):
        logger.warning(
            "layer %s is not reused from execution %s: values it points to were deleted",
            layer,
            found.execution,
        )
        return gone
    return finished.splits


@dataclass(frozen=True)
class Checked:
    """A layer's split batches as ``usable`` checks them: the split indices they hold, the keys of
    the values stored outside them, and their summary (``summarise``)."""

    indices: frozenset[int]
    stored: tuple[str, ...]
    summary: Mapping[str, str]


def checked(store: ExecutionStore, layer: str, record: Record) -> Checked | None:
    """``record``'s split batches (of ``layer`` in ``store``) read, their checksums checked, and
    summarised from their JSON alone, without building their split records: much less time than
    their full parse takes (figures: docs/performance.md). Only for a record with a summary to check
    whose own batches hold all its splits (none borrowed or held), of this layout; else None
    (``usable`` reads them as any reader does). Raises ValueError for a batch damaged, missing or
    out of shape."""
    if not record.outputs or record.borrowed or record.held or not record.batches:
        return None
    names = list(record.batches)
    keys = [layout.split_batch(store.flow, store.execution, layer, name) for name in names]
    try:
        stored = store.datastore.map_parallel(store.datastore.read_bytes, keys)
    except FileNotFoundError as error:
        raise ValueError(f"a split batch of layer {layer} is missing: {error}") from None
    texts: dict[str, list[tuple[int, str]]] = {}
    caught: list[tuple[int, str]] = []
    indices: set[int] = set()
    outside: set[str] = set()
    with collector.paused():
        for name, data in zip(names, stored, strict=True):
            payload = unseal(data)
            bounds = layout.parse_split_batch(name)
            if payload.get("layout") != LAYOUT or bounds is None:
                return None
            try:
                for number, split in payload["splits"].items():
                    index = int(number)
                    if not bounds[0] <= index <= bounds[1]:
                        raise ValueError(f"split {index} is outside its batch {name}")
                    indices.add(index)
                    for artifact, archive in split["archives"].items():
                        parts = []
                        for item in archive["artifacts"]:
                            digest = item["hexdigest"]
                            parts.append(
                                f"{item.get('hash', LEGACY_HASH)}:{digest}:{item.get('protocol', 'cloudpickle')}"
                            )
                            if item.get("inline") is None:
                                outside.add(layout.artifact(digest))
                        text = f"{index}:{archive.get('sharded', False)}:{','.join(parts)};"
                        texts.setdefault(artifact, []).append((index, text))
                    if split.get("caught") is not None:
                        caught.append((index, f"{index}:{split['caught']};"))
            except (KeyError, TypeError, AttributeError) as error:
                raise ValueError(f"split batch {name} of layer {layer} is out of shape ({error!r})") from None
    summary = {
        name: _sha256("".join(text for _, text in sorted(found))) for name, found in sorted(texts.items())
    }
    if caught:
        summary["(caught)"] = _sha256("".join(text for _, text in sorted(caught)))
    return Checked(frozenset(indices), tuple(sorted(outside)), summary)


def prefetch(
    store: ExecutionStore, layers: Iterable[str], meanwhile: Callable[[], object] | None = None
) -> dict[str, Checked]:
    """Read the records and split batches of ``layers`` in ``store`` (an execution a run reuses
    from) at once, into the metadata cache, so that checking each layer before reusing it, one
    after another down a chain, costs no request of its own. What cannot be read is left to those
    checks, which read it again and say why. ``meanwhile`` is called on a thread of its own once
    the records are read, while the batches are (what it raises is raised here). The batches of a
    layer whose record holds a summary are ``checked`` rather than cached: returned, by layer.

    A layer of several batches reads them in parallel itself, from this thread: on the datastore's
    threads it would wait for threads its neighbours hold, waiting in turn."""
    layers = list(layers)

    def read_record(layer: str) -> Record | None:
        try:
            return store.record(layer)
        except (IntegrityError, ValueError):
            return None

    found: dict[str, Checked] = {}

    def read_batches(layer: str) -> None:
        with contextlib.suppress(IntegrityError, ValueError):
            record = records[layer]
            result = checked(store, layer, record) if record is not None else None
            if result is not None:
                found[layer] = result
            else:
                store.finished_batches(layer)

    records = dict(zip(layers, store.datastore.map_parallel(read_record, layers), strict=True))
    with contextlib.ExitStack() as stack:  # the side thread is joined on the way out, whatever happens
        done = None
        if meanwhile is not None:
            side = stack.enter_context(
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="laminar-reuse")
            )
            done = side.submit(meanwhile)
        store.datastore.map_parallel(
            read_batches, [n for n, r in records.items() if r is not None and len(r.batches) == 1]
        )
        for layer in [n for n, r in records.items() if r is not None and len(r.batches) > 1]:
            read_batches(layer)
        if done is not None:
            done.result()
    return found


def held_whole(record: Record | None) -> bool:
    """Whether ``record`` holds every split of its layer itself (no batch file, nothing borrowed):
    its layer's values are known once the record is read."""
    return (
        record is not None
        and bool(record.held)
        and not record.borrowed
        and set(record.batches) == {record.held_batch}
    )


def adopt(store: ExecutionStore, layer: str, execution: str, why: str) -> None:
    """Record ``layer`` (finished by ``execution``, checked by ``usable``) as finished here: its
    record points at the splits where ``execution``'s record says they are stored, and says where
    it was reused from and ``why`` (its status is read from it: ``Record.reused``)."""
    source = ExecutionStore(store.datastore, store.flow, execution, store.protocols)
    finished = source.record(layer)
    if finished is None:  # usable() just read it
        raise IntegrityError(f"the record of layer {layer} of execution {execution} is gone")
    places = borrowing.resolve(source.lent(layer), execution, range(finished.splits))
    adopted = store.layer_record(
        layer,
        finished.splits,
        batches={},
        artifacts=finished.artifacts,
        borrowed=borrowing.fold(places),
        key=finished.key,  # the key usable() found it computed with: this run's
        base=finished.base,
        outputs=finished.outputs,  # usable() found it theirs
    )
    store.write_record(replace(adopted, reused=Reuse(execution, time.time(), why)))


@dataclass(frozen=True)
class Reused:
    """Splits of a layer reused from earlier executions, by index here: their records, and where
    each is stored (what the layer's record points at)."""

    records: dict[int, SplitRecord]
    places: dict[int, Place]


#: A split index keeps older executions' splits while it holds at most this many times as many
#: entries as the execution publishing has splits...
KEPT_FACTOR = 4
#: ... or this many entries (about 1 MB), whichever is more.
KEPT_AT_LEAST = 10_000


@record
@dataclass(frozen=True)
class SplitEntries(Document):
    """The reuse index of a foreach layer's splits: for the layer's key without its foreach axes
    (``base``), each split's key (the digests of the items it was given) -> ``"<execution>/<index>"``.

    One record per layer and base, so finding which splits of a run are unchanged costs one read.
    It keeps the splits of every execution that published to it (a split computed again names the
    newest), so items an older execution computed are reused when they come back, within a bound:
    ``executions`` lists them oldest first, and the oldest go, whole, once the index would hold more
    than ``KEPT_FACTOR`` times the publishing execution's splits (and ``KEPT_AT_LEAST``). An index
    written before it kept them has no ``executions``: its entries count as older than any.
    """

    described: ClassVar[str] = "reuse index of the splits of layer {layer}"

    flow: str
    layer: str
    base: str
    splits: Mapping[str, str] = field(default_factory=dict, metadata=sorted_keys())
    executions: tuple[str, ...] = field(default=(), metadata=sparse(()))


def _execution_of(where: str) -> str:
    return where.rpartition("/")[0]


def merged(earlier: SplitEntries | None, entries: SplitEntries) -> SplitEntries:
    """``entries`` (one execution's splits) added to the ``earlier`` index, within its bound."""
    (execution,) = {_execution_of(where) for where in entries.splits.values()} or {""}
    if earlier is None:
        return replace(entries, executions=(execution,) if execution else ())
    splits = {**earlier.splits, **entries.splits}
    counts = Counter(_execution_of(where) for where in splits.values())
    listed = [e for e in earlier.executions if e in counts and e != execution]
    older = sorted(set(counts) - set(listed) - {execution}) + listed  # unlisted ones first: the oldest
    limit = max(KEPT_FACTOR * len(entries.splits), KEPT_AT_LEAST)
    held = len(splits)
    dropped = set()
    for oldest in older:
        if held <= limit:
            break
        dropped.add(oldest)
        held -= counts[oldest]
    if dropped:
        splits = {key: where for key, where in splits.items() if _execution_of(where) not in dropped}
    kept = tuple(e for e in older if e not in dropped) + ((execution,) if execution else ())
    return replace(entries, splits=splits, executions=kept)


def publish_splits(datastore: Datastore, flow: str, layer: str, base: str, splits: Mapping[str, str]) -> None:
    """Add one execution's splits (``splits`` all name it) to the layer's split index for ``base``.

    Two executions publishing at once may each miss the other's splits: that costs reuse, never a
    wrong value.
    """
    earlier = _split_entries(datastore, flow, layer, base)
    entries = merged(earlier, SplitEntries(flow, layer, base, dict(splits)))
    datastore.write_bytes(layout.reuse_splits(flow, layer, base), entries.dumps())


def split_entries(datastore: Datastore, flow: str, layer: str, base: str) -> Mapping[str, str]:
    """Split key -> ``"<execution>/<index>"`` for ``base``; empty if none or not one Laminar wrote."""
    found = _split_entries(datastore, flow, layer, base)
    return found.splits if found is not None else {}


def _split_entries(datastore: Datastore, flow: str, layer: str, base: str) -> SplitEntries | None:
    try:
        found = SplitEntries.loads(datastore.read_bytes(layout.reuse_splits(flow, layer, base)))
    except FileNotFoundError:
        return None
    except (Malformed, ValueError) as error:
        logger.warning("reuse index of the splits of layer %s of flow %s is ignored: %s", layer, flow, error)
        return None
    if (found.flow, found.layer, found.base) != (flow, layer, base):
        return None
    return found


def keep_splits(
    datastore: Datastore, flow: str, layer: str, base: str, kept: Callable[[str], str | None]
) -> bool:
    """Rewrite the split index for ``base`` with each entry's ``"<execution>/<index>"`` as ``kept``
    gives it (None: the entry goes). Returns whether it is to be deleted: none of it is left, or it
    is not one Laminar wrote."""
    found = _split_entries(datastore, flow, layer, base)
    if found is None:
        return True
    splits = {key: where for key, found_at in found.splits.items() if (where := kept(found_at)) is not None}
    if splits and splits != found.splits:
        named = {_execution_of(where) for where in splits.values()}
        listed = [e for e in found.executions if e in named]
        executions = (*sorted(named - set(listed)), *listed)  # unlisted ones are the oldest
        rewritten = replace(found, splits=splits, executions=executions)
        datastore.write_bytes(layout.reuse_splits(flow, layer, base), rewritten.dumps())
    return not splits


def usable_splits(
    datastore: Datastore, protocols: Protocols, flow: str, layer: str, base: str, wanted: Mapping[int, str]
) -> Reused:
    """The splits ``wanted`` names (index here -> ``"<execution>/<index>"``) of executions whose
    record of the layer says it was computed with ``base``, that read back whole and whose values
    all exist; the others are left out (they run)."""
    by_execution: dict[str, list[tuple[int, int]]] = {}
    for index, where in wanted.items():
        execution, _, there = where.rpartition("/")
        if there.isdigit() and execution:
            by_execution.setdefault(execution, []).append((index, int(there)))
    found: dict[int, SplitRecord] = {}
    places: dict[int, Place] = {}
    for execution, pairs in by_execution.items():
        try:
            source = ExecutionStore(datastore, flow, execution, protocols)
            finished = source.record(layer)
            if finished is None:
                continue
            if finished.base != base:
                logger.warning(
                    "splits of layer %s are not reused from execution %s: its record does not say it was "
                    "computed with the key its split index names",
                    layer,
                    execution,
                )
                continue
            records = source.split_records(layer, [there for _, there in pairs])
            lent = source.lent(layer)
        except (IntegrityError, ValueError) as error:
            logger.warning("splits of layer %s are not reused from execution %s: %s", layer, execution, error)
            continue
        for (index, position), split in zip(pairs, records, strict=True):
            if split is not None:
                found[index] = split
                places[index] = borrowing.place(lent, execution, position)
    keys = sorted({key for split in found.values() for key in _stored_keys(split)})
    present = dict(zip(keys, datastore.exists_many(keys), strict=True))
    usable = {
        index: split for index, split in found.items() if all(map(present.__getitem__, _stored_keys(split)))
    }
    return Reused(usable, {index: places[index] for index in usable})


def _stored_keys(split: SplitRecord) -> Iterator[str]:
    """The datastore keys of the values ``split`` stores out of its record (not inline)."""
    for archive in split.archives.values():
        for artifact in archive.artifacts:
            if artifact.inline is None:
                yield layout.artifact(artifact.hexdigest)
