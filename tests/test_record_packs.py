"""The records of layers that finish together are written as one file, a record pack (issue 29, item 3).

A chain of quick layers hands its records to the records thread faster than a file (and a directory)
a layer can be written: the records queued when the thread writes are written as one pack, one
record a line, each line the bytes a ``record.json`` would hold. Every reader reads a packed record
as it reads a record file (a layer's ``record.json``, should one be there, reads first); a damaged
line is reported with the pack's URL and line, the other lines still read; ``laminar verify --repair``
sets a pack aside only after writing its healthy records as files of their own; ``laminar gc``
counts what packed records reference, and deletes nothing when a pack is damaged; an older release
refuses the execution (its metadata is of layout 5) rather than miss its packed records. Files,
lines and calls are counted, never timed.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar._storage import gc, layout, records, verification
from laminar.configurations import datastores, executors
from laminar.errors import DatastoreError, IntegrityError

LENGTH = 12
BLOB = random.Random(0).randbytes(1 << 18)  # incompressible: stored as a file of its own
called: list[str] = []  # the layers run, in order


class Packed(Flow): ...


def _step(number: int, upstream: type[Layer] | None) -> type[Layer]:
    def first(self: Any) -> None:
        called.append(type(self).__name__)
        self.carried = [0]
        self.blob = BLOB  # stored as a blob of its own, not inline

    def after(self: Any, before: Any) -> None:
        called.append(type(self).__name__)
        if type(self).__name__ in Packed.failing:
            raise RuntimeError(f"{type(self).__name__} fails")
        self.carried = [*before.carried, number]

    after.__annotations__ = {"before": upstream, "return": None}
    return type(f"Step{number}", (Layer,), {"__call__": first if upstream is None else after})


Packed.failing: set[str] = set()  # type: ignore[attr-defined]
_previous: type[Layer] | None = None
for _number in range(LENGTH):
    _previous = Packed.register(_step(_number, _previous))
LAST = f"Step{LENGTH - 1}"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    called.clear()
    Packed.failing = set()  # type: ignore[attr-defined]
    # Records written when the run ends (or something waits for one), never on their timer, nor for
    # a layer's status (none runs long enough to have a "running" one written): the whole chain's
    # records are queued together however slow the machine is.
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 3600.0)


def _run(root: Path, execution: str = "e", *, resume: bool = False) -> Any:
    flow = Packed(datastore=datastores.Local(root), executor=executors.Thread())
    if resume:
        return flow.execution(execution).resume()
    return flow(execution=execution)


def _reader(root: Path) -> Any:
    """The execution, read by a flow with a datastore of its own: nothing cached by the run."""
    return Packed(datastore=datastores.Local(root)).execution("e")


def _record_files(root: Path) -> list[Path]:
    """The chain's layers' record files (the Parameters layer's is written as the run starts)."""
    execution = root / layout.execution("Packed", "e")
    return sorted(path for path in execution.glob("layers/*/record.json") if path.parent.name != "Parameters")


def _packs(root: Path) -> list[Path]:
    return sorted((root / layout.record_packs("Packed", "e")).glob("*.jsonl"))


def test_a_chain_of_quick_layers_writes_its_records_as_one_file_and_every_reader_reads_them(
    tmp_path: Path,
) -> None:
    _run(tmp_path)
    packs = _packs(tmp_path)
    assert [path.name for path in packs] == [f"Step0.{LENGTH}.jsonl"]
    lines = packs[0].read_bytes().split(b"\n")
    assert len(lines) == LENGTH
    layers = [records.Record.loads(line).layer for line in lines]
    assert layers == [f"Step{number}" for number in range(LENGTH)]  # in the order they finished
    # Each line is the bytes the layer's record file would hold; none of them has a file or directory.
    assert all(records.Record.loads(line).dumps() == line for line in lines)
    assert _record_files(tmp_path) == []
    assert not (tmp_path / layout.layers("Packed", "e")).joinpath("Step3").exists()

    execution = _reader(tmp_path)
    assert execution.layer(LAST).carried == list(range(LENGTH))
    assert execution.status.status == "succeeded"
    assert {name: layer.status for name, layer in execution.status.layers.items()} == {
        f"Step{number}": "finished" for number in range(LENGTH)
    }
    listed = [layer.name for layer in datastores.Local(tmp_path).list_layers(execution=execution)]
    assert listed == sorted(f"Step{number}" for number in range(LENGTH))


def test_an_execution_with_record_packs_is_refused_by_a_reader_of_the_layouts_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path)
    metadata = tmp_path / layout.execution_metadata("Packed", "e")
    assert records.ExecutionMetadata.loads(metadata.read_bytes()).packed
    monkeypatch.setattr(records, "LAYOUTS", (2, 3, 4))  # the releases before record packs
    with pytest.raises(DatastoreError, match="written in Laminar storage layout 5"):
        records.ExecutionMetadata.loads(metadata.read_bytes())


