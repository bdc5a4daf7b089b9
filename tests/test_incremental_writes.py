"""How a rerun writes the records of the layers it reuses: down a chain, all at once rather than one
round trip after another, and what a crash between those writes leaves is not trusted by a resume.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar._storage import layout
from laminar.configurations import executors

from tests.helpers import CountingLocal

#: Layers of Chain, in order: each reads the one before.
CHAIN = ("First", "Second", "Third", "Fourth")


class Chain(Flow): ...


@Chain.register
class First(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.total = parameters.start
        self.ran = uuid.uuid4().hex  # which run computed it: a reused layer keeps the first's


@Chain.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.total = first.total + 1
        self.ran = uuid.uuid4().hex


@Chain.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.total = second.total + 1
        self.ran = uuid.uuid4().hex


@Chain.register
class Fourth(Layer):
    def __call__(self, third: Third) -> None:
        self.total = third.total + 1
        self.ran = uuid.uuid4().hex


class Gathering(CountingLocal):
    """Holds each layer record written under execution ``held`` until ``parties`` such writes are
    in flight together (or a bounded wait ends): ``together`` says whether they all were."""

    def __init__(self, root: str | os.PathLike[str], held: str, parties: int) -> None:
        super().__init__(root)
        self.held = layout.execution("Chain", held)
        self.barrier = threading.Barrier(parties, timeout=20)
        self.together = True

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.startswith(self.held) and key.endswith("/record.json") and "/Parameters/" not in key:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.together = False
        super().write_bytes(key, data)


def test_the_records_of_a_chain_of_reused_layers_are_written_together(tmp_path: Path) -> None:
    """Each record of a chain of reused layers written once the one before it is written costs a
    round trip per layer on an object store. A layer is reused once the layers it reads are found
    reused, their records still being written: all four records are in flight at once."""
    first = Chain(datastore=CountingLocal(tmp_path), executor=executors.Thread())(start=1, reuse=True)
    datastore = Gathering(tmp_path, "second", parties=len(CHAIN))
    flow = Chain(datastore=datastore, executor=executors.Thread())
    second = flow.execution("second").run(parameters={"start": 1}, reuse=True)
    assert datastore.together, "the reused layers' records were written one after another"
    assert [second.store.layer_status(n).reused for n in CHAIN] == [first.id] * 4  # type: ignore[union-attr]
    assert second.layer(Fourth).total == 4
    assert second.layer(Fourth).ran == first.layer(Fourth).ran


class Failing(CountingLocal):
    """Fails the write of Second's record in execution ``held``, once Third's record is written."""

    def __init__(self, root: str | os.PathLike[str], held: str) -> None:
        super().__init__(root)
        self.second = layout.record("Chain", held, "Second")
        self.third = layout.record("Chain", held, "Third")
        self.third_written = threading.Event()

    def write_bytes(self, key: str, data: bytes) -> None:
        if key == self.second:
            self.third_written.wait(20)
            raise OSError(f"refused to write {key}")
        super().write_bytes(key, data)
        if key == self.third:
            self.third_written.set()


def test_a_resume_runs_again_a_recorded_layer_whose_upstream_layer_ran(tmp_path: Path) -> None:
    """Written together, a reused layer's record can land while the record of a layer it reads
    does not (the run dies between). A resume then computes that upstream layer again, possibly
    to other values (here: a new token), so the layers reading it are not kept as recorded: they
    run again too, and the execution holds values computed from each other."""
    first = Chain(datastore=CountingLocal(tmp_path), executor=executors.Thread())(start=1, reuse=True)
    datastore = Failing(tmp_path, "second")
    with pytest.raises(OSError, match="refused to write"):
        Chain(datastore=datastore, executor=executors.Thread()).execution("second").run(
            parameters={"start": 1}, reuse=True
        )
    assert (tmp_path / layout.record("Chain", "second", "Third")).exists()
    assert not (tmp_path / layout.record("Chain", "second", "Second")).exists()

    resumed = (
        Chain(datastore=CountingLocal(tmp_path), executor=executors.Thread()).execution("second").resume()
    )

    assert resumed.layer(First).ran == first.layer(First).ran  # recorded before, kept
    ran = [resumed.layer(layer).ran for layer in (Second, Third, Fourth)]
    assert not {*ran} & {first.layer(layer).ran for layer in (Second, Third, Fourth)}
    assert resumed.layer(Fourth).total == 4


class Held(CountingLocal):
    """Holds the write of layer ``First``'s status record until ``go`` is set (``writing`` says it
    is in flight); the status records of the other layers then wait at ``barrier`` until three are
    in flight (or a bounded wait ends)."""

    small_writes_inline = False  # as an object store: the status thread writes them
    max_workers = 4

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.go = threading.Event()
        self.writing = threading.Event()
        self.barrier = threading.Barrier(3, timeout=20)
        self.together = True

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/First/status.json"):
            self.writing.set()
            self.go.wait(20)
        elif key.endswith("/status.json"):
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.together = False
        super().write_bytes(key, data)


def test_the_status_records_due_together_are_written_together(tmp_path: Path) -> None:
    """A chain of reused layers finishes within moments: status records written one after another
    would cost a round trip each at the end of the run. Those that came while a write was in
    flight are written together, next: three, in flight at once."""
    from laminar._plugins import run_records
    from laminar._storage.records import LayerStatusRecord

    datastore = Held(tmp_path)
    store = Chain(datastore=datastore, executor=executors.Thread()).configuration.store("Chain", "x")
    writer = run_records._Writer(store)
    writer.put(LayerStatusRecord("Chain", "x", "First", "finished", 1.0))
    assert datastore.writing.wait(20)  # in flight, alone: the others come while it is
    for layer in CHAIN[1:]:
        writer.put(LayerStatusRecord("Chain", "x", layer, "finished", 1.0))
    datastore.go.set()
    writer.close()
    assert datastore.together, "the status records were written one after another"
    for layer in CHAIN:
        assert (
            json.loads((tmp_path / layout.layer_status("Chain", "x", layer)).read_text())["status"]
            == "finished"
        )
