"""A layer that ran and finished with no status record of its own carries its final status in its
layer record (``Record.ran``): one file a layer, not two (issue 29, item 3).

The status plugin hands the status to the thread writing layer records: attached before that thread
takes the record to write, the record carries it; after, the plugin writes ``status.json`` as
before. Exactly one of the two is written whatever the timing, and every reader (the status, show,
explain, the report, verify, gc, a resume's attempt numbers) reads the one written. Files and reads
are counted, never timed: the deadlines below only bound a hang.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from laminar import Flow, Layer
from laminar._cli.main import cli
from laminar._cli.report import build_report, render
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar._runtime.run import Run
from laminar._storage import gc, layout, records, verification
from laminar._storage.records import LayerStatusRecord
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry

from tests.helpers import CountingLocal, recorded_layers, stored_record, unpack_records

DEADLINE = 30.0  # seconds: a bound for a hang, never reached when the behaviour holds
LAYERS = ("A", "B", "C")


class Told(Flow): ...


@Told.register
class A(Layer):
    def __call__(self) -> None:
        self.shard(item=[10, 20])


@Told.register(
    retry=Retry(attempts=2, delay=0), foreach=ForEach(parameters=[Parameter(layer=A, attribute="item")])
)
class B(Layer):
    """Each split fails its first attempt: its status lists a failed attempt and a finished one."""

    def __call__(self, a: A) -> None:
        self.seen = self.attempt
        if self.attempt == 0:
            raise ValueError(f"first try of {a.item} fails")
        self.value = a.item + 1


@Told.register
class C(Layer):
    def __call__(self, b: B) -> None:
        self.total = sum(b.value)


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer records written at the run's end (or when something waits for one), never on their
    timer: each layer's status reaches its record before the records thread takes it, however long
    the machine stalls between a layer's record being handed over and its layer-finished event."""
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 3600.0)  # nor for a "running" status's sake


def _run(root: Path, datastore: datastores.Local | None = None, execution: str = "e") -> Any:
    flow = Told(datastore=datastore or datastores.Local(root), executor=executors.Thread())
    return flow(execution=execution)


def _reader(root: Path) -> Any:
    """A flow reading ``root`` with a datastore of its own: nothing cached by the run."""
    return Told(datastore=datastores.Local(root), executor=executors.Thread())


def _stored(root: Path, layer: str, execution: str = "e") -> dict[str, Any]:
    return json.loads(stored_record(datastores.Local(root), "Told", execution, layer))


def _status_file(root: Path, layer: str, execution: str = "e") -> Path:
    return root / layout.layer_status("Told", execution, layer)


def _attempts(layer: Any) -> dict[int, list[tuple[int, bool]]]:
    """Each split's attempts as (number, failed)."""
    return {
        index: [(a.attempt, a.error is not None) for a in found] for index, found in layer.attempts.items()
    }


# ---- what is written -------------------------------------------------------------------------------
@pytest.mark.usefixtures("unhurried")
def test_a_chain_of_quick_layers_writes_no_file_a_layer_but_its_records(tmp_path: Path) -> None:
    datastore = CountingLocal(tmp_path)
    _run(tmp_path, datastore)
    layers = layout.layers("Told", "e")
    written: dict[str, list[str]] = {}
    for key in datastore.writes:
        if key.startswith(layers):
            layer, _, rest = key.removeprefix(layers).partition("/")
            written.setdefault(layer, []).append(rest)
    # Parameters: its record holding its split, written as the run starts; B (a foreach layer) a
    # batch of its splits; A, B and C their records, one record pack. No status.json: each record
    # carries its layer's final status.
    assert written == {"Parameters": ["record.json"], "B": ["splits/0-1.json"]}
    packs = [key for key in datastore.writes if key.startswith(layout.record_packs("Told", "e"))]
    assert packs == [layout.record_pack("Told", "e", "A.3.jsonl")]
    for layer in LAYERS:
        assert _stored(tmp_path, layer)["ran"]["next_attempt"] == (2 if layer == "B" else 1)


