"""What reading the reuse index costs and trusts: an unchanged rerun makes a bounded number of
requests (not one per split), and an index entry is used only under the flow, layer and key it names.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import commit, reuse
from laminar._storage import layout
from laminar._storage.store import ExecutionStore
from laminar.configurations import executors
from laminar.configurations.layers import ForEach, Parameter

from tests.helpers import CountingLocal


class Counting(CountingLocal):
    """A CountingLocal that also records the keys whose existence it is asked, however batched."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.checked: list[str] = []

    def exists(self, key: str) -> bool:
        self.checked.append(key)
        return super().exists(key)

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [self.exists(key) for key in keys]


class Chain(Flow): ...


@Chain.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.count)))
        self.noise = random.Random(0).randbytes(8192)  # under artifacts/, not inline


@Chain.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.values**2


@Chain.register
class Total(Layer):
    def __call__(self, square: Square) -> None:
        self.total = sum(square.value)


@Chain.register
class Later(Layer):
    def __call__(self, total: Total) -> None:
        self.total = total.total + 1


@Chain.register
class Last(Layer):
    def __call__(self, later: Later) -> None:
        self.total = later.total + 1


LAYERS = ("Parameters", "Items", "Square", "Total", "Later", "Last")


@dataclass
class Requests:
    reads: list[str]
    listings: list[str]
    checked: list[str]


