"""A layer of one split holds its split's record in its layer record (``Record.held``), except when
that split shards more than ``records.CHUNK`` items: a record's JSON is built whole, and a shard of a
million items built whole took the scheduler's peak memory from 556 MiB to 1.15 GiB
(``benchmarks/foreach_scale.py``'s million splits), so its split goes to a batch file, written
``CHUNK`` artifacts at a time."""

from __future__ import annotations

from pathlib import Path

from laminar import Flow, Layer, Parameters
from laminar._storage import layout, records
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter


class Sharded(Flow): ...


@Sharded.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Sharded.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Double(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.item * 2


def _run(root: Path, n: int) -> tuple[records.Record, list[str]]:
    flow = Sharded(datastore=datastores.Local(root), executor=executors.Thread())
    execution = flow.execution("e")
    execution.run(parameters={"n": n})
    assert list(execution.layer(Double).value) == [2 * item for item in range(n)]
    record = execution.store.record("Items")
    assert record is not None
    directory = root / layout.splits("Sharded", "e", "Items")
    return record, sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_shard_larger_than_a_chunk_is_written_as_a_batch_not_held(tmp_path: Path) -> None:
    record, files = _run(tmp_path, records.CHUNK + 1)
    assert record.held == {}
    assert files == ["0-0.json"] and record.batches == {"0-0.json": ((0, 0),)}


def test_a_shard_of_a_chunk_is_held_in_the_layer_record(tmp_path: Path) -> None:
    record, files = _run(tmp_path, records.CHUNK)
    assert set(record.held) == {0} and files == []