@pytest.mark.usefixtures("unhurried")
def test_every_status_field_reads_from_the_record_as_from_a_status_record(tmp_path: Path) -> None:
    _run(tmp_path)
    store = _reader(tmp_path).execution("e").store
    carried = store.layer_status("B")
    assert carried is not None and not _status_file(tmp_path, "B").exists()
    assert (carried.flow, carried.id, carried.layer, carried.status, carried.splits) == (
        "Told",
        "e",
        "B",
        "finished",
        2,
    )
    assert sorted((a.index, a.attempt, a.error is not None) for a in carried.attempts) == [
        (0, 0, True),
        (0, 1, False),
        (1, 0, True),
        (1, 1, False),
    ]
    assert carried.next_attempt == 2 and carried.omitted == 0 and carried.ended is not None
    # the status record it stands for, written as one, reads back the same
    store.write_layer_status(carried)
    assert store.layer_status("B") == carried
    layer = _reader(tmp_path).execution("e").status.layers["B"]
    assert layer.status == "finished" and _attempts(layer) == {
        0: [(0, True), (1, False)],
        1: [(0, True), (1, False)],
    }
    assert "first try of 10 fails" in layer.attempts[0][0].error["message"]


@pytest.mark.usefixtures("unhurried")
def test_a_status_record_beside_a_record_carrying_a_status_reads_first(tmp_path: Path) -> None:
    _run(tmp_path)
    store = _reader(tmp_path).execution("e").store
    beside = LayerStatusRecord("Told", "e", "C", "finished", 1.0, 3.0, splits=1, why="said so")
    store.write_layer_status(beside)
    assert "ran" in _stored(tmp_path, "C")
    layer = _reader(tmp_path).execution("e").status.layers["C"]
    assert (layer.why, layer.duration, layer.attempts) == ("said so", 2.0, {})


@pytest.mark.usefixtures("unhurried")
def test_a_record_written_before_ran_existed_reads_finished_with_no_attempts(tmp_path: Path) -> None:
    _run(tmp_path)
    store = _reader(tmp_path).execution("e").store
    record = store.record("C")
    assert record is not None and record.ran is not None
    store.write_record(dataclasses.replace(record, ran=None))  # as releases before it wrote it
    layer = _reader(tmp_path).execution("e").status.layers["C"]
    assert (layer.status, layer.attempts, layer.started) == ("finished", {}, None)
    assert _reader(tmp_path).execution("e").layer(C).total == 32


# ---- the hand-over: exactly one of the two, whatever the timing ------------------------------------
def test_attached_before_its_write_the_record_carries_it_and_reads_so_in_this_process_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # no record is written before the run's end
    seen: dict[str, Any] = {}
    original = C.__call__

    def looking(self: Any, b: Any) -> None:  # while B's record is in flight, not on the store
        seen["on the store"] = "B" in recorded_layers(tmp_path, "Told", "e")
        layer = self.execution.status.layers["B"]
        seen["B"] = (layer.status, _attempts(layer))
        original(self, b)

    monkeypatch.setattr(C, "__call__", looking)
    _run(tmp_path)
    assert seen["on the store"] is False
    assert seen["B"] == ("finished", {0: [(0, True), (1, False)], 1: [(0, True), (1, False)]})
    assert "ran" in _stored(tmp_path, "B") and not _status_file(tmp_path, "B").exists()