def test_no_more_records_than_the_bound_are_packed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "PACK", 5)
    _run(tmp_path)
    assert [path.name for path in _packs(tmp_path)] == ["Step0.5.jsonl", "Step10.2.jsonl", "Step5.5.jsonl"]
    assert _reader(tmp_path).layer(LAST).carried == list(range(LENGTH))


def test_a_resume_keeps_every_packed_record_and_runs_only_what_has_none(tmp_path: Path) -> None:
    Packed.failing = {"Step7"}  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="Step7 fails"):
        _run(tmp_path)
    (pack,) = _packs(tmp_path)
    assert pack.name == "Step0.7.jsonl"
    Packed.failing = set()  # type: ignore[attr-defined]
    called.clear()
    _run(tmp_path, resume=True)
    assert called == [f"Step{number}" for number in range(7, LENGTH)]
    assert _reader(tmp_path).layer(LAST).carried == list(range(LENGTH))


def test_a_layer_s_record_file_reads_before_the_pack_holding_its_record(tmp_path: Path) -> None:
    _run(tmp_path)
    (pack,) = _packs(tmp_path)
    lines = pack.read_bytes().split(b"\n")
    file = tmp_path / layout.record("Packed", "e", "Step3")
    file.parent.mkdir(parents=True)
    file.write_bytes(lines[3])
    lines[3] = lines[3].replace(b'"splits":1', b'"splits":2')  # damaged: its checksum fails
    pack.write_bytes(b"\n".join(lines))
    assert _reader(tmp_path).layer("Step3").carried == [0, 1, 2, 3]  # from the file, not the pack


def _damage_line(pack: Path, number: int) -> None:
    lines = pack.read_bytes().split(b"\n")
    lines[number] = lines[number].replace(b'"splits":1', b'"splits":9')
    pack.write_bytes(b"\n".join(lines))


def test_a_damaged_line_of_a_pack_is_named_and_the_other_lines_still_read(tmp_path: Path) -> None:
    _run(tmp_path)
    (pack,) = _packs(tmp_path)
    _damage_line(pack, 5)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    execution = _reader(tmp_path)
    assert execution.layer("Step4").carried == [0, 1, 2, 3, 4]
    with pytest.raises(IntegrityError, match=r"line 6 of record pack Step0\.12\.jsonl") as raised:
        execution.layer("Step5").carried  # noqa: B018
    assert pack.as_uri() in str(raised.value) or str(pack) in str(raised.value)
    assert "bytes do not match its checksum" in str(raised.value)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_verify_names_a_damaged_pack_and_repair_sets_aside_only_what_it_must(tmp_path: Path) -> None:
    _run(tmp_path)
    (pack,) = _packs(tmp_path)
    _damage_line(pack, 5)
    flow = Packed(datastore=datastores.Local(tmp_path))
    store = flow.execution("e").store
    order, dependencies = list(flow.plan.order), flow.plan.dependencies
    found = verification.verify(store, order)
    damaged = [finding for finding in found.findings if finding.kind == verification.RECORD]
    assert [finding.layer for finding in damaged] == ["Step5"]
    assert damaged[0].key == layout.record_pack("Packed", "e", pack.name)
    assert damaged[0].url.endswith(damaged[0].key) and "checksum" in damaged[0].reason

    repaired = verification.repair(store, found, order, dependencies)
    assert repaired.marked == ["Step5"]  # its values are intact: the layers after it keep theirs
    assert not pack.exists()  # set aside, under repaired/<time>/
    assert list(tmp_path.glob(f"{layout.execution('Packed', 'e')}repaired/*/records/{pack.name}"))
    kept = sorted(path.parent.name for path in _record_files(tmp_path))
    assert kept == sorted(f"Step{n}" for n in range(LENGTH) if n != 5)  # healthy: files of their own

    called.clear()
    _run(tmp_path, resume=True)
    assert called == ["Step5"]
    assert _reader(tmp_path).layer(LAST).carried == list(range(LENGTH))
    assert verification.verify(
        Packed(datastore=datastores.Local(tmp_path)).execution("e").store, order
    ).intact


