"""What a chain of small layers writes, and when (issue 29, item 3).

Layer records written behind are group-committed: one waits up to ``layer_records.INTERVAL`` for
those of the layers finishing after it, so a chain of quick layers wakes the writing thread once in
that, not once a layer, and writes their records as one file (a record pack); something waiting for a record (a reuse index entry, the status plugin, the
run's end) has it written at once. A layer's "finished" status is written as soon as its record
lands, not on the status plugin's own timer: on a local disk by the thread that wrote the record. A local datastore makes a missing directory with one
``mkdir``. Counted, never timed: the deadlines below only bound a hang.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from laminar import Flow, Layer
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar._storage import layout
from laminar._transport import local
from laminar.configurations import datastores, executors

DEADLINE = 30.0  # seconds: a bound for a hang, never reached when the behaviour holds
LOOK = 1.0  # seconds a layer gives a record it must not see written (were it written, at once)


class Chain(Flow): ...


class Journal(datastores.Local):
    """Keeps, in order, every record and status of layers A, B and C written (``record A``, ``status A
    finished``) beside what the layers note (``ran C``); sets ``status_a`` once layer A's "finished"
    status is written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.events: list[str] = []
        self.status_a = threading.Event()
        self.record_a = threading.Event()
        self.packs: list[str] = []  # the names of the record packs written

    def write_bytes(self, key: str, data: bytes) -> None:
        super().write_bytes(key, data)
        if "/records/" in key:  # a record pack: the records of the layers on its lines, in order
            for line in data.split(b"\n"):
                self.events.append(f"record {json.loads(line)['layer']}")
                self.record_a.set()  # (A's is in the first pack written)
            self.packs.append(key.rsplit("/", 1)[-1])
            return
        layer = key.split("/")[-2]
        if "/layers/" in key and key.endswith(("/record.json", "/status.json")) and layer != "Parameters":
            if key.endswith("/record.json"):
                self.events.append(f"record {layer}")
                if layer == "A":
                    self.record_a.set()
            else:
                status = json.loads(data)["status"]
                self.events.append(f"status {layer} {status}")
                if layer == "A" and status == "finished":
                    self.status_a.set()


@Chain.register
class A(Layer):
    def __call__(self) -> None:
        self.carried = ["a"]


@Chain.register
class B(Layer):
    def __call__(self, a: A) -> None:
        self.carried = [*a.carried, "b"]


@Chain.register
class C(Layer):
    def __call__(self, b: B) -> None:
        journal = self.execution.flow.configuration.datastore  # type: ignore[union-attr]
        assert isinstance(journal, Journal)
        if C.waits_for_status_a:  # A's "finished" status is written while the run still runs
            C.saw_status_a = journal.status_a.wait(DEADLINE)
        if C.looks_for_record_a:  # time enough for a thread woken by A's record to write it
            C.saw_record_a = journal.record_a.wait(LOOK)
        journal.events.append("ran C")
        self.carried = [*b.carried, "c"]

    waits_for_status_a = looks_for_record_a = False
    saw_status_a: bool | None = None
    saw_record_a: bool | None = None


@pytest.fixture(autouse=True)
def _reset_c() -> None:
    C.waits_for_status_a = C.looks_for_record_a = False
    C.saw_status_a = C.saw_record_a = None


def _records(journal: Journal) -> list[str]:
    return [event for event in journal.events if event.startswith(("record", "ran"))]


def test_a_chain_s_layer_records_are_written_together_once_the_first_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # none is due before the run's end
    monkeypatch.setattr(run_records, "FINISHED_AFTER", 3600.0)  # and no status asks for one
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 3600.0)  # C, looking a while, reads "running" no sooner
    C.looks_for_record_a = True
    journal = Journal(tmp_path)
    execution = Chain(datastore=journal, executor=executors.Thread())(execution="e")
    assert C.saw_record_a is False  # handed over, A's record woke no thread to write it
    # None was written while the layers ran (one wake-up for all), every one before the run ended,
    # in the order the layers finished, as one file; each carries its layer's "finished" status
    # (Record.ran).
    assert journal.events == ["ran C", "record A", "record B", "record C"]
    assert journal.packs == ["A.3.jsonl"]
    assert execution.status.status == "succeeded"
    again = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("e")
    assert again.layer(C).carried == ["a", "b", "c"]


def test_a_layer_s_finished_status_is_written_once_its_record_lands_not_on_the_status_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.0)  # "running" written: a status record of its own
    # A's record lands on its own timer while C waits (its layer-finished event, a moment after it
    # is handed over, finds it on its way: were it written already, the status would wait for its
    # own timer, as documented); the status timer never fires.
    monkeypatch.setattr(layer_records, "INTERVAL", 0.5)
    monkeypatch.setattr(run_records, "FINISHED_AFTER", 3600.0)
    C.waits_for_status_a = True
    journal = Journal(tmp_path)
    Chain(datastore=journal, executor=executors.Thread())(execution="e")
    assert C.saw_status_a is True  # written while C ran, right after A's record
    assert journal.events.index("status A finished") < journal.events.index("ran C")
    assert journal.events.index("record A") < journal.events.index("status A finished")