class TakenFirst(datastores.Local):
    """Says when the thread writing layer records has taken layer A's record (its write started),
    and keeps every status record written with whether its layer's record existed then."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.statuses: list[tuple[str, str, bool]] = []
        self.a_taken = threading.Event()

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/layers/A/record.json") or "/records/A." in key:  # a file, or a pack A begins
            self.a_taken.set()
        if key.endswith("/status.json") and "/layers/" in key:
            layer = key.split("/")[-2]
            recorded = layer in recorded_layers(Path(self.root), "Told", "e")
            self.statuses.append((layer, json.loads(data)["status"], recorded))
        super().write_bytes(key, data)


def test_attached_after_the_record_is_taken_the_status_is_a_file_of_its_own_after_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 0.0)  # each record is taken to be written at once
    datastore = TakenFirst(tmp_path)
    carry = Run.carry_status

    def late(self: Run, layer: str, ran: records.Ran) -> bool:  # A's status comes once its record is taken
        if layer == "A":
            assert datastore.a_taken.wait(DEADLINE)
        return carry(self, layer, ran)

    monkeypatch.setattr(Run, "carry_status", late)
    _run(tmp_path, datastore)
    assert [status for status in datastore.statuses if status[0] == "A"] == [("A", "finished", True)]
    assert "ran" not in _stored(tmp_path, "A")  # its record was written without it: a file, after it
    for layer in LAYERS:  # whichever came first, exactly one of the two
        assert ("ran" in _stored(tmp_path, layer)) != _status_file(tmp_path, layer).exists(), layer
    layers = _reader(tmp_path).execution("e").status.layers
    assert {name: (layers[name].status, len(layers[name].attempts)) for name in LAYERS} == {
        "A": ("finished", 1),
        "B": ("finished", 2),
        "C": ("finished", 1),
    }


def test_a_layer_whose_running_status_was_written_keeps_a_status_record_and_its_record_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.0)
    _run(tmp_path)
    for layer in LAYERS:
        assert "ran" not in _stored(tmp_path, layer)
        assert json.loads(_status_file(tmp_path, layer).read_bytes())["status"] == "finished"


@pytest.mark.usefixtures("unhurried")
def test_a_layer_with_more_attempts_than_a_record_carries_keeps_a_status_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_records, "CARRIED_LIMIT", 3)  # B lists 4 attempts; A and C one each
    _run(tmp_path)
    assert "ran" not in _stored(tmp_path, "B") and _status_file(tmp_path, "B").exists()
    assert "ran" in _stored(tmp_path, "C") and not _status_file(tmp_path, "C").exists()
    assert len(_reader(tmp_path).execution("e").status.layers["B"].attempts) == 2


def test_the_writer_takes_back_a_waiting_running_record_but_not_one_written(tmp_path: Path) -> None:
    store = _reader(tmp_path).configuration.store("Told", "x")
    writer = run_records._Writer(store)
    writer.put(LayerStatusRecord("Told", "x", "Waiting", "running", 1.0), after=3600.0)
    writer.put(LayerStatusRecord("Told", "x", "Written", "running", 1.0))  # at once (a local disk)
    assert writer.take_back("Waiting") is True
    assert writer.take_back("Written") is False
    assert writer.take_back("Never") is True
    writer.close()
    assert not _status_file(tmp_path, "Waiting", "x").exists()  # dropped: never written
    assert _status_file(tmp_path, "Written", "x").exists()


# ---- resume ---------------------------------------------------------------------------------------
def test_a_resume_keeps_a_layer_finished_with_its_status_in_its_record(tmp_path: Path) -> None:
    _run(tmp_path)
    before = _reader(tmp_path).execution("e").status.layers["B"]
    unpack_records(tmp_path)  # each record a file of its own
    (tmp_path / layout.record("Told", "e", "C")).unlink()  # as a crash before C's record leaves it
    execution = _reader(tmp_path).execution("e")
    execution.resume()
    assert execution.layer(C).total == 32
    after = _reader(tmp_path).execution("e").status.layers["B"]
    assert (after.status, after.started, _attempts(after)) == ("finished", before.started, _attempts(before))
    assert list(execution.layer(B).seen) == [1, 1]  # kept: not run again


def test_a_resume_numbers_attempts_after_those_in_the_record_s_status(tmp_path: Path) -> None:
    _run(tmp_path)
    # A runs again (its record gone), so B does; B's batch gone: its splits run again
    unpack_records(tmp_path)  # each record a file of its own
    (tmp_path / layout.record("Told", "e", "A")).unlink()
    for batch in (tmp_path / layout.splits("Told", "e", "B")).iterdir():
        batch.unlink()
    execution = _reader(tmp_path).execution("e")
    execution.resume()
    assert list(execution.layer(B).seen) == [2, 2]  # after attempts 0 and 1 its record listed
    layer = _reader(tmp_path).execution("e").status.layers["B"]
    assert _attempts(layer) == {
        0: [(0, True), (1, False), (2, False)],
        1: [(0, True), (1, False), (2, False)],
    }


# ---- verify, repair, gc ----------------------------------------------------------------------------
@pytest.mark.usefixtures("unhurried")
def test_verify_finds_a_record_carrying_its_status_intact_and_one_whose_status_is_damaged(
    tmp_path: Path,
) -> None:
    _run(tmp_path)
    store = _reader(tmp_path).execution("e").store
    assert verification.verify(store, ["A", "B", "C"]).intact
    unpack_records(tmp_path)  # each record a file of its own
    path = tmp_path / layout.record("Told", "e", "C")
    payload = json.loads(path.read_bytes())
    del payload["sha256"]
    payload["ran"]["attempts"][0][0] = 5  # resealed: an attempt of a split C does not have
    path.write_bytes(records.seal(payload))
    found = verification.verify(_reader(tmp_path).execution("e").store, ["A", "B", "C"])
    assert [(f.layer, f.problem, f.what) for f in found.findings] == [("C", "damaged", "its record")]
    assert "its status lists attempts of split 5, not one of its 1" in found.findings[0].reason


@pytest.mark.usefixtures("unhurried")
def test_repair_moves_a_record_carrying_its_status_aside_whole(tmp_path: Path) -> None:
    _run(tmp_path)
    unpack_records(tmp_path)  # each record a file of its own
    path = tmp_path / layout.record("Told", "e", "C")
    path.write_bytes(path.read_bytes().replace(b'"splits":', b'"splits":1'))  # damaged
    stored = path.read_bytes()
    reader = _reader(tmp_path)
    store = reader.execution("e").store
    found = verification.verify(store, ["A", "B", "C"])
    repaired = verification.repair(store, found, ["A", "B", "C"], {"A": [], "B": ["A"], "C": ["B"]})
    assert repaired.marked == ["C"]
    (folder,) = (tmp_path / layout.execution("Told", "e") / "repaired").iterdir()
    aside = folder / layout.record("Told", "e", "C").removeprefix(layout.execution("Told", "e"))
    assert aside.read_bytes() == stored and b'"ran":' in stored  # its status went aside with it
    execution = _reader(tmp_path).execution("e")
    assert execution.status.layers["C"].status == "not started"
    execution.resume()
    assert _reader(tmp_path).execution("e").status.layers["C"].status == "finished"


def test_gc_writing_a_record_again_keeps_the_status_it_carries(tmp_path: Path) -> None:
    class Reused(Flow): ...

    @Reused.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(values=[1, 2, 3])

    @Reused.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
    class Square(Layer):
        def __call__(self, items: Items) -> None:
            self.value = items.values**2

    flow = Reused(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow.execution("first").run(reuse=True)
    second = flow.execution("second").run(reuse=True)
    record = second.store.record("Square")
    assert record is not None and record.borrowed
    status = second.store.layer_status("Square")
    assert status is not None
    ran = records.Ran(status.started, 9.0, (records.AttemptRecord(0, 0, 1.0, 2.0),), next_attempt=1)
    second.store.write_record(dataclasses.replace(record, ran=ran))  # as a record that also ran writes it
    gc.collect(flow.configuration.datastore, keep_last=1)
    again = Reused(datastore=datastores.Local(tmp_path)).execution("second").store.record("Square")
    assert again is not None and again.borrowed == {}  # copied in
    assert again.ran == ran


# ---- the commands and the report -------------------------------------------------------------------
@pytest.mark.usefixtures("unhurried")
def test_show_json_and_the_report_read_a_status_from_its_record(tmp_path: Path) -> None:
    _run(tmp_path)
    assert not _status_file(tmp_path, "B").exists()
    runner = CliRunner()
    where = ["--datastore", tmp_path.as_uri()]
    shown = runner.invoke(cli, ["show", f"{Path(__file__)}:Told", "e", "--json", *where])
    assert shown.exit_code == 0, shown.output
    found = {layer["name"]: layer for layer in json.loads(shown.output)["layers"]}
    assert {name: found[name]["status"] for name in LAYERS} == dict.fromkeys(LAYERS, "finished")
    assert "first try of 10 fails" in json.dumps(found["B"])
    table = runner.invoke(cli, ["show", f"{Path(__file__)}:Told", "e", *where])
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line.split()[2:7:4] for line in table.output.splitlines() if line[:1] in "ABC"}
    assert rows == {"A": ["finished", "1"], "B": ["finished", "4"], "C": ["finished", "1"]}, table.output
    assert "B split 0 attempt 0: ValueError: first try of 10 fails" in table.output
    flow = _reader(tmp_path)
    report = build_report(flow, flow.execution("e"), logs=False)
    statuses = {layer.name: layer for layer in report.layer_statuses}
    assert _attempts(statuses["B"]) == {0: [(0, True), (1, False)], 1: [(0, True), (1, False)]}
    assert "first try of 10 fails" in render(report)


# ---- a resume that found a status record of the layer ----------------------------------------------
class Again(Flow): ...


BROKEN = threading.Event()  # set: Fails fails
C_RUNS = threading.Event()


@Again.register
class Fails(Layer):
    def __call__(self) -> None:
        if BROKEN.is_set():
            raise RuntimeError("broken")
        self.value = 1


@Again.register
class After(Layer):
    def __call__(self, fails: Fails) -> None:
        C_RUNS.set()
        self.value = fails.value + 1


class Remote(datastores.Local):
    """A datastore whose small writes are not written inline: status records go through the status
    plugin's thread, as on an object store."""

    small_writes_inline = False


