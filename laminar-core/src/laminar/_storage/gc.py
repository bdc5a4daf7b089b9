"""Garbage collection: delete old executions, then the content-addressed blobs nothing references.

Artifacts are stored once under their content hash (``artifacts/<hh>/<digest>``, see
:mod:`laminar._storage.layout`) and shared by every execution, of any flow, that stored the same
value. So a blob may be deleted only when no execution that stays references it:

1. every execution of every flow in the datastore is listed with its creation time and its lease;
2. the executions to delete are chosen (``keep_last`` per flow, ``older_than`` seconds);
3. the blobs every *kept* execution references are collected from its split batches (the only
   records that name artifacts), and from the splits its reused layers borrow from a chosen
   execution (see :mod:`laminar._storage.borrowing`); every other blob under ``artifacts/`` is garbage,
   and so is every batch of a finished layer its record does not name (compacted into one it names:
   see :mod:`laminar._runtime.commit`);
4. the reuse index's entries naming a chosen execution (or one no longer stored) are deleted, so no
   entry ever names deleted values (a foreach's split index loses those executions' splits only;
   an entry of a layer a kept execution reused whole from a chosen one names the kept one instead,
   which has the same key and, once its records are copied in, the same splits); the split records a kept execution borrows from a chosen one are
   copied into it (records only, never a value: a batch of its own, then its layer record written
   again without that pointer, the one record gc rewrites); then the chosen executions (their
   metadata first, so a half-deleted one reads as missing, not as damaged), then the garbage batches
   and blobs.

A running execution (a live lease) may reference any blob at any moment: a split that stores a value
already stored writes nothing and points at the existing blob, before its split batch exists. So
while any execution in the datastore holds a live lease, nothing at all is deleted: :func:`collect`
raises :class:`~laminar.errors.LeaseHeld` naming it. Leases are checked again just before blobs
are deleted. A datastore shared with schedulers that may start meanwhile should be collected when
no runs are due.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from laminar._names import is_valid
from laminar._serialization.registry import Protocols
from laminar._storage import layout, reuse_index
from laminar._storage.lease import Holder, Lease
from laminar._storage.records import ExecutionMetadata, Malformed, Record, SplitBatch, SplitRecord, runs
from laminar._storage.store import ExecutionStore
from laminar._transport.datastore import Datastore
from laminar.errors import IntegrityError, LeaseHeld

#: Split records per batch gc writes when it copies borrowed splits in (as the scheduler's group commit).
COPIED_PER_BATCH = 4096


@dataclass(frozen=True)
class StoredExecution:
    """One execution found in the datastore."""

    flow: str
    id: str
    created: float | None  # None when its metadata is missing or damaged (an interrupted start)
    holder: Holder | None  # the newest holder of its lease, live or not

    @property
    def live(self) -> bool:
        return self.holder is not None and self.holder.live()


@dataclass
class Usage:
    """What some executions reference: each blob's digest and size, and how often it is referenced."""

    sizes: dict[str, int] = field(default_factory=dict)
    references: int = 0
    referenced_bytes: int = 0
    inline: int = 0
    inline_bytes: int = 0
    #: split batches of finished layers their records do not name (compacted into another one
    #: whose layer record a crash cut off from deleting them): garbage, as the blobs
    superseded: list[str] = field(default_factory=list)

    def add(self, hexdigest: str, size: int) -> None:
        self.sizes[hexdigest] = size
        self.references += 1
        self.referenced_bytes += size

    @property
    def unique_bytes(self) -> int:
        return sum(self.sizes.values())


@dataclass(frozen=True)
class Loan:
    """Splits layer ``layer`` of kept execution ``execution`` borrows from executions being deleted:
    their records by index in ``execution``, which gc copies into it before deleting them."""

    flow: str
    execution: str
    layer: str
    record: Record
    lenders: frozenset[str]
    splits: dict[int, SplitRecord]


