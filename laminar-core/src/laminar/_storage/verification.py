"""Checking every value an execution's records point to, and marking damaged layers to run again.

:func:`verify` reads each layer's record and split batches afresh (their checksums and shapes are
checked as they are parsed) and streams every stored value they name through its hash, each blob
once, on the datastore's I/O threads (in parallel on object stores), deserializing nothing. It
returns what is damaged or missing, by layer. A reused layer's splits are checked where its record
points (the batches of the execution it borrows them from), as its readers read them.

:func:`repair` marks the layers whose values are damaged (or whose batches are) as not finished, so
that a resume computes them again, and with them every layer that depends on them. It deletes
nothing: what it takes away is moved to ``repaired/<time>/`` in the execution (see ``layout``):

1. the record of each marked layer, so the layer reads as not finished (and its status record,
   which would still say finished; a status the record carries, ``Record.ran``, goes with it). A
   record in a record pack (``layout``) goes with its pack, whose other records are first written
   as files of their own, so only the marked layers read as not finished;
2. each damaged value's blob, so the rerun writes its bytes again (a value already stored is never
   written again);
3. the split batches of the damaged splits (and every batch of a dependent layer), so those splits
   run again; the other splits of a damaged layer keep their results. A batch another execution
   holds (a reused layer borrows it) is left where it is: moving the layer's record aside is what
   makes its borrowed splits run again.

Interrupted, it leaves the execution resumable, and running it again completes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from laminar._storage import layout, loading
from laminar._storage.lease import Lease
from laminar._storage.records import Artifact, Record, SplitBatch
from laminar._storage.store import ExecutionStore
from laminar._transport.datastore import Datastore
from laminar._transport.staging_files import new_file
from laminar.errors import IntegrityError, LeaseHeld

#: Called as values are checked: how many of how many, and the bytes read so far.
Progress = Callable[[int, int, int], None]

DAMAGED = "damaged"
MISSING = "missing"
VALUE, RECORD, BATCH, STATUS = "value", "record", "batch", "status"


@dataclass(frozen=True)
class Finding:
    """One thing of a layer that is damaged or missing: what it is, where, and why."""

    layer: str
    problem: str  # DAMAGED or MISSING
    kind: str  # VALUE, RECORD, BATCH or STATUS
    what: str  # "artifact 'x' (split 3)", "its record", "split batch 0-7.json", "its status"
    url: str
    reason: str
    key: str | None = None  # the stored key at fault (None: a value kept inline in its batch)
    batch: str | None = None  # the batch whose splits must run again, if any
    execution: str | None = None  # the execution holding that batch, if the layer borrows it

    @property
    def recomputed(self) -> bool:
        """Whether repairing it runs splits of the layer again (not just rewrites a record)."""
        return self.batch is not None or self.execution is not None


@dataclass
class Verification:
    """What :func:`verify` found in one execution."""

    flow: str
    execution: str
    layers: list[str]
    unfinished: list[str] = field(default_factory=list)  # layers with no record (damaged ones aside)
    values: int = 0  # references to values checked (a blob named twice counts twice)
    blobs: int = 0  # distinct stored values read
    bytes: int = 0
    unchecked: int = 0  # values only their protocol can check (see ``loading.check``)
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class _Reference:
    layer: str
    batch: str
    index: int
    name: str
    artifact: Artifact
    execution: str | None = None  # the execution holding the batch, if the layer borrows it


def verify(store: ExecutionStore, layers: Sequence[str], *, progress: Progress | None = None) -> Verification:
    """Check the records of ``layers`` of ``store``'s execution and every value they point to."""
    result = Verification(store.flow, store.execution, list(layers))
    references: list[_Reference] = []
    for layer in layers:
        result.findings += _statuses(store, layer)
        findings, found = _layer(store, layer, result.unfinished)
        result.findings += findings
        references += found
    result.values = len(references)
    result.findings += _values(store, references, result, progress)
    return result


def _url(store: ExecutionStore, key: str) -> str:
    return f"{store.datastore.url}/{key}"