@pytest.mark.usefixtures("unhurried")
def test_a_resume_that_found_a_status_record_of_the_layer_replaces_it_and_does_not_carry_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    BROKEN.set()
    C_RUNS.clear()
    flow = Again(datastore=Remote(tmp_path), executor=executors.Thread())
    with pytest.raises(RuntimeError, match="broken"):
        flow(execution="e")
    assert (
        json.loads((tmp_path / layout.layer_status("Again", "e", "Fails")).read_bytes())["status"] == "failed"
    )
    BROKEN.clear()
    # The status thread writes nothing until After runs, after Fails' layer-finished event: Fails'
    # "running" record is still waiting then (its status record on the store says "failed").
    writes = run_records._Writer._run

    def held(self: run_records._Writer) -> None:
        assert C_RUNS.wait(DEADLINE)
        writes(self)

    monkeypatch.setattr(run_records._Writer, "_run", held)
    Again(datastore=Remote(tmp_path), executor=executors.Thread()).execution("e").resume()
    assert "ran" not in json.loads(stored_record(datastores.Local(tmp_path), "Again", "e", "Fails"))
    layer = Again(datastore=datastores.Local(tmp_path)).execution("e").status.layers["Fails"]
    assert layer.status == "finished"  # the earlier "failed" replaced, not left to read first
    after = json.loads(stored_record(datastores.Local(tmp_path), "Again", "e", "After"))
    assert "ran" in after  # a layer no run recorded a status of: carried, even on a resume