def test_a_status_due_before_its_record_has_that_record_written_without_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.0)  # "running" written: a status record of its own
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # a record waits: only a request writes it
    monkeypatch.setattr(run_records, "FINISHED_AFTER", 0.001)  # A's status is due at once
    C.waits_for_status_a = True
    journal = Journal(tmp_path)
    Chain(datastore=journal, executor=executors.Thread())(execution="e")
    assert C.saw_status_a is True  # the status plugin's wait for A's record had it written
    assert journal.events.index("record A") < journal.events.index("status A finished")
    assert journal.events.index("status A finished") < journal.events.index("ran C")


def test_a_reuse_index_entry_has_its_record_written_without_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)
    journal = Journal(tmp_path)
    done = threading.Event()

    def run() -> None:
        Chain(datastore=journal, executor=executors.Thread())(execution="e", reuse=True)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(DEADLINE)  # each entry waited for its record, which did not wait out INTERVAL
    # an entry names a written record: each record was written before the next layer ran
    assert _records(journal) == ["record A", "record B", "ran C", "record C"]


# ---- a local datastore's directories ---------------------------------------------------------------
def test_a_file_in_a_new_directory_costs_one_mkdir_and_no_look_at_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("flows/x/first", b"1")  # flows/x exists from now on, as a run's directories do
    calls: list[str] = []
    for name in ("stat", "mkdir", "makedirs"):
        real = getattr(os, name)

        def counted(*arguments: object, _name: str = name, _real: object = real, **options: object) -> object:
            calls.append(_name)
            return _real(*arguments, **options)  # type: ignore[operator]

        monkeypatch.setattr(os, name, counted)
    store.write_bytes("flows/x/layers/A/record.json", b"record")  # flows/x/layers is missing too
    assert calls.count("mkdir") == 3  # its directory (missing), its parent (missing), its directory
    calls.clear()
    store.write_bytes("flows/x/layers/B/record.json", b"record")
    assert store.create("flows/x/layers/C/lease.json", b"lease") is True
    monkeypatch.undo()
    assert calls == ["mkdir", "mkdir"]  # one mkdir each, no stat of the parents, no makedirs
    assert store.read_bytes("flows/x/layers/A/record.json") == b"record"
    assert store.read_bytes("flows/x/layers/B/record.json") == b"record"
    assert store.read_bytes("flows/x/layers/C/lease.json") == b"lease"


def test_a_forked_child_names_its_staging_files_with_its_own_process_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("warm", b"0")  # the parent's name part is made
    moved: list[str] = []
    real_replace = os.replace

    def replace(source: str, destination: str) -> None:
        moved.append(os.path.basename(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and leaves at once
        try:
            store.write_bytes("from-child", b"1")
            os.write(writing, f"{os.getpid()} {moved[-1]}".encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        pid, name = pipe.read().split()
    os.waitpid(child, 0)
    store.write_bytes("from-parent", b"2")
    assert name.split(".")[1] == pid != str(os.getpid())
    assert moved[-1].split(".")[1] == str(os.getpid())
    assert name.split(".")[0] == moved[-1].split(".")[0] == local._HOST
    assert store.read_bytes("from-child") == b"1"


def test_the_stored_dependencies_of_a_chain_follow_the_plan_order(tmp_path: Path) -> None:
    Chain(datastore=Journal(tmp_path), executor=executors.Thread())(execution="e")
    metadata = json.loads((tmp_path / layout.execution_metadata("Chain", "e")).read_bytes())
    assert metadata["dependencies"] == {"A": [], "B": ["A"], "C": ["B"]}


def test_a_call_after_a_record_that_raises_leaves_the_records_after_it_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: run_records._Writer, layer: str) -> None:
        raise RuntimeError(f"broken follow-up of {layer}")

    monkeypatch.setattr(run_records._Writer, "landed", broken)
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.0)  # "running" written: a status record of its own
    journal = Journal(tmp_path)
    done = threading.Event()

    def run() -> None:
        Chain(datastore=journal, executor=executors.Thread())(execution="e")
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(DEADLINE)  # the writing thread lived on: every record landed, the run ended
    assert [event for event in journal.events if event.startswith("record")] == [
        "record A",
        "record B",
        "record C",
    ]
    assert "status C finished" in journal.events  # written by the status plugin's thread instead
    assert "what follows the record of layer A failed" in caplog.text
    assert "broken follow-up of A" in caplog.text