def _statuses(store: ExecutionStore, layer: str) -> list[Finding]:
    """A damaged status record of ``layer`` (the run records ``show`` reads)."""
    try:
        store.layer_status(layer)
    except IntegrityError as error:
        key = layout.layer_status(store.flow, store.execution, layer)
        return [Finding(layer, DAMAGED, STATUS, "its status", _url(store, key), _reason(error), key)]
    return []


def _reason(error: Exception) -> str:
    """The part of an ``IntegrityError`` after "is corrupt: ", which says why."""
    text = str(error)
    return text.split(" is corrupt: ", 1)[-1]


def _layer(
    store: ExecutionStore, layer: str, unfinished: list[str]
) -> tuple[list[Finding], list[_Reference]]:
    """The findings of ``layer``'s record and batches, and the values its batches point to."""
    findings: list[Finding] = []
    try:
        record = store.record(layer)
        if record is None:
            unfinished.append(layer)
    except IntegrityError as error:
        record = None
        key = store.record_location(layer)  # its record.json, or the record pack holding it
        findings.append(Finding(layer, DAMAGED, RECORD, "its record", _url(store, key), _reason(error), key))
    # A finished layer's splits are in the batches its record names (others are batches compacted
    # into one of those, garbage ``laminar gc`` deletes); a running one's, in those listed.
    if record is not None:
        names = sorted(record.batches)
    else:
        prefix = layout.splits(store.flow, store.execution, layer)
        names = [name for name in store.datastore.list_prefix(prefix) if layout.parse_split_batch(name)]

    def read(name: str) -> SplitBatch | Finding | None:
        key = layout.split_batch(store.flow, store.execution, layer, name)
        try:
            return store.read_batch(layer, name)
        except IntegrityError as error:
            return Finding(
                layer, DAMAGED, BATCH, f"split batch {name}", _url(store, key), _reason(error), key, name
            )

    references: list[_Reference] = []
    if record is not None and record.borrowed:
        findings_there, references = _borrowed(store, layer, record)
        findings += findings_there
    for name, batch in zip(names, store.datastore.map_parallel(read, names), strict=True):
        if isinstance(batch, Finding):
            findings.append(batch)
        elif batch is None:
            key = layout.split_batch(store.flow, store.execution, layer, name)
            reason = "its record names it, and it is not there"
            findings.append(
                Finding(layer, MISSING, BATCH, f"split batch {name}", _url(store, key), reason, key, name)
            )
        else:
            references += [
                _Reference(layer, name, index, archive_name, artifact)
                for index, split in sorted(batch.splits.items())
                for archive_name, archive in split.archives.items()
                for artifact in archive.artifacts
            ]
    return findings, references


def _borrowed(store: ExecutionStore, layer: str, record: Record) -> tuple[list[Finding], list[_Reference]]:
    """The findings and values of the splits ``layer`` borrows, read where its record points."""
    findings: list[Finding] = []
    references: list[_Reference] = []
    for execution, runs in sorted(record.borrowed.items()):
        lender = ExecutionStore(store.datastore, store.flow, execution, store.protocols)
        what = f"the splits it reuses from execution {execution}"
        try:
            theirs = lender.record(layer)
        except IntegrityError as error:
            key = lender.record_location(layer)
            findings.append(
                Finding(layer, DAMAGED, RECORD, what, _url(store, key), _reason(error), execution=execution)
            )
            continue
        if theirs is None:
            key = lender.record_key(layer)
            reason = (
                f"execution {execution} has no record of layer {layer} (deleted other than by laminar gc?)"
            )
            findings.append(
                Finding(layer, MISSING, RECORD, what, _url(store, key), reason, execution=execution)
            )
            continue
        here = {there + i: first + i for first, last, there in runs for i in range(last - first + 1)}
        names = [name for name, held in theirs.batches.items() if any(_overlaps(run, here) for run in held)]
        for name in sorted(names, key=lambda name: layout.parse_split_batch(name) or (-1, -1)):
            batch_key = layout.split_batch(store.flow, execution, layer, name)
            try:
                batch = lender.read_batch(layer, name)
            except IntegrityError as error:
                findings.append(
                    Finding(
                        layer,
                        DAMAGED,
                        BATCH,
                        f"split batch {name} of execution {execution}",
                        _url(store, batch_key),
                        _reason(error),
                        batch_key,
                        name,
                        execution,
                    )
                )
                continue
            if batch is None:
                findings.append(
                    Finding(
                        layer,
                        MISSING,
                        BATCH,
                        f"split batch {name} of execution {execution}",
                        _url(store, batch_key),
                        "its record names it, and it is not there",
                        batch_key,
                        name,
                        execution,
                    )
                )
                continue
            references += [
                _Reference(layer, name, here[index], archive_name, artifact, execution)
                for index, split in sorted(batch.splits.items())
                if index in here
                for archive_name, archive in split.archives.items()
                for artifact in archive.artifacts
            ]
    return findings, references


