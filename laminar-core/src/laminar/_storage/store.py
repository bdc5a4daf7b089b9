"""One execution's storage, in the order that keeps state truthful: artifacts, archives, records.

A split is finished when a split batch holding its record exists; a layer when its record exists.
Each is written only after everything it points to, so a reader that sees a record can read all it
names. Batches and records never change once written, so this process caches what it reads of them.

Every record, batch and metadata file read is checked (its checksum, its shape, that it belongs
where it was found) before it is used; a damaged one raises ``IntegrityError`` naming flow,
execution, layer and the file's URL. A missing record is not an error: the layer has not finished.

A reused layer's record may borrow splits from other executions (see :mod:`laminar._storage.borrowing`):
its split records are then read from those executions' batches, in place.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from laminar._names import is_valid, validate
from laminar._serialization.registry import Protocols
from laminar._storage import borrowing, layout, loading, staging
from laminar._storage.cache import cache_for
from laminar._storage.records import (
    Archive,
    Artifact,
    Borrowed,
    ExecutionMetadata,
    ExecutionStatus,
    LayerStatusRecord,
    Malformed,
    Origin,
    Record,
    Runs,
    SplitBatch,
    SplitRecord,
    runs,
)
from laminar._transport.datastore import Datastore
from laminar.errors import IntegrityError

logger = logging.getLogger(__name__)


def _weight(batch: SplitBatch) -> int:
    """What a batch weighs in the metadata cache: its archives (a split that stored nothing weighs 1)."""
    return sum(len(record.archives) or 1 for record in batch.splits.values())


class _Locator:
    """Finds the batches that may hold split *i*: those with a run of indices covering it.

    A finished layer's record gives each batch's exact runs, which never overlap, so a lookup is
    one bisection. A running layer has only batch names (lowest and highest index), whose ranges
    may overlap when splits finish out of order: ``reach[k]`` is the highest index any of the first
    ``k + 1`` runs reaches, so a lookup walks back only over runs that may cover *i*.
    """

    def __init__(self, spans: Iterable[tuple[int, int, str]]) -> None:
        ordered = sorted(spans)
        self.firsts = [first for first, _, _ in ordered]
        self.lasts = [last for _, last, _ in ordered]
        self.names = [name for _, _, name in ordered]
        self.reach = list(itertools.accumulate(self.lasts, max))

    @classmethod
    def from_names(cls, names: Iterable[str]) -> _Locator:
        return cls(
            (bounds[0], bounds[1], name) for name in names if (bounds := layout.parse_split_batch(name))
        )

    @classmethod
    def from_record(cls, record: Record) -> _Locator:
        return cls((first, last, name) for name, found in record.batches.items() for first, last in found)

    def candidates(self, index: int) -> list[str]:
        found = []
        position = bisect.bisect_right(self.firsts, index) - 1
        while position >= 0 and self.reach[position] >= index:
            if self.lasts[position] >= index:
                found.append(self.names[position])
            position -= 1
        return found


#: Where a record names its layer: after its flow, the first member that is a name (``_names``).
_PACKED_LAYER = re.compile(rb'"layer":"([A-Za-z0-9_][A-Za-z0-9_.\-]{0,199})"')


class _Gone(Exception):
    """An execution a record borrows splits from has no record of the layer."""

    def __init__(self, execution: str) -> None:
        super().__init__(execution)
        self.execution = execution


def _batch_order(name: str) -> tuple[int, int]:
    """A batch name's place in split order (its names sort as text: "1000-1063" before "64-127")."""
    return layout.parse_split_batch(name) or (-1, -1)


def _recorded_status(record: Record, execution: str) -> LayerStatusRecord | None:
    """The status a layer (in ``execution``) carries in its record instead of a status record of its
    own: a layer that ran and finished, its final status (``Record.ran``); a layer reused whole, the
    one it would have written, from where, when and why it was reused (``Record.reused``); None for
    a record carrying neither."""
    if record.ran is not None:
        return record.ran.status(record, execution)
    reused = record.reused
    if reused is None:
        return None
    return LayerStatusRecord(
        record.flow,
        execution,
        record.layer,
        "finished",
        reused.at,
        reused.at,
        splits=record.splits,
        reused=reused.execution,
        why=reused.why,
    )


