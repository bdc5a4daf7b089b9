"""A foreach whose splits took many group-commit batches is compacted when it ends: its record names
one batch, the batches it supersedes are deleted, a rerun reads one object for it, and a crash, gc and
verify all keep the truth (``laminar._runtime.commit``). Counted in reads and files, never timed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import commit
from laminar._storage import gc, layout, verification
from laminar._storage.records import Archive, Artifact, Record, SplitBatch, SplitRecord
from laminar._storage.store import ExecutionStore
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter

from tests.helpers import EXECUTORS, CountingLocal, append, lines

SPLITS = 100
BIG = 7  # the split that stores a value outside its record


class Compacted(Flow): ...


@Compacted.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Compacted.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Double(Layer):
    def __call__(self, items: Items, parameters: Parameters) -> None:
        append(parameters.log, str(items.item))  # which splits ran, in any process
        self.value = items.item * 2
        if items.item == BIG:
            self.big = random.Random(BIG).randbytes(4096)  # stored under artifacts/, not inline


@Compacted.register
class Sum(Layer):
    def __call__(self, double: Double) -> None:
        self.total = sum(double.value)


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of at most 8 splits, handed over one at a time: a foreach of 100 takes several
    batches, as a long one takes many; compacted from two."""
    monkeypatch.setattr(commit, "LIMIT", 8)
    monkeypatch.setattr(commit, "COMPACT_FROM", 1)
    monkeypatch.setenv("LAMINAR_BATCH_SECONDS", "0")


def _batches(root: Path, execution: str) -> list[str]:
    directory = root / layout.splits("Compacted", execution, "Double")
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def _run(root: Path, log: Path, executor: Any = executors.Thread, **options: Any) -> Any:
    flow = Compacted(datastore=CountingLocal(root), executor=executor(concurrency=1))
    return flow(n=SPLITS, log=str(log), **options)


def _ran(log: Path) -> list[int]:
    return sorted(int(line) for line in lines(log))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_foreach_of_many_batches_is_named_by_one_batch_and_the_others_are_deleted(
    tmp_path: Path, executor: Any
) -> None:
    execution = _run(tmp_path, tmp_path / "ran.log", executor)
    datastore = execution.flow.configuration.datastore
    written = [key for key in datastore.writes if "/Double/splits/" in key]
    assert len(written) > commit.COMPACT_FROM + 1  # many batches, then the compacted one
    record = execution.store.record("Double")
    assert record.batches == {f"0-{SPLITS - 1}.json": ((0, SPLITS - 1),)}
    assert _batches(tmp_path, execution.id) == [f"0-{SPLITS - 1}.json"]  # the superseded ones went
    assert list(execution.layer(Double).value) == [2 * n for n in range(SPLITS)]
    assert execution.layer(Sum).total == sum(2 * n for n in range(SPLITS))


def test_a_rerun_with_reuse_reads_one_batch_of_the_foreach(tmp_path: Path) -> None:
    first = _run(tmp_path, tmp_path / "ran.log", reuse=True)
    rerun = _run(tmp_path, tmp_path / "ran.log", reuse=True)
    assert rerun.store.layer_status("Double").reused == first.id
    read = rerun.flow.configuration.datastore.reads
    assert [key for key in read if "/Double/splits/" in key] == [
        layout.split_batch("Compacted", first.id, "Double", f"0-{SPLITS - 1}.json")
    ]
    assert _ran(tmp_path / "ran.log") == list(range(SPLITS))  # the rerun ran no split
    assert rerun.layer(Sum).total == sum(2 * n for n in range(SPLITS))


def test_a_layer_of_more_archives_than_a_compacted_batch_holds_keeps_its_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "COMPACT_LIMIT", SPLITS - 1)  # a split stores one archive
    execution = _run(tmp_path, tmp_path / "ran.log")
    names = _batches(tmp_path, execution.id)
    assert len(names) > commit.COMPACT_FROM
    assert sorted(execution.store.record("Double").batches) == names
    assert list(execution.layer(Double).value) == [2 * n for n in range(SPLITS)]