def _overlaps(run: tuple[int, int], indices: Mapping[int, int]) -> bool:
    return any(index in indices for index in range(run[0], run[1] + 1))


def _values(
    store: ExecutionStore, references: list[_Reference], result: Verification, progress: Progress | None
) -> list[Finding]:
    """Check each distinct value once; a finding for every reference to one that is damaged or missing."""
    distinct: dict[tuple[object, ...], Artifact] = {}
    for reference in references:
        distinct.setdefault(_identity(reference), reference.artifact)
    items = list(distinct.items())
    lock = threading.Lock()
    done = [0, 0]

    def check(item: tuple[tuple[object, ...], Artifact]) -> tuple[str, str] | int | None:
        """The bytes read, None if only its protocol could check it, else (problem, reason)."""
        outcome: tuple[str, str] | int | None
        try:
            outcome = loading.check(store.datastore, item[1], store.protocols)
        except FileNotFoundError:
            outcome = (MISSING, "its stored bytes are not there")
        except IntegrityError as error:
            outcome = (DAMAGED, _reason(error))
        with lock:
            done[0] += 1
            done[1] += outcome if isinstance(outcome, int) else 0
            if progress is not None:
                progress(done[0], len(items), done[1])
        return outcome

    outcomes = dict(zip(distinct, store.datastore.map_parallel(check, items), strict=True))
    result.blobs = sum(1 for artifact in distinct.values() if artifact.inline is None)
    result.bytes = sum(found for found in outcomes.values() if isinstance(found, int))
    result.unchecked = sum(1 for found in outcomes.values() if found is None)
    findings = []
    place = {layer: at for at, layer in reversed(list(enumerate(r.layer for r in references)))}
    # in layer order, then by split: the same findings in the same order, however the splits were batched
    for reference in sorted(references, key=lambda r: (place[r.layer], r.index, r.name)):
        outcome = outcomes[_identity(reference)]
        if not isinstance(outcome, tuple):
            continue
        artifact = reference.artifact
        key = layout.artifact(artifact.hexdigest) if artifact.inline is None else None
        where = (
            _url(store, key) if key is not None else f"{_url(store, _batch_key(store, reference))} (inline)"
        )
        findings.append(
            Finding(
                reference.layer,
                outcome[0],
                VALUE,
                f"artifact {reference.name!r} (split {reference.index})",
                where,
                outcome[1],
                key,
                reference.batch,
                reference.execution,
            )
        )
    return findings


def _identity(reference: _Reference) -> tuple[object, ...]:
    """What makes two references one check: the same stored blob, or one inline value."""
    artifact = reference.artifact
    if artifact.inline is not None:
        return (
            reference.layer,
            reference.batch,
            reference.index,
            reference.name,
            id(artifact),
            reference.execution,
        )
    return (artifact.hexdigest, artifact.stored, artifact.codec, artifact.hash, artifact.protocol)


def _batch_key(store: ExecutionStore, reference: _Reference) -> str:
    execution = reference.execution or store.execution
    return layout.split_batch(store.flow, execution, reference.layer, reference.batch)


# ---- repair ------------------------------------------------------------------------------------


@dataclass
class Repair:
    """What :func:`repair` did: the layers it marked not finished, and what it moved where."""

    marked: list[str]
    dependents: list[str]
    moved: list[str]
    folder: str