class ExecutionStore:
    """Reads and writes the records of one execution of one flow in one datastore.

    ``protocols`` serialize and read its values: the datastore's own registry first, then the
    plugins'. Built by ``FlowConfiguration.store``, the one place that knows both.
    """

    def __init__(self, datastore: Datastore, flow: str, execution: str, protocols: Protocols) -> None:
        self.datastore = datastore
        self.flow = flow
        self.execution = execution
        self.protocols = protocols
        self._cache = cache_for(datastore)
        layout.execution(flow, execution)  # validates both names before anything is written
        self._record_keys: dict[str, str] = {}  # layer -> its record's key, validated once
        self._packed: dict[str, str] = {}  # layer -> the record pack holding its record (``write_records``)
        self._packs_read: set[str] = set()  # the names of the record packs read (or written) here
        self._pack_damage: dict[str, IntegrityError] = {}  # a pack's key -> a line of it that is damaged
        self._packs_lock = threading.Lock()  # one reader of new packs at a time (readers run in threads)
        self._indexes: dict[tuple[str, str], tuple[Record, Any]] = {}  # ``_index``: by layer and kind

    # ---- execution ----------------------------------------------------------------------------
    def write_metadata(
        self, *, parameters: str | None = None, dependencies: Mapping[str, tuple[str, ...]] | None = None
    ) -> None:
        """Mark the execution started; ``parameters``: its flow's declared parameters, if any;
        ``dependencies``: each layer's, in plan order (its DAG, for readers without the flow's code)."""
        metadata = ExecutionMetadata(
            self.flow, self.execution, time.time(), parameters, dependencies, packed=True
        )
        self.datastore.write_bytes(layout.execution_metadata(self.flow, self.execution), metadata.dumps())

    def write_status(self, status: ExecutionStatus) -> None:
        self.datastore.write_bytes(layout.execution_status(self.flow, self.execution), status.dumps())

    def status(self) -> ExecutionStatus | None:
        """How the execution's latest run went, or None if none recorded it."""
        found: ExecutionStatus | None = self._read_optional(
            layout.execution_status(self.flow, self.execution), ExecutionStatus.loads, "the status"
        )
        return found

    def write_layer_status(self, status: LayerStatusRecord) -> None:
        self.datastore.write_bytes(
            layout.layer_status(self.flow, self.execution, status.layer), status.dumps()
        )

    def layer_status(self, layer: str) -> LayerStatusRecord | None:
        """How ``layer``'s latest run went, or None if no run of it recorded that. A status record
        of its own reads first; a layer without one may carry its status in its layer record: one
        that ran and finished, its final status (``Record.ran``), one reused whole in a fresh
        execution, where from, when and why (``Record.reused``), read as the status it would have
        written."""
        found = self._stored_layer_status(layer)
        if found is not None:
            return found
        try:
            record = self.record(layer)
        except IntegrityError:  # says nothing of the status: readers of the record report it
            return None
        return _recorded_status(record, self.execution) if record is not None else None

    def layer_state(self, layer: str) -> tuple[LayerStatusRecord | None, Record | None]:
        """``layer_status``, and for a layer with no status record of its own its record (None:
        not finished), each read once; ``IntegrityError`` if either is damaged."""
        found = self._stored_layer_status(layer)
        if found is not None:
            return found, None
        record = self.record(layer)
        return (_recorded_status(record, self.execution) if record is not None else None), record

    def _stored_layer_status(self, layer: str) -> LayerStatusRecord | None:
        key = layout.layer_status(self.flow, self.execution, layer)
        found: LayerStatusRecord | None = self._read_optional(
            key, LayerStatusRecord.loads, f"the status of layer {layer}"
        )
        if found is not None and (found.flow, found.id, found.layer) != (self.flow, self.execution, layer):
            raise self._damaged(
                key,
                f"the status of layer {layer}",
                f"it is that of layer {found.layer} of execution {found.id}",
            )
        return found

    def metadata(self) -> ExecutionMetadata | None:
        """The execution's metadata (when it was created), or None if it does not exist."""
        key = layout.execution_metadata(self.flow, self.execution)
        metadata: ExecutionMetadata | None = self._read_optional(key, ExecutionMetadata.loads, "the metadata")
        if metadata is not None and (metadata.flow, metadata.id) != (self.flow, self.execution):
            raise self._damaged(
                key, "the metadata", f"it is the metadata of execution {metadata.id} of flow {metadata.flow}"
            )
        return metadata

    # ---- checking what is read ----------------------------------------------------------------
    def url(self, key: str) -> str:
        """The full URL of ``key`` in this store's datastore, for messages."""
        return f"{self.datastore.url}/{key}"

    def _damaged(self, key: str, what: str, reason: str) -> IntegrityError:
        url = self.url(key)
        error = IntegrityError(
            f"{what} of execution {self.execution} of flow {self.flow} at {url} is corrupt: {reason}"
        )
        error.url = url
        return error

    def _read_optional(self, key: str, parse: Any, what: str) -> Any:
        """``parse`` of the file at ``key`` (checked, see ``_parse``), or None if there is none."""
        try:
            data = self.datastore.read_bytes(key)
        except FileNotFoundError:
            return None
        return self._parse(key, data, parse, what)

    def _parse(self, key: str, data: bytes, parse: Any, what: str) -> Any:
        """``parse(data)``, a damaged or malformed file raising ``IntegrityError`` naming it."""
        try:
            return parse(data)
        except Malformed as error:
            raise self._damaged(key, what, str(error)) from None

    def _parse_record(self, layer: str, key: str, data: bytes) -> Record:
        origin = Origin(self.flow, self.execution, layer, key)  # of the splits it holds (``Record.held``)
        parse = functools.partial(Record.loads, origin=origin)
        record: Record = self._parse(key, data, parse, f"the record of layer {layer}")
        if (record.flow, record.layer) != (self.flow, layer):
            raise self._damaged(
                key,
                f"the record of layer {layer}",
                f"it is the record of layer {record.layer} of flow {record.flow}",
            )
        return record

    def _parse_batch(self, layer: str, key: str, data: bytes) -> SplitBatch:
        bounds = layout.parse_split_batch(key.rsplit("/", 1)[-1])
        origin = Origin(self.flow, self.execution, layer, key)
        what = f"split batch {key.rsplit('/', 1)[-1]} of layer {layer}"
        batch: SplitBatch = self._parse(key, data, lambda d: SplitBatch.loads(d, origin), what)
        if bounds is not None and any(not bounds[0] <= index <= bounds[1] for index in batch.splits):
            raise self._damaged(key, what, f"it holds splits {sorted(batch.splits)} outside its name's range")
        return batch

    def metadata_exists(self) -> bool:
        return self.datastore.exists(layout.execution_metadata(self.flow, self.execution))

    # ---- writing splits -----------------------------------------------------------------------
    def stage_split(
        self,
        values: Mapping[str, Any],
        shards: Mapping[str, list[Any]],
        *,
        caught: str | None = None,
        on_error: Any = None,
    ) -> SplitRecord:
        """Store a split's artifacts and return its record, which is not written yet.

        Every value is serialized before anything is written; ``on_error(name, error)`` turns a
        serialization failure into the exception to raise (naming layer and attribute). Small values
        stay inline in the record's archives; larger ones are written here, under their hash.
        """
        if not shards and len(values) == 1:  # the common split: one value, no groups to place
            ((name, value),) = values.items()
            validate(name, what="artifact name")
            one = self._stage(name, value, on_error)
            staging.commit(self.datastore, (one,))
            return SplitRecord({name: Archive((one.artifact,))}, caught)
        groups = [(n, [v], False) for n, v in values.items()] + [
            (n, list(v), True) for n, v in shards.items()
        ]
        for name, _, _ in groups:
            validate(name, what="artifact name")
        # Where each group's items start among all of them: no list of a million (name, item) pairs.
        starts = list(itertools.accumulate((len(items) for _, items, _ in groups), initial=0))

        def item(position: int) -> tuple[str, Any]:
            group = bisect.bisect_right(starts, position) - 1
            name, items, _ = groups[group]
            return name, items[position - starts[group]]

        def stage_one(position: int) -> staging.StagedArtifact:
            return self._stage(*item(position), on_error)

        count = starts[-1]
        second_ahead = count > 1 and not staging.surely_small(item(0)[1])
        staged = staging.stage_in_order(count, stage_one, second_ahead=second_ahead)
        entries = iter(staged)
        archives = {
            name: Archive(tuple(next(entries).artifact for _ in items), sharded=sharded)
            for name, items, sharded in groups
        }
        staging.commit(self.datastore, staged)
        return SplitRecord(archives, caught)

    def _stage(self, name: str, item: Any, on_error: Any) -> staging.StagedArtifact:
        """Stage one value of artifact ``name``; a failure to serialize it is ``on_error``'s to name."""
        protocol = self.protocols.for_value(item)
        try:
            return staging.stage(item, datastore=self.datastore, protocol=protocol)
        except Exception as error:
            if on_error is None:
                raise
            raise on_error(name, error) from error

    def write_splits(self, layer: str, records: Mapping[int, SplitRecord]) -> str:
        """Write finished splits' records as one batch; returns the batch's name."""
        return self.store_splits(layer, records)[0]

    def store_splits(self, layer: str, records: Mapping[int, SplitRecord]) -> tuple[str, bytes]:
        """``write_splits``, returning the bytes written too (to join them: ``write_joined``)."""
        name = layout.split_batch_name(min(records), max(records))
        batch = SplitBatch(dict(records))
        key = layout.split_batch(self.flow, self.execution, layer, name)
        data = batch.dumps()
        self.datastore.write_bytes(key, data)
        self._cache.put(key, batch, weight=_weight(batch), written=True)
        return name, data

    def write_joined(self, layer: str, records: Mapping[int, SplitRecord], stored: Iterable[bytes]) -> str:
        """Write the splits of batches ``store_splits`` wrote (``stored``, in split order; ``records``
        their splits) again as one batch, their bytes copied (``SplitBatch.joined``); its name."""
        name = layout.split_batch_name(min(records), max(records))
        key = layout.split_batch(self.flow, self.execution, layer, name)
        self.datastore.write_bytes(key, SplitBatch.joined(stored))
        batch = SplitBatch(dict(records))
        self._cache.put(key, batch, weight=_weight(batch), written=True)
        return name

    def discard_batches(self, layer: str, names: Iterable[str]) -> None:
        """Delete batches of ``layer`` its record no longer names (compacted into another: see
        ``commit``), best effort: one a datastore keeps is garbage ``laminar gc`` deletes."""
        keys = [layout.split_batch(self.flow, self.execution, layer, name) for name in names]
        for key in keys:
            self._cache.forget(key)
        try:
            self.datastore.delete_many(keys)
        except Exception as error:  # nothing reads them: they only take room
            logger.debug("split batches of layer %s are left for laminar gc: %s", layer, error)

    def layer_record(
        self,
        layer: str,
        splits: int,
        *,
        batches: Mapping[str, Runs],
        artifacts: Iterable[str] = (),
        borrowed: Mapping[str, Borrowed] | None = None,
        held: Mapping[int, SplitRecord] | None = None,
        key: str | None = None,
        base: str | None = None,
        outputs: Mapping[str, str] | None = None,
    ) -> Record:
        """The record marking ``layer`` finished, to write with :meth:`write_record`: ``batches`` maps
        each batch name to the runs of split indices in it, ``borrowed`` each execution the other
        splits are read from to theirs, ``held`` is a batch of splits the record holds itself, not in
        a file of its own; ``key`` and ``base`` the reuse key it was computed with, ``outputs`` its
        values summarised (``Record``)."""
        held = dict(held or {})
        if held:  # named as any batch
            batches = {**batches, layout.split_batch_name(min(held), max(held)): runs(held)}
        return Record(
            self.flow,
            layer,
            splits,
            dict(batches),
            tuple(sorted(set(artifacts))),
            dict(borrowed or {}),
            held,
            key,
            base,
            outputs=dict(outputs or {}),
        )

    def hold_record(self, record: Record) -> None:
        """Make ``record`` read in this process as written before it is: kept in the metadata cache,
        never evicted, until :meth:`write_record` wrote it or :meth:`forget_record` dropped it
        (a record written behind, ``laminar._runtime.layer_records``)."""
        self._cache.hold(self.record_key(record.layer), record)

    def write_record(self, record: Record) -> None:
        """Write ``record`` (of its layer, in this execution, from :meth:`layer_record`); one that
        fails to write is forgotten."""
        key = self.record_key(record.layer)
        try:
            self.datastore.write_bytes(key, record.dumps())
        except BaseException:
            self.forget_record(record.layer)
            raise
        self._cache.put(key, record, written=True)

    def write_records(self, written: Sequence[Record]) -> None:
        """Write these records (of layers of this execution, each after those it reads) at once:
        one alone as :meth:`write_record` does, several as one record pack (``layout.record_pack``:
        one file, not a file and a directory a layer), the records' bytes one a line. Each reads as
        if written alone; none is written if the pack is not (each is forgotten)."""
        if len(written) == 1:
            self.write_record(written[0])
            return
        name = layout.record_pack_name(written[0].layer, len(written))
        key = layout.record_pack(self.flow, self.execution, name)
        try:
            self.datastore.write_bytes(key, b"\n".join(record.dumps() for record in written))
        except BaseException:
            for record in written:
                self.forget_record(record.layer)
            raise
        with self._packs_lock:
            for record in written:
                self._packed[record.layer] = key
                self._cache.put(self.record_key(record.layer), record, written=True)
            self._packs_read.add(name)

    def forget_record(self, layer: str) -> None:
        """Drop what this process holds of ``layer``'s record: it was not written after all."""
        self._cache.unhold(self.record_key(layer))
        self._forget_record(layer)

    # ---- reading ------------------------------------------------------------------------------
    def record(self, layer: str) -> Record | None:
        """The layer's record; None if it has none (not finished); ``IntegrityError`` if it is damaged.
        Its ``record.json`` reads first, then the record packs (listed again when it is in none read)."""
        key = self.record_key(layer)
        found: Record | None = self._cache.held_value(key)  # a record written behind, in flight
        if found is None:
            found = self._cache.get(key)
        if found is not None:
            return found
        try:
            data = self.datastore.read_bytes(key)
        except FileNotFoundError:
            return self._packed_record(layer)
        found = self._parse_record(layer, key, data)
        self._cache.put(key, found)
        return found

    def _packed_record(self, layer: str) -> Record | None:
        """``layer``'s record from the record pack holding it; None if no pack does, unless a pack
        has a damaged line (which may be that record): ``IntegrityError`` then."""
        if layer not in self._packed:
            self._read_new_packs()
        pack = self._packed.get(layer)
        if pack is None:
            if self._pack_damage:
                raise next(iter(self._pack_damage.values()))
            return None
        records: dict[str, Record] | None = self._cache.get(pack)
        found = (records if records is not None else self._read_pack(pack)).get(layer)
        if found is None:  # the pack was read here before, and holds it no more: set aside meanwhile
            raise self._damaged(pack, f"the record of layer {layer}", "its record pack changed since read")
        self._cache.put(self.record_key(layer), found)  # (its record.json was just found missing)
        return found

    def _read_new_packs(self) -> None:
        """Read the record packs this store has not read yet (a thread asking meanwhile waits, and
        finds what this one read: none reads a layer as in no pack while its pack is being read).
        One after another, not on the datastore's I/O threads: readers of records run there (gc),
        and would wait for this lock with every one of them taken."""
        with self._packs_lock:
            listed = self.datastore.list_prefix(layout.record_packs(self.flow, self.execution))
            new = [name for name in listed if name not in self._packs_read and layout.parse_record_pack(name)]
            for name in new:
                key = layout.record_pack(self.flow, self.execution, name)
                for held in self._read_pack(key):
                    self._packed.setdefault(held, key)
            self._packs_read.update(new)

    def _read_pack(self, key: str) -> dict[str, Record]:
        """The records of the pack at ``key`` by layer (cached as the pack's, not as each layer's:
        a layer's record.json reads first), its damaged lines noted (``_pack_damage``); empty if it
        is gone."""
        try:
            data = self.datastore.read_bytes(key)
        except FileNotFoundError:
            return {}
        found: dict[str, Record] = {}
        name = key.rsplit("/", 1)[-1]
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():  # (a line end a tool added)
                continue
            what = f"line {number} of record pack {name}"
            named = _PACKED_LAYER.search(line)  # the layer its record names first (flow, then layer)
            layer = named[1].decode() if named is not None else ""
            try:
                record = Record.loads(line, Origin(self.flow, self.execution, layer, key))
            except Malformed as error:
                self._pack_damage.setdefault(key, self._damaged(key, what, str(error)))
                continue
            if (record.flow, record.layer) != (self.flow, layer) or layer in found:
                self._pack_damage.setdefault(
                    key,
                    self._damaged(key, what, f"it is a record of layer {record.layer} of flow {record.flow}"),
                )
                continue
            found[layer] = record
        count = layout.parse_record_pack(name)
        if count is not None and len(found) + (key in self._pack_damage) < count[1]:
            self._pack_damage.setdefault(
                key, self._damaged(key, f"record pack {name}", f"it holds fewer than {count[1]} records")
            )
        self._cache.put(key, found, weight=len(found) or 1)
        return found

    def layer_names(self) -> list[str]:
        """The layers of this execution with anything stored: a directory of their own, or a record
        in a record pack; sorted."""
        listed = self.datastore.list_prefix(layout.layers(self.flow, self.execution))
        self._read_new_packs()
        return sorted({name for name in listed if is_valid(name)} | set(self._packed))

    def damaged_packs(self) -> list[IntegrityError]:
        """What is damaged in the record packs read so far (a line each at most), by pack."""
        return list(self._pack_damage.values())

    def record_location(self, layer: str) -> str:
        """The key ``layer``'s record is read from: its ``record.json`` where it has one (or none is
        found anywhere), else the record pack holding it (or a damaged one, which may)."""
        key = self.record_key(layer)
        if self.datastore.exists(key):
            return key
        pack = self.record_pack_of(layer)
        if pack is None and self._pack_damage:
            pack = next(iter(self._pack_damage))
        return key if pack is None else pack

    def record_pack_of(self, layer: str) -> str | None:
        """The key of the record pack holding a record of ``layer`` (read if its record.json is
        missing, else shadowed by it), or None."""
        if layer not in self._packed:
            self._read_new_packs()
        return self._packed.get(layer)

    def is_record_pack(self, key: str) -> bool:
        """Whether ``key`` is that of a record pack of this execution."""
        prefix = layout.record_packs(self.flow, self.execution)
        return key.startswith(prefix) and layout.parse_record_pack(key[len(prefix) :]) is not None

    def unpack(self, pack: str, leaving: Collection[str]) -> None:
        """Write each record of the pack at ``pack`` as a ``record.json`` of its own but those of the
        layers in ``leaving``, so the pack can be set aside (``laminar verify --repair``) and only
        those layers read as not finished."""
        for layer, record in self._read_pack(pack).items():
            if layer not in leaving and not self.datastore.exists(self.record_key(layer)):
                self.write_record(record)

    def record_key(self, layer: str) -> str:
        """Where the record of ``layer`` is (or would be) stored: each layer's built (and its name
        checked) once, not each time a record written behind is held, given its status and written."""
        key = self._record_keys.get(layer)
        if key is None:
            key = self._record_keys[layer] = layout.record(self.flow, self.execution, layer)
        return key

    def batch_names(self, layer: str) -> list[str]:
        """The layer's split batches: from its record once finished, else from one listing."""
        record = self.record(layer)
        return list(record.batches) if record is not None else self._listed_batch_names(layer)

    def _listed_batch_names(self, layer: str) -> list[str]:
        listed = self.datastore.list_prefix(layout.splits(self.flow, self.execution, layer))
        return [name for name in listed if layout.parse_split_batch(name) is not None]

    def _locator(self, layer: str) -> _Locator:
        record = self.record(layer)
        if record is None:  # still running: batches may appear, so look again each time
            return _Locator.from_names(self._listed_batch_names(layer))
        locator: _Locator = self._index(layer, record, "locator", _Locator.from_record)
        return locator

    def _index(self, layer: str, record: Record, kind: str, build: Callable[[Record], Any]) -> Any:
        """What ``build`` derives from a finished layer's ``record`` (where its splits are), kept on
        this store beside the record it came from, not in the bounded cache: a pass over more batches
        than the cache holds asks for it at every window, and putting it back there each time a
        batch had pushed it out pushed out in turn the batch the last window read last, which the
        next window begins with (read again: a test's count of reads caught it now and then)."""
        known = self._indexes.get((layer, kind))
        if known is None or known[0] is not record:
            known = self._indexes[(layer, kind)] = (record, build(record))
        return known[1]

    def _batches(self, layer: str, names: Iterable[str]) -> list[SplitBatch]:
        """Read these batches of ``layer``, the uncached ones in parallel, and cache those in order."""
        keys = [layout.split_batch(self.flow, self.execution, layer, name) for name in names]
        record = self.record(layer)
        held = record.held_batch if record is not None else None
        found: list[SplitBatch | None] = [
            record.held_splits if record is not None and name == held else self._cache.get(key)
            for name, key in zip(names, keys, strict=True)
        ]
        unread = [key for key, batch in zip(keys, found, strict=True) if batch is None]
        if unread:

            def read(key: str) -> SplitBatch:
                try:
                    data = self.datastore.read_bytes(key)
                except FileNotFoundError:
                    raise self._damaged(
                        key, f"split batch {key.rsplit('/', 1)[-1]} of layer {layer}", "it is missing"
                    ) from None
                return self._parse_batch(layer, key, data)

            fetched = dict(zip(unread, self.datastore.map_parallel(read, unread), strict=True))
            for key in unread:  # in the order asked, not as the reads happened to end
                self._cache.put(key, fetched[key], weight=_weight(fetched[key]))
            found = [
                batch if batch is not None else fetched[key] for key, batch in zip(keys, found, strict=True)
            ]
        return [batch for batch in found if batch is not None]

    def read_batch(self, layer: str, name: str) -> SplitBatch | None:
        """One batch, read afresh (not from the cache), or the one the layer's record holds itself
        (``Record.held``), or None if it does not exist."""
        key = layout.split_batch(self.flow, self.execution, layer, name)
        try:
            data = self.datastore.read_bytes(key)
        except FileNotFoundError:
            record = self.record(layer)
            return record.held_splits if record is not None and record.held_batch == name else None
        return self._parse_batch(layer, key, data)

    def split_records(self, layer: str, indices: Iterable[int]) -> list[SplitRecord | None]:
        """The records of these splits (None for a split that has not finished), in that order,
        read from the executions a reused layer borrows them from where its record says so."""
        indices = list(indices)
        lent = self.lent(layer)
        if lent is None:
            return self.own_split_records(layer, indices)
        try:
            return self._borrowed_records(layer, lent, indices)
        except _Gone:  # this process read the record before gc copied the splits in: read it again
            self._forget_record(layer)
            lent = self.lent(layer)
            if lent is None:
                return self.own_split_records(layer, indices)
            try:
                return self._borrowed_records(layer, lent, indices)
            except _Gone as gone:
                key = self.record_key(layer)
                raise self._damaged(
                    key,
                    f"the record of layer {layer}",
                    f"it reuses splits of execution {gone.execution}, which has no record of layer {layer} "
                    "any more (deleted other than by laminar gc, or set aside by laminar verify --repair)",
                ) from None

    def lent(self, layer: str) -> borrowing.Lent | None:
        """Where the splits a finished layer borrows are stored, or None if it holds all its own."""
        record = self.record(layer)
        if record is None or not record.borrowed:
            return None
        lent: borrowing.Lent = self._index(layer, record, "lent", borrowing.Lent)
        return lent

    def _forget_record(self, layer: str) -> None:
        self._cache.forget(self.record_key(layer))
        for kind in ("locator", "lent"):
            self._indexes.pop((layer, kind), None)

    def _borrowed_records(
        self, layer: str, lent: borrowing.Lent, indices: list[int]
    ) -> list[SplitRecord | None]:
        found: list[SplitRecord | None] = [None] * len(indices)
        own: list[int] = []
        lenders: dict[str, list[tuple[int, int]]] = {}  # execution -> (position here, index there)
        for position, index in enumerate(indices):
            place = lent.find(index)
            if place is None:
                own.append(position)
            else:
                lenders.setdefault(place[0], []).append((position, place[1]))
        if own:
            records = self.own_split_records(layer, [indices[position] for position in own])
            for position, split in zip(own, records, strict=True):
                found[position] = split
        for execution, pairs in lenders.items():
            lender = ExecutionStore(self.datastore, self.flow, execution, self.protocols)
            if lender.record(layer) is None:
                raise _Gone(execution)
            records = lender.own_split_records(layer, [there for _, there in pairs])
            for (position, _), split in zip(pairs, records, strict=True):
                found[position] = split
        return found

    def own_split_records(self, layer: str, indices: Iterable[int]) -> list[SplitRecord | None]:
        """The records of these splits held in this execution's own batches (not borrowed ones)."""
        indices = list(indices)
        locator = self._locator(layer)
        candidates = [locator.candidates(index) for index in indices]
        # In split order, so the batch that runs on into the next window is cached last (and kept).
        wanted = sorted({name for names in candidates for name in names}, key=_batch_order)
        batches = dict(zip(wanted, self._batches(layer, wanted), strict=True))
        found: list[SplitRecord | None] = []
        for index, names in zip(indices, candidates, strict=True):
            record = None
            for name in names:
                record = batches[name].splits.get(index)
                if record is not None:
                    break
            found.append(record)
        return found

    def split_record(self, layer: str, index: int) -> SplitRecord | None:
        record = self.record(layer)  # (what split_records reads first too)
        held = record.held.get(index) if record is not None else None
        if held is not None:  # the layer's record holds the split itself (a one-split layer's does)
            return held
        return self.split_records(layer, [index])[0]

    def archive(self, layer: str, index: int, name: str) -> Archive | None:
        record = self.split_record(layer, index)
        return record.archives.get(name) if record is not None else None

    def archives(self, layer: str, indices: range, name: str) -> list[Archive | None]:
        """The archives of ``name`` in these splits, reading the batches that hold them at once."""
        return [
            record.archives.get(name) if record is not None else None
            for record in self.split_records(layer, indices)
        ]

    def artifact_names(self, layer: str) -> list[str]:
        """Names any split of ``layer`` stored: from its record, or from its batches while it runs."""
        record = self.record(layer)
        if record is not None:
            return list(record.artifacts)
        names: set[str] = set()
        for batch in self._batches(layer, self._listed_batch_names(layer)):
            for split in batch.splits.values():
                names.update(split.archives)
        return sorted(names)

    def finished_batches(self, layer: str) -> dict[str, SplitBatch]:
        """The layer's own split batches by name, from its record or one listing (not those of the
        executions it borrows splits from: ``finished_splits`` reads those too)."""
        names = self.batch_names(layer)
        return dict(zip(names, self._batches(layer, names), strict=True))

    def batch_splits(self, layer: str, names: Iterable[str]) -> dict[int, SplitRecord]:
        """The splits in these batches of ``layer``, as cached when written (else read), whether or
        not its record is written: what its record will summarise (``Record.outputs``)."""
        found: dict[int, SplitRecord] = {}
        names = list(names)
        keys = [layout.split_batch(self.flow, self.execution, layer, name) for name in names]
        cached = [self._cache.held_value(key) or self._cache.get(key) for key in keys]
        unread = [key for key, batch in zip(keys, cached, strict=True) if batch is None]
        read = dict(
            zip(
                unread,
                self.datastore.map_parallel(
                    lambda key: self._parse_batch(layer, key, self.datastore.read_bytes(key)), unread
                ),
                strict=True,
            )
        )
        for key, batch in zip(keys, cached, strict=True):
            found.update((batch if batch is not None else read[key]).splits)
        return found

    def finished_splits(self, layer: str) -> dict[int, SplitRecord]:
        """The layer's finished splits and their records, those it borrows included."""
        found: dict[int, SplitRecord] = {}
        for batch in self.finished_batches(layer).values():
            found.update(batch.splits)
        lent = self.lent(layer)
        if lent is not None:
            indices = list(lent.indices())
            found.update(
                (index, split)
                for index, split in zip(indices, self.split_records(layer, indices), strict=True)
                if split is not None
            )
        return found

    def load(self, artifact: Artifact) -> Any:
        return loading.load(self.datastore, artifact, protocols=self.protocols)

    def load_many(self, items: list[Artifact]) -> list[Any]:
        """Load several artifacts, several at once where that pays (``loading.load_many``)."""
        return loading.load_many(self.datastore, items, protocols=self.protocols)
