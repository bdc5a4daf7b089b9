"""What a run with reuse on does once, not once a layer: the flow's project folder is looked up once
(a walk up the file system's folders), not once for each key computed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import reuse
from laminar._storage import layout
from laminar.configurations import datastores, executors

from tests.helpers import CountingLocal
from tests.test_incremental_requests import LAYERS, Chain


class Five(Flow): ...


@Five.register
class First(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.start


@Five.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


@Five.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.value = second.value + 1


@Five.register
class Fourth(Layer):
    def __call__(self, third: Third) -> None:
        self.value = third.value + 1


def test_a_run_looks_up_its_project_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[str] = []
    root_of = reuse.root_of
    monkeypatch.setattr(reuse, "root_of", lambda flow: (looked.append(flow.name), root_of(flow))[1])
    flow = Five(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow(start=1, reuse=True).layer(Fourth).value == 4
    assert looked == ["Five"]
    looked.clear()
    assert flow(start=1, reuse=True).layer(Fourth).value == 4  # reused: every layer keyed again
    assert looked == ["Five"]


class Parallel(datastores.Local):
    """A Local datastore as parallel as an object store (32 requests at once), whose record writes
    of the layers of the run named ``held`` each wait until ``together`` of them are in
    flight at once."""

    max_workers = 32

    def __init__(self, root: Path, together: int) -> None:
        super().__init__(root)
        self.held: str | None = None
        self.barrier = threading.Barrier(together, timeout=20)
        self.waited = 0
        self.lock = threading.Lock()

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.held is not None and f"/{self.held}/layers/Step" in key and key.endswith("/record.json"):
            with self.lock:
                first = self.waited < self.barrier.parties
                self.waited += 1
            if first:  # broken (and the run failed) unless the first ``together`` are in flight at once
                self.barrier.wait()
        super().write_bytes(key, data)


class Long(Flow): ...


def _step(number: int, upstream: type[Layer] | None) -> type[Layer]:
    def first(self: Any) -> None:
        self.value = number

    def after(self: Any, before: Any) -> None:
        self.value = before.value + number

    after.__annotations__ = {"before": upstream, "return": None}  # the dependency
    return type(f"Step{number}", (Layer,), {"__call__": first if upstream is None else after})


_previous: type[Layer] | None = None
for _number in range(10):
    _previous = Long.register(_step(_number, _previous))


def test_a_rerun_on_a_parallel_store_writes_its_reused_records_at_once(tmp_path: Path) -> None:
    """Reused layers' records are written as their checks pass, each on a thread of the run's loop:
    on a store taking 32 requests at once, eight (of ten) are in flight together (asyncio's default executor,
    the CPUs + 4 threads, held them to 6 on this 2-core machine, and a rerun's records queued)."""
    datastore = Parallel(tmp_path, together=8)
    flow = Long(datastore=datastore, executor=executors.Thread())
    flow(reuse=True)
    datastore.held = "rerun"
    rerun = flow.execution("rerun")
    rerun.run(reuse=True)
    assert all(rerun.store.layer_status(f"Step{n}").reused for n in range(10))  # type: ignore[union-attr]


class BatchWaits(CountingLocal):
    """Reading Square's split batch of the execution ``source`` waits until Later's index entry has
    been read (at most 10 s, then says so in ``waited_out``)."""

    def __init__(self, root: Path, source: str) -> None:
        super().__init__(root)
        self.source = source
        self.later_read = threading.Event()
        self.waited_out = False

    def read_bytes(self, key: str) -> bytes:
        if key.startswith(layout.reuse_index("Chain")) and key.split("/")[3] == "Later":
            self.later_read.set()
        if f"/{self.source}/layers/Square/splits/" in key and not self.later_read.wait(10):
            self.waited_out = True
        return super().read_bytes(key)


def test_entries_of_layers_keyed_from_held_records_are_read_while_batches_are(tmp_path: Path) -> None:
    """Later reads Total, whose record holds its one split: its key is known once the records of
    the execution reused from are read, so its entry is read while Square's split batch (which
    Total's key waits for) is still on its way, not after it."""
    first = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    datastore = BatchWaits(tmp_path, first.id)
    rerun = Chain(datastore=datastore, executor=executors.Thread())(count=30, reuse=True)
    assert not datastore.waited_out
    assert [rerun.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    entries = [key for key in datastore.reads if key.startswith(layout.reuse_index("Chain"))]
    assert sorted(key.split("/")[3] for key in entries) == sorted(LAYERS[1:])  # each once