def test_gc_keeps_what_packed_records_reference_and_deletes_a_pack_with_its_execution(
    tmp_path: Path,
) -> None:
    _run(tmp_path, "old")
    _run(tmp_path, "kept")  # the newer: kept by keep_last=1
    blobs = sorted(tmp_path.glob("artifacts/*/*"))
    assert blobs  # Step0's blob, shared by both executions
    gc.collect(datastores.Local(tmp_path), keep_last=1)
    assert sorted(tmp_path.glob("artifacts/*/*")) == blobs  # referenced by the kept execution's pack only
    assert not (tmp_path / layout.execution("Packed", "old")).exists()
    assert Packed(datastore=datastores.Local(tmp_path)).execution("kept").layer("Step0").blob == BLOB


def test_gc_deletes_nothing_when_a_kept_execution_s_pack_is_damaged(tmp_path: Path) -> None:
    _run(tmp_path, "old")
    _run(tmp_path, "kept")
    (pack,) = sorted((tmp_path / layout.record_packs("Packed", "kept")).glob("*.jsonl"))
    _damage_line(pack, 0)
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    with pytest.raises(records.Malformed, match="nothing was deleted"):
        gc.collect(datastores.Local(tmp_path), keep_last=1)
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_a_pack_that_cannot_be_written_fails_the_run_and_none_of_its_records_lands(
    tmp_path: Path,
) -> None:
    class Refusing(datastores.Local):
        def write_bytes(self, key: str, data: bytes) -> None:
            if "/records/" in key:
                raise OSError("the disk is full")
            super().write_bytes(key, data)

    flow = Packed(datastore=Refusing(tmp_path), executor=executors.Thread())
    with pytest.raises(Exception, match="the disk is full"):
        flow(execution="e")
    assert _packs(tmp_path) == [] and _record_files(tmp_path) == []
    execution = _reader(tmp_path)
    assert execution.status.status == "failed"
    assert all(layer.status != "finished" for layer in execution.status.layers.values())
    called.clear()
    _run(tmp_path, resume=True)
    assert called == [f"Step{number}" for number in range(LENGTH)]


def test_laminar_ui_lists_the_layers_whose_records_are_packed(tmp_path: Path) -> None:
    from laminar_ui.reading import Reader

    _run(tmp_path)
    stored = Reader(datastores.Local(tmp_path)).stored_layers("Packed", "e")
    assert stored == sorted(f"Step{number}" for number in range(LENGTH))


def test_readers_on_the_datastore_s_threads_read_a_pack_once_and_find_every_record(tmp_path: Path) -> None:
    _run(tmp_path)
    read: list[str] = []

    class Slow(datastores.Local):
        """Reads a record pack slowly: every other reader asks while it is being read (on threads,
        as an object store's readers are)."""

        max_workers = 4

        def read_bytes(self, key: str) -> bytes:
            if "/records/" in key:
                read.append(key)
                threading.Event().wait(0.2)
            return super().read_bytes(key)

    store = Packed(datastore=Slow(tmp_path)).execution("e").store
    names = [f"Step{number}" for number in range(LENGTH)]
    found = store.datastore.map_parallel(store.record, names)  # as laminar gc reads them
    assert [record.layer for record in found] == names
    assert len(read) == 1