def dependents_of(layers: Iterable[str], dependencies: Mapping[str, Collection[str]]) -> set[str]:
    """Every layer that depends, directly or through others, on one of ``layers``."""
    found: set[str] = set()
    frontier = set(layers)
    while frontier:
        frontier = {
            name for name, needs in dependencies.items() if name not in found and frontier & set(needs)
        }
        found |= frontier
    return found - set(layers)


def repair(
    store: ExecutionStore,
    verification: Verification,
    order: Sequence[str],
    dependencies: Mapping[str, Collection[str]],
) -> Repair:
    """Mark the layers :func:`verify` found damaged (and their dependents) not finished; see the module."""
    holder = Lease(store.datastore, store.flow, store.execution).current()
    if holder is not None and holder.live():
        raise LeaseHeld(
            f"execution {store.execution} of flow {store.flow} is running ({holder.describe()}); "
            "repair it once that run has ended"
        )
    recomputed = {finding.layer for finding in verification.findings if finding.recomputed}
    rewritten = {finding.layer for finding in verification.findings if finding.kind == RECORD}
    if "Parameters" in recomputed | rewritten:  # its record holds its split (its batch, before 2026.12.5)
        raise IntegrityError(
            f"the parameters of execution {store.execution} of flow {store.flow} are damaged, and "
            "cannot be computed again; run the flow again with its parameters"
        )
    dependents = dependents_of(recomputed, dependencies)
    marked = [name for name in order if name in recomputed | dependents | rewritten]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = layout.repaired(store.flow, store.execution, stamp)
    within = layout.execution(store.flow, store.execution)

    records = [store.record_key(name) for name in marked]
    # A marked layer's record in a record pack: the pack's other records are written as files of
    # their own first (they read first), then the pack is set aside with the records.
    packs = {pack for name in marked if (pack := store.record_pack_of(name)) is not None}
    packs |= {
        f.key
        for f in verification.findings
        if f.kind == RECORD and f.key is not None and store.is_record_pack(f.key)
    }
    for pack in sorted(packs):
        store.unpack(pack, leaving=marked)
    records += sorted(packs)
    statuses = [layout.layer_status(store.flow, store.execution, name) for name in marked]
    statuses += [f.key for f in verification.findings if f.kind == STATUS and f.key is not None]
    blobs = sorted({f.key for f in verification.findings if f.kind == VALUE and f.key is not None})
    batches = {  # of damaged or missing values, and damaged batches (a missing one is not there)
        layout.split_batch(store.flow, store.execution, f.layer, f.batch)
        for f in verification.findings
        if f.batch is not None and f.execution is None  # another execution's batch stays where it is
    }
    for name in dependents:
        prefix = layout.splits(store.flow, store.execution, name)
        batches |= {
            prefix + batch for batch in store.datastore.list_prefix(prefix) if layout.parse_split_batch(batch)
        }
    for name in recomputed - dependents:
        batches |= set(_superseded(store, name))

    moved: list[str] = []
    for key in [*records, *dict.fromkeys(statuses), *blobs, *sorted(batches)]:
        aside = folder + (key.removeprefix(within) if key.startswith(within) else key)
        if _move(store.datastore, key, aside):
            moved.append(key)
    return Repair(
        marked, [name for name in marked if name in dependents], moved, f"{store.datastore.url}/{folder}"
    )


def _superseded(store: ExecutionStore, layer: str) -> list[str]:
    """The batches of finished ``layer`` its record does not name (compacted into one it names, a
    crash keeping them): set aside with it, or resume would read their splits as finished."""
    try:
        record = store.record(layer)
    except IntegrityError:  # it is set aside: resume reads every batch left, all of them checked
        return []
    if record is None:
        return []
    prefix = layout.splits(store.flow, store.execution, layer)
    listed = store.datastore.list_prefix(prefix)
    return [prefix + name for name in listed if layout.parse_split_batch(name) and name not in record.batches]


def _move(datastore: Datastore, key: str, to: str) -> bool:
    """Copy ``key`` to ``to`` (streamed through a staging file), then delete it; False if it is not there."""
    try:
        source = datastore.open_read(key)
    except FileNotFoundError:
        return False
    fd, path = new_file(datastore.staging_directory(), ".aside")
    try:
        with source, os.fdopen(fd, "wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
        datastore.write_file(to, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    datastore.delete(key)
    return True