def test_a_compacted_batch_that_cannot_be_written_leaves_the_record_naming_the_batches_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: ExecutionStore, layer: str, records: Any, stored: Any) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(ExecutionStore, "write_joined", failing)
    execution = _run(tmp_path, tmp_path / "ran.log")
    names = _batches(tmp_path, execution.id)
    assert len(names) > commit.COMPACT_FROM and f"0-{SPLITS - 1}.json" not in names
    assert sorted(execution.store.record("Double").batches) == names
    assert execution.layer(Sum).total == sum(2 * n for n in range(SPLITS))


def test_a_crash_between_the_compacted_batch_and_the_layer_record_resumes_with_no_split_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_record, write_records = ExecutionStore.write_record, ExecutionStore.write_records

    def dying(self: ExecutionStore, record: Record) -> None:
        if record.layer == "Double":
            raise OSError("the scheduler died here")
        write_record(self, record)

    def dying_together(self: ExecutionStore, written: Sequence[Record]) -> None:
        """Double's record in a record pack: the scheduler dies before that pack is written."""
        if any(record.layer == "Double" for record in written):
            raise OSError("the scheduler died here")
        write_records(self, written)

    log = tmp_path / "ran.log"
    monkeypatch.setattr(ExecutionStore, "write_record", dying)
    monkeypatch.setattr(ExecutionStore, "write_records", dying_together)
    with pytest.raises(OSError, match="the scheduler died here"):
        _run(tmp_path, log, execution="crashed")
    left = _batches(tmp_path, "crashed")
    assert f"0-{SPLITS - 1}.json" in left and len(left) > commit.COMPACT_FROM + 1  # both are there
    monkeypatch.setattr(ExecutionStore, "write_record", write_record)
    monkeypatch.setattr(ExecutionStore, "write_records", write_records)

    flow = Compacted(datastore=CountingLocal(tmp_path), executor=executors.Thread())
    execution = flow.execution("crashed")
    gc.collect(flow.configuration.datastore)  # the layer has no record: its batches are all kept
    assert _batches(tmp_path, "crashed") == left
    execution.resume()
    assert _ran(log) == list(range(SPLITS))  # each split ran once: none again on resume
    record = execution.store.record("Double")
    assert record is not None and record.batches == {f"0-{SPLITS - 1}.json": ((0, SPLITS - 1),)}
    assert _batches(tmp_path, "crashed") == [f"0-{SPLITS - 1}.json"]
    assert execution.layer(Sum).total == sum(2 * n for n in range(SPLITS))


def _left_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A run that died after the compacted layer's record, before deleting the batches it superseded."""
    monkeypatch.setattr(ExecutionStore, "discard_batches", lambda self, layer, names: None)
    execution = _run(tmp_path, tmp_path / "ran.log")
    assert len(_batches(tmp_path, execution.id)) > commit.COMPACT_FROM + 1  # those it superseded too
    monkeypatch.undo()
    return execution


def test_gc_deletes_the_batches_a_finished_layer_does_not_name_and_keeps_the_one_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = _left_over(tmp_path, monkeypatch)
    result = gc.collect(datastores.Local(tmp_path))
    assert result.deleted_executions == [] and result.deleted_blobs == []
    assert _batches(tmp_path, execution.id) == [f"0-{SPLITS - 1}.json"]
    reopened = Compacted(datastore=datastores.Local(tmp_path)).execution(execution.id)
    assert list(reopened.layer(Double).value) == [2 * n for n in range(SPLITS)]
    assert verification.verify(reopened.store, list(reopened.flow.plan.order)).findings == []