@dataclass
class Collection:
    """The outcome of a collection (or, with ``dry_run``, what it would do)."""

    dry_run: bool
    deleted_executions: list[StoredExecution]
    kept_executions: list[StoredExecution]
    deleted_blobs: list[str]
    freed_bytes: int
    kept: Usage
    blobs_before: int
    #: The reused layers whose borrowed split records were (or would be) copied into them.
    copied: list[Loan] = field(default_factory=list)

    @property
    def blobs_after(self) -> int:
        return self.blobs_before - len(self.deleted_blobs)


def parse_age(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value = text.strip().lower()
    scale = 1
    if value and value[-1] in units:
        scale = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not value or number < 0:
        raise ValueError(f"{text!r} is not an age; write it as 90s, 30m, 12h, 7d or 2w")
    return number * scale


def executions(datastore: Datastore) -> list[StoredExecution]:
    """Every execution of every flow in ``datastore``, per flow oldest first."""
    found = []
    for flow in datastore.list_prefix("flows/"):
        if not is_valid(flow):
            continue
        for execution_id in datastore.list_prefix(layout.executions(flow)):
            if not is_valid(execution_id):
                continue
            found.append(
                StoredExecution(
                    flow,
                    execution_id,
                    _created(datastore, flow, execution_id),
                    Lease(datastore, flow, execution_id).current(),
                )
            )
    return found


def _created(datastore: Datastore, flow: str, execution_id: str) -> float | None:
    try:
        return ExecutionMetadata.loads(
            datastore.read_bytes(layout.execution_metadata(flow, execution_id))
        ).created
    except (FileNotFoundError, Malformed):
        return None


def choose(
    found: Iterable[StoredExecution],
    *,
    keep_last: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
) -> list[StoredExecution]:
    """The executions to delete: beyond the ``keep_last`` newest of their flow, and created more than
    ``older_than`` seconds ago; both conditions when both are given, none chosen when neither is."""
    if keep_last is None and older_than is None:
        return []
    now = time.time() if now is None else now
    by_flow: dict[str, list[StoredExecution]] = {}
    for execution in found:
        by_flow.setdefault(execution.flow, []).append(execution)
    chosen = []
    for flow_executions in by_flow.values():
        # Ids sort by creation time; the metadata's time decides where it exists.
        ordered = sorted(flow_executions, key=lambda e: (e.created if e.created is not None else 0.0, e.id))
        old = ordered if keep_last is None else ordered[: max(len(ordered) - keep_last, 0)]
        for execution in old:
            if older_than is None or (execution.created is not None and now - execution.created > older_than):
                chosen.append(execution)
            elif execution.created is None and older_than is not None:
                chosen.append(execution)  # never started properly: no age, nothing worth keeping
    return chosen


#: Endings of the keys the layout writes below an execution; its directories have none of them.
_FILES = (".json", ".jsonl", ".log")


def _keys_below(datastore: Datastore, prefix: str) -> list[str]:
    """Every key below ``prefix`` (ending in ``/``), found with delimiter listings."""
    keys = []
    for name in datastore.list_prefix(prefix):
        if name.endswith(_FILES):  # what the layout writes: no need to ask whether it is a directory
            keys.append(prefix + name)
            continue
        below = datastore.list_prefix(prefix + name + "/")
        if below:
            keys.extend(_keys_below(datastore, prefix + name + "/"))
        else:
            keys.append(prefix + name)
    return keys


def usage(datastore: Datastore, kept: Iterable[StoredExecution], loans: Iterable[Loan] = ()) -> Usage:
    """The blobs ``kept`` executions reference, read from their split batches, and those the
    split records they borrow from executions being deleted (``loans``) reference."""
    found = Usage()
    for loan in loans:
        _count(found, loan.splits.values())
    for execution in kept:
        store = ExecutionStore(datastore, execution.flow, execution.id, Protocols())
        for layer in _layer_names(store):
            record = _record(store, layer)
            if record is not None:
                _count(found, record.held.values())
            prefix = layout.splits(execution.flow, execution.id, layer)
            names = [name for name in datastore.list_prefix(prefix) if layout.parse_split_batch(name)]
            if record is not None:  # a finished layer's batches are those its record names
                found.superseded += [prefix + name for name in names if name not in record.batches]
                names = [name for name in names if name in record.batches]
            for data in datastore.read_many([prefix + name for name in names]):
                try:
                    batch = SplitBatch.loads(data)
                except Malformed as error:
                    raise Malformed(
                        f"a split batch of layer {layer} in execution {execution.id} of flow {execution.flow} "
                        f"is damaged ({error}); nothing was deleted, since what it references is unknown"
                    ) from None
                _count(found, batch.splits.values())
    return found


def _layer_names(store: ExecutionStore) -> list[str]:
    """The execution's layers with anything stored (``ExecutionStore.layer_names``). Raises
    ``Malformed`` (deleting nothing) if a record pack of it is damaged: what it references is unknown."""
    names = store.layer_names()
    damaged = store.damaged_packs()
    if damaged:
        raise Malformed(f"{damaged[0]}; nothing was deleted, since what it references is unknown")
    return names


def _record(store: ExecutionStore, layer: str) -> Record | None:
    """The layer's record (which names its batches, and may hold a split itself: ``Record.held``)."""
    try:
        return store.record(layer)
    except IntegrityError as error:
        raise Malformed(f"{error}; nothing was deleted, since what it references is unknown") from None


def _count(found: Usage, splits: Iterable[SplitRecord]) -> None:
    for split in splits:
        for archive in split.archives.values():
            for artifact in archive.artifacts:
                if artifact.inline is not None:
                    found.inline += 1
                    found.inline_bytes += artifact.size
                else:
                    found.add(artifact.hexdigest, artifact.size)


def loans(
    datastore: Datastore, kept: Iterable[StoredExecution], deleting: set[tuple[str, str]]
) -> list[Loan]:
    """The splits ``kept`` executions' reused layers borrow from the executions in ``deleting``
    (read from their batches), which gc copies into them. Raises ``Malformed`` (deleting nothing)
    for a damaged layer record of a kept execution: what it borrows is unknown."""
    lenders = {execution for _, execution in deleting}
    found = []
    for execution in kept:
        store = ExecutionStore(datastore, execution.flow, execution.id, Protocols())
        layers = _layer_names(store)
        try:
            records = datastore.map_parallel(store.record, layers)
        except IntegrityError as error:
            raise Malformed(f"{error}; nothing was deleted, since what it reuses is unknown") from None
        for layer, record in zip(layers, records, strict=True):
            if record is None or not lenders.intersection(record.borrowed):
                continue
            going = frozenset(e for e in record.borrowed if (execution.flow, e) in deleting)
            if going:
                found.append(_loan(datastore, execution, layer, record, going))
    return found


def _loan(
    datastore: Datastore, execution: StoredExecution, layer: str, record: Record, going: frozenset[str]
) -> Loan:
    splits: dict[int, SplitRecord] = {}
    for lender in sorted(going):
        here = [
            (first + i, there + i)
            for first, last, there in record.borrowed[lender]
            for i in range(last - first + 1)
        ]
        source = ExecutionStore(datastore, execution.flow, lender, Protocols())
        try:
            records = source.own_split_records(layer, [there for _, there in here])
        except IntegrityError as error:
            raise Malformed(
                f"layer {layer} of execution {execution.id} of flow {execution.flow} reuses splits of execution "
                f"{lender}, whose records are damaged ({error}); nothing was deleted"
            ) from None
        splits.update(
            (index, split) for (index, _), split in zip(here, records, strict=True) if split is not None
        )
    return Loan(execution.flow, execution.id, layer, record, going, splits)


def copy_in(datastore: Datastore, loan: Loan) -> None:
    """Write the borrowed split records of ``loan`` into its execution as batches of its own, then its
    layer record again without the pointers to the executions being deleted. Records only."""
    store = ExecutionStore(datastore, loan.flow, loan.execution, Protocols())
    indices = sorted(loan.splits)
    batches = dict(loan.record.batches)
    for start in range(0, len(indices), COPIED_PER_BATCH):
        chunk = {index: loan.splits[index] for index in indices[start : start + COPIED_PER_BATCH]}
        batches[store.write_splits(loan.layer, chunk)] = runs(chunk)
    copied = store.layer_record(
        loan.layer,
        loan.record.splits,
        batches=batches,
        artifacts=loan.record.artifacts,
        borrowed={e: found for e, found in loan.record.borrowed.items() if e not in loan.lenders},
        held=loan.record.held,
        key=loan.record.key,
        base=loan.record.base,
    )
    # and its status (where it came from, if reused; its final status, if it ran: Record.ran)
    store.write_record(replace(copied, reused=loan.record.reused, ran=loan.record.ran))


def blobs(datastore: Datastore) -> list[str]:
    """The digests of every blob under ``artifacts/``."""
    return [
        name
        for shard in datastore.list_prefix("artifacts/")
        for name in datastore.list_prefix(f"artifacts/{shard}/")
        if name.startswith(shard)
    ]


def stored_size(datastore: Datastore, key: str) -> int:
    """How many bytes ``key`` holds, read as a stream (seeking to its end where the stream allows)."""
    try:
        stream = datastore.open_read(key)
    except FileNotFoundError:
        return 0
    with stream:
        if stream.seekable():
            return stream.seek(0, io.SEEK_END)
        total = 0
        while chunk := stream.read(1 << 20):
            total += len(chunk)
        return total


def _refuse_if_live(found: Iterable[StoredExecution], *, deleted: int = 0) -> None:
    live = [execution for execution in found if execution.live]
    if live:
        first = live[0]
        assert first.holder is not None
        more = f" (and {len(live) - 1} more)" if len(live) > 1 else ""
        done = (
            f"gc deleted {deleted} execution(s) but no blob, since it started meanwhile"
            if deleted
            else "gc deletes nothing while an execution in the datastore holds a live lease"
        )
        raise LeaseHeld(
            f"execution {first.id} of flow {first.flow} is running ({first.holder.describe()}){more}; {done}: "
            "a running split may reference any stored blob; run gc again once it has finished"
        )


def collect(
    datastore: Datastore,
    *,
    keep_last: int | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> Collection:
    """Delete the chosen executions and every blob no remaining execution references.

    Raises :class:`~laminar.errors.LeaseHeld` (deleting nothing) while any execution runs.
    """
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
    found = executions(datastore)
    _refuse_if_live(found)
    chosen = choose(found, keep_last=keep_last, older_than=older_than, now=now)
    deleting = {(e.flow, e.id) for e in chosen}
    kept = [e for e in found if (e.flow, e.id) not in deleting]
    borrowed = loans(datastore, kept, deleting)
    kept_usage = usage(datastore, kept, borrowed)
    present = blobs(datastore)
    garbage = [digest for digest in present if digest not in kept_usage.sizes]
    freed = sum(stored_size(datastore, layout.artifact(digest)) for digest in garbage)
    result = Collection(dry_run, chosen, kept, garbage, freed, kept_usage, len(present), borrowed)
    if dry_run:
        return result
    drop_entries(datastore, {(e.flow, e.id) for e in kept}, successors(datastore, borrowed))
    for loan in borrowed:  # before their lenders go: a kept execution never points at nothing
        copy_in(datastore, loan)
    for execution in chosen:
        delete_execution(datastore, execution.flow, execution.id)
    datastore.delete_many(kept_usage.superseded)
    _refuse_if_live(
        executions(datastore), deleted=len(chosen)
    )  # a run that started meanwhile may reuse any blob
    datastore.map_parallel(lambda digest: datastore.delete(layout.artifact(digest)), garbage)
    return result


def successors(datastore: Datastore, loans: Iterable[Loan]) -> dict[tuple[str, str, str], str]:
    """``(flow, layer, deleted execution) -> kept execution`` for each layer a kept execution reused
    whole from one being deleted (its status says so): the kept one then has the same key, so the
    index entry can name it instead of going."""
    found = {}
    for loan in loans:
        store = ExecutionStore(datastore, loan.flow, loan.execution, Protocols())
        try:
            status = store.layer_status(loan.layer)
        except IntegrityError:  # the entry goes: a later run computes the layer again
            continue
        if status is not None and status.reused in loan.lenders:
            found[(loan.flow, loan.layer, status.reused)] = loan.execution
    return found


def drop_entries(
    datastore: Datastore,
    kept: set[tuple[str, str]],
    successors: Mapping[tuple[str, str, str], str] | None = None,
) -> int:
    """Delete every reuse index entry that names an execution not in ``kept`` (or that is not an
    entry Laminar wrote), unless ``successors`` names a kept execution that reused the layer whole
    from it: the entry then names that one. Returns how many went. Runs before executions are deleted."""
    doomed: list[str] = []
    for flow in datastore.list_prefix("flows/"):
        if not is_valid(flow):
            continue
        index = layout.reuse_index(flow)
        for layer in datastore.list_prefix(index):
            if not is_valid(layer):
                continue
            entries = layout.reuse_entries(flow, layer)
            for name in datastore.list_prefix(entries):
                key = name.removesuffix(".json")
                if name == "splits":  # a foreach layer's split indices lose the splits that go
                    doomed.extend(_drop_splits(datastore, flow, layer, kept, successors or {}))
                    continue
                try:
                    found = reuse_index.entry(datastore, flow, layer, key)
                except ValueError:  # not a key: nothing Laminar wrote
                    found = None
                heir = (successors or {}).get((flow, layer, found.execution)) if found is not None else None
                if found is not None and heir is not None:
                    reuse_index.publish(datastore, flow, layer, found.key, heir, found.components)
                elif found is None or (flow, found.execution) not in kept:
                    doomed.append(entries + name)
    datastore.map_parallel(datastore.delete, doomed)
    return len(doomed)


def _drop_splits(
    datastore: Datastore,
    flow: str,
    layer: str,
    kept: set[tuple[str, str]],
    successors: Mapping[tuple[str, str, str], str],
) -> list[str]:
    """Rewrite each split index of ``layer`` without the splits of executions not ``kept`` (those of
    one a kept execution reused the layer whole from then name that one, at the same index); returns
    the keys of those left empty, or that are not indices Laminar wrote, to delete."""

    def kept_as(where: str) -> str | None:
        execution, _, index = where.rpartition("/")
        if (flow, execution) in kept:
            return where
        heir = successors.get((flow, layer, execution))
        return f"{heir}/{index}" if heir is not None else None

    doomed = []
    for name in datastore.list_prefix(layout.reuse_entries(flow, layer) + "splits/"):
        base = name.removesuffix(".json")
        try:
            emptied = reuse_index.keep_splits(datastore, flow, layer, base, kept_as)
        except ValueError:  # not a key: nothing Laminar wrote
            emptied = True
        if emptied:
            doomed.append(layout.reuse_entries(flow, layer) + "splits/" + name)
    return doomed


def delete_execution(datastore: Datastore, flow: str, execution_id: str) -> None:
    """Delete every key of one execution: its metadata first, so a partial deletion reads as missing."""
    prefix = layout.execution(flow, execution_id)
    keys = _keys_below(datastore, prefix)
    first = [layout.execution_metadata(flow, execution_id), layout.execution_status(flow, execution_id)]
    for key in first:
        if key in keys:
            datastore.delete(key)
    datastore.map_parallel(datastore.delete, [key for key in keys if key not in first])
