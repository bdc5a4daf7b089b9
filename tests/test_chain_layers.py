"""A chain of small layers: what each layer writes, on which thread and in which order (issue 29).

A layer of one split writes one record file, which holds its split's record (no batch file, no
``splits/`` directory). A quick layer's "finished" status record is written, on a local disk, by the
thread writing layer records, right after the layer's record, so the event loop does not wait on it and a crash never leaves a
layer "finished" without its record. A flow class's plan is built once, and a run on a local disk
starts no thread for its lease.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from laminar import Flow, Layer
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar._storage import layout, records, verification
from laminar.configurations import datastores, executors
from laminar.errors import IntegrityError

from tests.helpers import unpack_records


class Chain(Flow): ...


@Chain.register
class A(Layer):
    def __call__(self) -> None:
        self.carried = {"a": 1}


@Chain.register
class B(Layer):
    def __call__(self, a: A) -> None:
        self.carried = a.carried | {"b": 2}


@Chain.register
class C(Layer):
    def __call__(self, b: B) -> None:
        self.carried = b.carried | {"c": 3}


class Watching(datastores.Local):
    """Keeps, for each layer status record written, its layer, status, writing thread, and whether
    the layer's record existed then."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.statuses: list[tuple[str, str, str, bool]] = []

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/status.json") and "/layers/" in key:
            layer_directory = Path(self._path(key)).parent
            self.statuses.append(
                (
                    layer_directory.name,
                    json.loads(data)["status"],
                    threading.current_thread().name,
                    (layer_directory / "record.json").exists(),
                )
            )
        super().write_bytes(key, data)


def test_a_quick_layer_s_finished_status_is_carried_by_its_record_and_no_status_record_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # records written at the end: none taken early
    datastore = Watching(tmp_path)
    execution = Chain(datastore=datastore, executor=executors.Thread())()
    assert execution.layer(C).carried == {"a": 1, "b": 2, "c": 3}
    assert datastore.statuses == []  # its record carries it (Record.ran), written by the records thread
    assert {name: layer.status for name, layer in execution.status.layers.items()} == {
        "A": "finished",
        "B": "finished",
        "C": "finished",
    }


def test_a_layer_of_one_split_stores_its_record_alone_holding_its_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # records written at the end: none taken early
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 3600.0)  # nor for a "running" status's sake
    execution = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="e")
    # no file of B's own: its record, a line of the chain's record pack, holds its split and carries
    # its final status
    assert not (tmp_path / layout.layers("Chain", "e") / "B").exists()
    (pack,) = (tmp_path / layout.record_packs("Chain", "e")).iterdir()
    stored = json.loads(pack.read_bytes().split(b"\n")[1])
    assert stored["layer"] == "B"
    assert [attempt[:2] for attempt in stored["ran"]["attempts"]] == [[0, 0]]
    assert stored["layout"] == records.HELD_LAYOUT  # a reader of layout 3 refuses it, not misreads it
    assert stored["batches"] == {"0-0.json": [[0, 0]]} and list(stored["held"]) == ["0"]
    # read back by a new store (nothing cached), and checked whole
    again = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution(execution.id)
    assert again.layer(C).carried == {"a": 1, "b": 2, "c": 3}
    assert verification.verify(again.store, ["A", "B", "C"]).intact


def test_a_record_holding_splits_it_does_not_name_is_damaged(tmp_path: Path) -> None:
    Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="e")
    unpack_records(tmp_path)  # B's record as a file of its own
    path = tmp_path / layout.record("Chain", "e", "B")
    payload = json.loads(path.read_bytes())
    del payload["sha256"]
    payload["held"] = {"1": payload["held"]["0"]}  # resealed: only its shape is wrong
    path.write_bytes(records.seal(payload))
    again = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("e")
    with pytest.raises(IntegrityError) as raised:
        again.layer(B).carried  # noqa: B018
    message = str(raised.value)
    assert f"the record of layer B of execution e of flow Chain at {path.as_uri()} is corrupt" in message
    assert "held splits [1] are not a batch it names of its 1 splits" in message


def test_every_flow_object_of_a_class_shares_its_plan_until_a_layer_is_registered() -> None:
    class Grows(Flow): ...

    @Grows.register
    class First(Layer):
        def __call__(self) -> None:
            self.value = 1

    plan = Grows(datastore=datastores.Memory(), executor=executors.Thread()).plan
    assert Grows(datastore=datastores.Memory(), executor=executors.Thread()).plan is plan

    @Grows.register
    class Second(Layer):
        def __call__(self, first: First) -> None:
            self.value = first.value + 1

    grown = Grows(datastore=datastores.Memory(), executor=executors.Thread())
    assert grown.plan.order == ("Parameters", "First", "Second")
    assert grown().layer(Second).value == 2


class Threads(datastores.Local):
    """Keeps the thread that wrote or created each key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writers: dict[str, str] = {}

    def write_bytes(self, key: str, data: bytes) -> None:
        self.writers[key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1]] = threading.current_thread().name
        super().write_bytes(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self.writers[key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1]] = threading.current_thread().name
        return super().create(key, data)


def test_a_run_on_a_local_disk_takes_and_releases_its_lease_on_the_event_loop(tmp_path: Path) -> None:
    """No thread is started for the run's first and last small writes (lease, metadata, Parameters)."""
    datastore = Threads(tmp_path)
    Chain(datastore=datastore, executor=executors.Thread())(execution="e")
    here = threading.current_thread().name
    assert datastore.writers["e/execution.json"] == here
    assert datastore.writers["leases/0000000001.json"] == here  # created, then released
    assert datastore.writers["Parameters/record.json"] == here