def _rerun(root: Path, count: int) -> tuple[str, Requests]:
    """Run Chain, then again unchanged through a new datastore object (an empty metadata cache, as
    in a new process): the first execution's id, and the requests the rerun made."""
    first = Chain(datastore=Counting(root), executor=executors.Thread())(count=count, reuse=True)
    datastore = Counting(root)
    second = Chain(datastore=datastore, executor=executors.Thread())(count=count, reuse=True)
    made = Requests(list(datastore.reads), list(datastore.listings), list(datastore.checked))
    assert [second.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    assert second.layer(Last).total == sum(n * n for n in range(count)) + 2
    return first.id, made


@pytest.mark.parametrize("count", [30, 300])
def test_an_unchanged_rerun_reads_each_record_once_and_checks_values_not_splits(
    tmp_path: Path, count: int
) -> None:
    """An unchanged rerun reads one index entry per layer and the records and split batches of the
    execution it reuses, each once, and checks that each value stored outside them exists (Items'
    noise): nothing per split, so 300 splits cost what 30 do, but for the batches they came in."""
    first, datastore = _rerun(tmp_path, count)
    theirs = layout.execution("Chain", first)
    source = Chain(datastore=Counting(tmp_path), executor=executors.Thread()).execution(first).store
    records = {layout.record("Chain", first, layer) for layer in LAYERS}
    batches = {  # in files of their own: a layer of one split's is held in its record
        layout.split_batch("Chain", first, n, b)
        for n in LAYERS
        for b in source.batch_names(n)
        if b != source.record(n).held_batch  # type: ignore[union-attr]
    }
    entries = [key for key in datastore.reads if key.startswith(layout.reuse_index("Chain"))]
    ours = [key for key in datastore.reads if not key.startswith((theirs, layout.reuse_index("Chain")))]
    read = [key for key in datastore.reads if key.startswith(theirs)]
    assert sorted(read) == sorted(records | batches)  # each once
    assert sorted(key.split("/")[3] for key in entries) == sorted(LAYERS[1:])  # one entry per layer
    assert ours == []  # nothing of its own: a run that is not a resume reads no status to carry over
    assert not [prefix for prefix in datastore.listings if prefix.startswith(theirs)]
    values = [key for key in datastore.checked if key.startswith("artifacts/")]
    assert len(values) == 1  # the noise; Square's values are inline in its records


def test_the_records_of_the_execution_reused_from_are_read_at_once(tmp_path: Path) -> None:
    """Down a chain, each layer's reuse waits for the one before: reading the records it will check
    one layer at a time costs a round trip per layer on an object store. The first layer reused
    from an execution reads the records of every layer of it together, before the next entry."""
    first, datastore = _rerun(tmp_path, 30)
    second_entry = next(i for i, key in enumerate(datastore.reads) if "/reuse/Square/" in key)
    before = datastore.reads[:second_entry]
    assert {layout.record("Chain", first, layer) for layer in LAYERS} <= set(before)


def test_each_layer_of_the_execution_reused_from_is_summarised_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a reused layer's inputs summarises its upstream layers in the execution it reuses
    from (a pass over every split's record); a chain asks for each one twice, once as a layer
    reused and once as its reader's input. Each (execution, layer) is summarised once per run."""
    summarised: list[tuple[str, str]] = []
    outputs = reuse.outputs

    def counted(store: ExecutionStore, layer: str) -> dict[str, str]:
        summarised.append((store.execution, layer))
        return outputs(store, layer)

    first = Chain(datastore=Counting(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    monkeypatch.setattr(reuse, "outputs", counted)
    second = Chain(datastore=Counting(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    assert second.layer(Last).total == sum(n * n for n in range(30)) + 2
    assert len(summarised) == len(set(summarised))
    # The layers whose records hold their summary (``Record.outputs``: all but Parameters, written
    # at the start) have it checked once against their splits (``reuse_index.usable``), then taken.
    assert {layer for execution, layer in summarised if execution == first.id} == {"Parameters"}


class Wide(Flow): ...


@Wide.register
class Many(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.count)))


@Wide.register(foreach=ForEach(parameters=[Parameter(layer=Many, attribute="values")]))
class First(Layer):
    def __call__(self, many: Many) -> None:
        self.value = many.values + 1


@Wide.register(foreach=ForEach(parameters=[Parameter(layer=Many, attribute="values")]))
class Second(Layer):
    def __call__(self, many: Many) -> None:
        self.value = many.values + 2


@Wide.register(foreach=ForEach(parameters=[Parameter(layer=Many, attribute="values")]))
class Third(Layer):
    def __call__(self, many: Many) -> None:
        self.value = many.values + 3


class Pooled(Counting):
    max_workers = 2  # fewer threads than layers of several batches


def test_reading_ahead_layers_of_several_batches_does_not_wait_on_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records read ahead are read on the datastore's threads; a layer of several batches
    reads them on those threads too. Three such layers on two threads must not each hold a thread
    while waiting for one to read its batches: the rerun finishes (within a minute)."""
    monkeypatch.setattr(commit, "LIMIT", 10)  # each foreach of 200 splits: several batches
    monkeypatch.setattr(commit, "COMPACT_FROM", 1000)  # kept as written, not compacted into one
    one_at_a_time = executors.Thread(concurrency=1)  # so that batches are written as splits end
    first = Wide(datastore=Pooled(tmp_path), executor=one_at_a_time)(count=200, reuse=True)
    for layer in ("First", "Second", "Third"):
        assert len(first.store.record(layer).batches) > 1  # type: ignore[union-attr]
    done: list[Any] = []
    rerun = threading.Thread(
        target=lambda: done.append(
            Wide(datastore=Pooled(tmp_path), executor=executors.Thread())(count=200, reuse=True)
        ),
        daemon=True,
    )
    rerun.start()
    rerun.join(60)
    assert done, "the rerun did not finish within a minute: reading ahead waits on itself"
    assert done[0].store.layer_status("Third").reused == first.id
    assert list(done[0].layer(Third).value) == [n + 3 for n in range(200)]


class Scaled(Flow): ...


@Scaled.register(inputs=["$LAMINAR_TEST_FACTOR"])
class Product(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.base * int(os.environ["LAMINAR_TEST_FACTOR"])


def _entry_path(root: Path, execution: str) -> Path:
    (path,) = [p for p in root.glob("flows/Scaled/reuse/Product/*.json") if execution in p.read_text()]
    return path


def test_an_entry_copied_under_another_key_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry is sealed, so editing one fails its checksum; but a whole entry, valid, copied under
    another key's name (by a bug, or anyone who can write the bucket) still reads back. It names the
    key it was written for: under another, it is ignored, or a run would take values computed with
    other code or inputs its records cannot show (here: an environment variable declared as input).
    """
    flow = Scaled(datastore=CountingLocal(tmp_path), executor=executors.Thread())
    monkeypatch.setenv("LAMINAR_TEST_FACTOR", "2")
    doubled = flow(base=5, reuse=True)
    monkeypatch.setenv("LAMINAR_TEST_FACTOR", "3")
    tripled = flow(base=5, reuse=True)
    assert (doubled.layer(Product).value, tripled.layer(Product).value) == (10, 15)
    shutil.copyfile(_entry_path(tmp_path, doubled.id), _entry_path(tmp_path, tripled.id))
    assert len(list(tmp_path.glob("flows/Scaled/reuse/Product/*.json"))) == 2

    again = flow(base=5, reuse=True)  # LAMINAR_TEST_FACTOR is still 3

    assert again.layer(Product).value == 15
    status = again.store.layer_status("Product")
    assert status is not None and status.reused is None
    assert status.why == "ran because environment variable changed: LAMINAR_TEST_FACTOR"
