"""A layer reused whole in a fresh execution writes no status record of its own: its layer record
says where it came from, when and why (``Record.reused``), and its status reads from that as it read
from the status record earlier releases wrote (which still read)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from laminar import Flow, Layer, Parameters
from laminar._cli.main import cli
from laminar._runtime import process
from laminar._storage import gc, layout
from laminar._storage.records import LayerStatusRecord
from laminar.configurations import executors
from laminar.configurations.layers import ForEach, Parameter

from tests.helpers import CountingLocal


class Told(Flow): ...


@Told.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.count)))


@Told.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.values**2


@Told.register
class Total(Layer):
    def __call__(self, square: Square) -> None:
        self.total = sum(square.value)


@Told.register
class Fragile(Layer):
    """Fails while REUSE_STATUS_FAIL is set: an environment variable it does not declare, so its key
    is the same either way (a run that failed reuses the earlier execution's values on resume)."""

    def __call__(self, total: Total) -> None:
        if os.environ.get("REUSE_STATUS_FAIL"):
            raise RuntimeError("told to fail")
        self.total = total.total + 1


LAYERS = ("Items", "Square", "Total", "Fragile")
COUNT = 4


def _executor(name: str) -> executors.Thread | executors.Process:
    return executors.Thread() if name == "thread" else executors.Process()


def _status_writes(datastore: CountingLocal, execution: str) -> list[str]:
    """The layers whose status records ``execution``'s runs wrote, one per write."""
    return [
        layer
        for layer in ("Parameters", *LAYERS)
        for key in datastore.writes
        if key == layout.layer_status("Told", execution, layer)
    ]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_rerun_of_reused_layers_writes_no_layer_status_and_reads_as_one_did(
    tmp_path: Path, executor: str
) -> None:
    """The first run writes a status record of each layer; the rerun, every layer reused, writes none of
    them (its execution's own record, running then succeeded, only), and each layer's status reads
    "finished", reused from the first execution, as the record the first releases wrote said."""
    datastore = CountingLocal(tmp_path)
    flow = Told(datastore=datastore, executor=_executor(executor))
    first = flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    assert set(_status_writes(datastore, "first")) == set(LAYERS)  # twice for one running 0.25 s
    datastore.writes.clear()
    second = flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    assert _status_writes(datastore, "second") == []
    assert datastore.writes.count(layout.execution_status("Told", "second")) == 2
    assert second.layer(Fragile).total == sum(n * n for n in range(COUNT)) + 1

    layers = Told(datastore=tmp_path.as_uri()).execution("second").status.layers  # read afresh
    for name in LAYERS:
        layer = layers[name]
        assert (layer.status, layer.reused, layer.why) == (
            "finished",
            first.id,
            f"reused from execution {first.id}",
        )
        assert layer.splits == (COUNT if name == "Square" else 1)
        assert layer.started is not None and layer.started == layer.ended
        assert (layer.attempts, layer.error, layer.reason, layer.omitted) == ({}, None, None, 0)


def test_show_explain_and_json_say_where_a_reused_layer_came_from(tmp_path: Path) -> None:
    """``laminar show`` (and ``--json``) and ``laminar explain`` read a reused layer's provenance
    from its record."""
    flow = Told(datastore=tmp_path.as_uri())
    first = flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    file = Path(__file__)
    runner = CliRunner()
    where = ["--datastore", tmp_path.as_uri()]
    explained = runner.invoke(cli, ["explain", str(file), "second", *where])
    assert explained.exit_code == 0, explained.output
    assert explained.output.splitlines() == [f"{name}: reused from execution {first.id}" for name in LAYERS]
    shown = runner.invoke(cli, ["show", str(file), "second", "--json", *where])
    assert shown.exit_code == 0, shown.output
    found = {layer["name"]: layer for layer in json.loads(shown.output)["layers"]}
    assert {name: (found[name]["status"], found[name]["reused"]) for name in LAYERS} == {
        name: ("finished", first.id) for name in LAYERS
    }
    table = runner.invoke(cli, ["show", str(file), "second", *where])
    assert table.exit_code == 0, table.output
    assert sum(f"reused from execution {first.id}" in line for line in table.output.splitlines()) == len(
        LAYERS
    )


def test_a_status_record_an_earlier_release_wrote_for_a_reused_layer_still_reads(tmp_path: Path) -> None:
    """Earlier releases wrote a reused layer's provenance in its status record, beside a layer record
    without it: that reads as it did."""
    flow = Told(datastore=tmp_path.as_uri())
    flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    second = flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    store = second.store
    record = store.record("Total")
    assert record is not None and record.reused is not None
    store.write_record(dataclasses.replace(record, reused=None))  # as earlier releases wrote it
    store.write_layer_status(
        LayerStatusRecord(
            "Told", "second", "Total", "finished", 1.0, 2.0, splits=1, reused="first", why="said so"
        )
    )
    layer = Told(datastore=tmp_path.as_uri()).execution("second").status.layers["Total"]
    assert (layer.status, layer.reused, layer.why, layer.duration) == ("finished", "first", "said so", 1.0)


def test_a_reused_layer_without_its_record_does_not_read_finished(tmp_path: Path) -> None:
    """A crash before a reused layer's record is written leaves nothing saying it finished: its
    status comes from that record."""
    flow = Told(datastore=tmp_path.as_uri())
    flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    (tmp_path / layout.record("Told", "second", "Fragile")).unlink()
    layers = Told(datastore=tmp_path.as_uri()).execution("second").status.layers
    assert layers["Fragile"].status == "not started" and layers["Fragile"].reused is None
    assert layers["Total"].reused == "first"


def test_a_layer_reused_on_resume_replaces_the_status_an_earlier_run_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution whose first run recorded a layer failed, resumed with reuse on, reuses that layer
    from another execution: its status record is written then, or the failure would still read."""
    flow = Told(datastore=tmp_path.as_uri())
    first = flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    monkeypatch.setenv("REUSE_STATUS_FAIL", "1")
    with pytest.raises(RuntimeError, match="told to fail"):
        flow.execution("failing").run(parameters={"count": COUNT})
    assert flow.execution("failing").status.layers["Fragile"].status == "failed"
    monkeypatch.delenv("REUSE_STATUS_FAIL")
    resumed = flow.execution("failing").run(resume=True, reuse=True)
    layer = Told(datastore=tmp_path.as_uri()).execution("failing").status.layers["Fragile"]
    assert (layer.status, layer.reused, layer.why) == (
        "finished",
        first.id,
        f"reused from execution {first.id}",
    )
    assert resumed.layer(Fragile).total == sum(n * n for n in range(COUNT)) + 1


def test_gc_copying_a_reused_layers_splits_in_keeps_where_it_came_from(tmp_path: Path) -> None:
    """gc writes the record of a layer reused from an execution it deletes again, with the splits
    copied in: the layer still reads reused from it, as its status record said before, and a later
    run still reuses it (the index entry names the kept execution)."""
    flow = Told(datastore=tmp_path.as_uri())
    first = flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    done = gc.collect(flow.configuration.datastore, keep_last=1)
    assert {e.id for e in done.deleted_executions} == {first.id}
    record = flow.execution("second").store.record("Square")
    assert record is not None and record.borrowed == {}  # copied in
    layers = Told(datastore=tmp_path.as_uri()).execution("second").status.layers
    assert {name: (layers[name].status, layers[name].reused) for name in LAYERS} == {
        name: ("finished", first.id) for name in LAYERS
    }
    third = flow.execution("third").run(parameters={"count": COUNT}, reuse=True)
    assert {name: third.status.layers[name].reused for name in LAYERS} == dict.fromkeys(LAYERS, "second")


def test_a_rerun_of_reused_layers_on_the_process_executor_starts_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing runs, so no worker process starts: neither forked from the template nor spawned (the
    template itself is forked before the run begins, when whether anything will run is not known)."""
    started: list[str] = []
    for how in ("fork", "spawn"):
        original = getattr(process._Worker, how).__func__

        async def counted(
            cls: type[process._Worker], *args: Any, _how: str = how, _original: Any = original
        ) -> Any:
            started.append(_how)
            return await _original(cls, *args)

        monkeypatch.setattr(process._Worker, how, classmethod(counted))
    flow = Told(datastore=tmp_path.as_uri(), executor=executors.Process(concurrency=2))
    flow.execution("first").run(parameters={"count": COUNT}, reuse=True)
    assert started  # the first run's splits ran in workers
    started.clear()
    second = flow.execution("second").run(parameters={"count": COUNT}, reuse=True)
    assert started == []
    assert second.layer(Fragile).total == sum(n * n for n in range(COUNT)) + 1


def test_reading_a_layer_with_neither_status_nor_record_reads_each_once(tmp_path: Path) -> None:
    """Whether a layer with no status record was reused is read from its record: a layer that has
    neither (not started, as a crash leaves it) costs one read of each, not two of its record."""
    flow = Told(datastore=tmp_path.as_uri())
    flow.execution("first").run(parameters={"count": COUNT})
    (tmp_path / layout.layer_status("Told", "first", "Fragile")).unlink()
    (tmp_path / layout.record("Told", "first", "Fragile")).unlink()
    datastore = CountingLocal(tmp_path)
    layer = Told(datastore=datastore).execution("first").status.layers["Fragile"]
    assert layer.status == "not started"
    fragile = layout.layer("Told", "first", "Fragile")
    assert sorted(key for key in datastore.reads if key.startswith(fragile)) == [
        fragile + "record.json",
        fragile + "status.json",
    ]