def test_verify_is_clean_beside_superseded_batches_and_finds_damage_in_the_compacted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = _left_over(tmp_path, monkeypatch)
    layers = list(execution.flow.plan.order)
    store = Compacted(datastore=datastores.Local(tmp_path)).execution(execution.id).store
    assert verification.verify(store, layers).findings == []
    compacted = tmp_path / layout.split_batch("Compacted", execution.id, "Double", f"0-{SPLITS - 1}.json")
    compacted.write_bytes(compacted.read_bytes().replace(b'"value"', b'"valve"', 1))
    store = Compacted(datastore=datastores.Local(tmp_path)).execution(execution.id).store
    findings = verification.verify(store, layers).findings
    assert [(f.layer, f.problem, f.kind, f.batch) for f in findings] == [
        ("Double", verification.DAMAGED, verification.BATCH, f"0-{SPLITS - 1}.json")
    ]


def test_a_store_whose_record_names_many_batches_still_reads_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As written before compaction existed: the rerun reads each batch the record names."""
    monkeypatch.setattr(commit, "COMPACT_FROM", 10**9)
    first = _run(tmp_path, tmp_path / "ran.log", reuse=True)
    named = first.store.record("Double").batches
    assert len(named) > 1  # several, as the code before compaction wrote them
    monkeypatch.setattr(commit, "COMPACT_FROM", 1)
    rerun = _run(tmp_path, tmp_path / "ran.log", reuse=True)
    assert rerun.store.layer_status("Double").reused == first.id
    read = {key for key in rerun.flow.configuration.datastore.reads if "/Double/splits/" in key}
    assert read == {layout.split_batch("Compacted", first.id, "Double", name) for name in named}
    assert _ran(tmp_path / "ran.log") == list(range(SPLITS))
    assert list(rerun.layer(Double).value) == [2 * n for n in range(SPLITS)]


def test_repair_sets_superseded_batches_aside_with_the_compacted_one_so_its_splits_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = _left_over(tmp_path, monkeypatch)
    (value,) = execution.store.archive("Double", BIG, "big").artifacts
    (tmp_path / layout.artifact(value.hexdigest)).write_bytes(b"damaged")
    flow = Compacted(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    store = flow.execution(execution.id).store
    found = verification.verify(store, list(flow.plan.order))
    assert [(f.layer, f.kind, f.batch) for f in found.findings] == [
        ("Double", verification.VALUE, f"0-{SPLITS - 1}.json")
    ]
    verification.repair(store, found, list(flow.plan.order), flow.plan.dependencies)
    assert _batches(tmp_path, execution.id) == []  # the superseded ones too: they name the value
    flow.execution(execution.id).resume()
    assert _ran(tmp_path / "ran.log") == sorted([*range(SPLITS), *range(SPLITS)])  # all ran again
    assert flow.execution(execution.id).layer(Double).big[BIG] == random.Random(BIG).randbytes(4096)


def _records(first: int, last: int) -> dict[int, SplitRecord]:
    return {
        index: SplitRecord({"value": Archive((Artifact(f"{index:064x}", inline=b"%d" % index, size=1),))})
        for index in range(first, last + 1)
    }


def test_batches_joined_as_written_are_the_batch_of_all_their_splits() -> None:
    parts = [_records(0, 9), _records(10, 10), _records(11, 30)]
    whole = {index: split for part in parts for index, split in part.items()}
    joined = SplitBatch.joined([SplitBatch(part).dumps() for part in parts])
    assert joined == SplitBatch(whole).dumps()  # the bytes dumps writes, not encoded again
    interleaved = [{**_records(0, 3), **_records(8, 9)}, _records(4, 7)]  # splits finished out of order
    read = SplitBatch.loads(SplitBatch.joined([SplitBatch(part).dumps() for part in interleaved]))
    assert read == SplitBatch(_records(0, 9))
    with pytest.raises(ValueError, match=r"not a split batch as SplitBatch\.dumps writes it"):
        SplitBatch.joined([Record("F", "L", 1).dumps()])
