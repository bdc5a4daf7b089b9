"""Fan-out and joins: ``shard`` and the lazy Accessor, ForEach over one or several parameters (the
grid is their cartesian product), chained foreach, ``Parameter(index=...)``, joins over every split,
the group commit of finished splits' records in batches, and scheduling cost linear in the splits.

Every flow test runs on the Thread and on the Process executor against a Local datastore. Side
effects that must be seen across processes go to files below ``tmp_path``, whose path reaches the
layers as a flow parameter.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, Batched, CountingLocal, Double, Sum, append, batch_files, executions_in, lines
from laminar import Flow, Layer, Parameters

# Internal on purpose, where a test checks the stored form or counts the scheduler's work: the
# stored archives and records (store_for), the batch locator and the metadata cache (_storage.store),
# the commit interval (_runtime.commit), the foreach grid (_runtime.foreach).
from laminar._model.accessor import Accessor
from laminar._runtime import commit
from laminar._runtime.context import store_for
from laminar._serialization import threads
from laminar._storage import layout
from laminar._storage.store import _Locator
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter
from laminar.errors import ConfigurationError, FlowDefinitionError
from laminar.types import unwrap


def run(flow_class: type[Flow], root: Path, executor: type[executors.Executor], **parameters: Any) -> Any:
    flow = flow_class(datastore=datastores.Local(root / "store"), executor=executor())
    return flow(root=str(root), **parameters)


class Loud:
    """A value that leaves a marker file each time it is *loaded* (unpickled), wherever that happens."""

    def __init__(self, marker: str, number: int) -> None:
        self.marker = marker
        self.number = number

    def __reduce__(self) -> tuple[Any, ...]:
        return (_loaded, (self.marker, self.number))


def _loaded(marker: str, number: int) -> Loud:
    append(marker, str(number))
    return Loud(marker, number)


# ---- sharding and the Accessor ------------------------------------------------------------------


class Sharded(Flow): ...


@Sharded.register
class Source(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(foo=[1, 2, 3], loud=[Loud(parameters.root + "/loaded", i) for i in range(10)])
        self.whole = [1, 2, 3]


@Sharded.register
class Reader(Layer):
    def __call__(self, source: Source) -> None:
        self.listed = list(source.foo)
        self.second = source.foo[1]
        self.last = source.foo[-1]
        self.tail = source.foo[1:]
        self.stepped = source.foo[::2]
        self.length = len(source.foo)
        self.total = sum(source.foo)
        self.whole = source.whole  # not sharded: the plain value
        self.picked = source.loud[7].number  # loads item 7 only
        self.loud_length = len(source.loud)  # loads nothing


@pytest.mark.parametrize("executor", EXECUTORS)
def test_shard_reads_back_as_a_lazy_accessor(tmp_path: Path, executor: type[executors.Executor]) -> None:
    execution = run(Sharded, tmp_path, executor)
    reader = execution.layer(Reader)
    assert reader.listed == [1, 2, 3]
    assert (reader.second, reader.last, reader.tail, reader.stepped) == (2, 3, [2, 3], [1, 3])
    assert (reader.length, reader.total, reader.whole) == (3, 6, [1, 2, 3])
    assert (reader.picked, reader.loud_length) == (7, 10)
    # Only the item asked for was loaded, in the layer that asked for it.
    assert lines(tmp_path / "loaded") == ["7"]

    foo = execution.layer(Source).foo
    assert isinstance(foo, datastores.Accessor)
    assert (len(foo), foo[0], foo[-3], list(foo), foo[5:]) == (3, 1, 1, [1, 2, 3], [])
    with pytest.raises(IndexError, match="out of range"):
        foo[3]
    with pytest.raises(IndexError, match="out of range"):
        foo[-4]
    with pytest.raises(TypeError, match="integers or slices"):
        foo["1"]  # type: ignore[call-overload]


def test_accessor_reads_only_the_items_asked_for(tmp_path: Path) -> None:
    class Lazy(Flow): ...

    @Lazy.register
    class Many(Layer):
        def __call__(self) -> None:
            # Incompressible items larger than staging.INLINE_LIMIT: each is an artifact of its own.
            self.shard(item=[f"value {i} ".encode() + os.urandom(4096) for i in range(100)])

    store = CountingLocal(tmp_path)
    execution = Lazy(datastore=store, executor=executors.Thread())()
    layer = execution.layer(Many)
    store.reads.clear()
    items = layer.item
    artifact_reads = lambda: [key for key in store.reads if key.startswith("artifacts/")]  # noqa: E731
    assert len(items) == 100 and artifact_reads() == []
    assert items[42].startswith(b"value 42 ") and len(artifact_reads()) == 1
    assert items[-1].startswith(b"value 99 ") and len(artifact_reads()) == 2
    assert [item[:9] for item in items[10:13]] == [b"value 10 ", b"value 11 ", b"value 12 "]
    assert len(artifact_reads()) == 5
    iterator = iter(items)  # a pass reads one item a core at once from its first window on
    assert next(iterator).startswith(b"value 0 ") and len(artifact_reads()) == 5 + threads.cores()
    # Each item is its own artifact: the archive lists 100 of them.
    archive = store_for(execution).archive("Many", 0, "item")
    assert archive is not None and archive.sharded
    assert len({artifact.hexdigest for artifact in archive.artifacts}) == 100


def test_a_pass_reads_windows_growing_from_one_item_a_core() -> None:
    """Iterating (or slicing) reads ahead in windows: the first as many items as are read at once,
    then twice as many each time up to ``WINDOW``; an index reads only its item."""
    windows: list[list[int]] = []

    def read_many(indices: Sequence[int]) -> list[int]:
        windows.append(list(indices))
        return [i * 10 for i in indices]

    items = Accessor(200, lambda i: i * 10, read_many=read_many, first_window=2)
    assert list(items) == [i * 10 for i in range(200)]
    assert [len(window) for window in windows] == [2, 4, 8, 16, 32, 64, 64, 10]
    assert [i for window in windows for i in window] == list(range(200))
    windows.clear()
    assert items[5] == 50 and windows == []
    assert items[3:6] == [30, 40, 50] and windows == [[3, 4], [5]]
    windows.clear()
    assert list(Accessor(3, lambda i: i, read_many=read_many)) == [0, 10, 20] and windows == [[0], [1, 2]]


class PassAlong(Flow): ...


@PassAlong.register
class Origin(Layer):
    def __call__(self) -> None:
        self.shard(foo=[1, 2, 3])


@PassAlong.register(foreach=ForEach(parameters=[Parameter(layer=Origin, attribute="foo")]))
class Each(Layer):
    def __call__(self, origin: Origin) -> None:
        self.value = origin.foo * 2


@PassAlong.register
class Copy(Layer):
    def __call__(self, origin: Origin, each: Each) -> None:
        self.shard_copy = origin.foo  # an Accessor assigned as an artifact stores its items as a list
        self.join_copy = each.value
        self.shard(resharded=origin.foo)  # or shard it again: the same artifacts, not stored twice


@pytest.mark.parametrize("executor", EXECUTORS)
def test_assigning_an_accessor_stores_its_items(tmp_path: Path, executor: type[executors.Executor]) -> None:
    copy = PassAlong(datastore=datastores.Local(tmp_path), executor=executor())().layer(Copy)
    assert (copy.shard_copy, copy.join_copy) == ([1, 2, 3], [2, 4, 6])
    assert isinstance(copy.resharded, datastores.Accessor) and list(copy.resharded) == [1, 2, 3]


def test_shard_of_reserved_name_is_refused() -> None:
    class Plain(Layer): ...

    with pytest.raises(AttributeError, match="reserved"):
        Plain().shard(index=[1])


# ---- ForEach ------------------------------------------------------------------------------------


class Fan(Flow): ...


@Fan.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=parameters.items)
        self.factor = 10  # not sharded: broadcast to every split


@Fan.register(
    foreach=ForEach(
        parameters=[Parameter(layer=Items, attribute="item"), Parameter(layer=Items, attribute="factor")]
    )
)
class Scale(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.item * items.factor
        self.position = (self.index, self.splits)
        self.pid = os.getpid()


@Fan.register(foreach=ForEach(parameters=[Parameter(layer=Scale, attribute="value", index=None)]))
class Chained(Layer):
    def __call__(self, scale: Scale) -> None:
        self.value = scale.value + 1  # split i reads split i of Scale
        self.position = (self.index, self.splits)


@Fan.register
class Total(Layer):
    def __call__(self, scale: Scale, chained: Chained) -> None:
        self.values = list(scale.value)  # the join: an Accessor over all splits, in split order
        self.chained = list(chained.value)
        self.positions = list(scale.position)
        self.count = len(scale.value)
        self.last = chained.value[-1] if len(chained.value) else None
        self.kind = type(scale.value).__name__


@pytest.mark.parametrize("executor", EXECUTORS)
def test_foreach_broadcast_chain_and_join(tmp_path: Path, executor: type[executors.Executor]) -> None:
    execution = run(Fan, tmp_path, executor, items=[3, 1, 4, 1, 5])
    total = execution.layer(Total)
    assert total.values == [30, 10, 40, 10, 50]
    assert total.chained == [31, 11, 41, 11, 51]
    assert total.positions == [(i, 5) for i in range(5)]
    assert (total.count, total.last, total.kind) == (5, 51, "Accessor")
    assert list(execution.layer(Chained).position) == [(i, 5) for i in range(5)]
    assert execution.layer(Scale).value[2] == 40  # the results API joins too
    if executor is executors.Process:
        assert os.getpid() not in set(execution.layer(Scale).pid)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_empty_shard_gives_zero_splits_and_an_empty_join(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    execution = run(Fan, tmp_path, executor, items=[])
    total = execution.layer(Total)
    assert (total.values, total.chained, total.count, total.last) == ([], [], 0, None)
    for layer in (Scale, Chained):
        assert execution.layer(layer).state.finished
        assert len(execution.layer(layer).value) == 0
    assert not list((tmp_path / "store").glob("flows/Fan/executions/*/layers/Scale/splits/*"))


class Grid(Flow): ...


@Grid.register
class Letters(Layer):
    def __call__(self) -> None:
        self.shard(letter=["a", "b"], case=["lower", "upper"])


@Grid.register
class Numbers(Layer):
    def __call__(self) -> None:
        self.shard(number=[1, 2, 3])
        self.unit = "cm"


@Grid.register(
    foreach=ForEach(
        parameters=[
            Parameter(layer=Letters, attribute="letter"),
            Parameter(layer=Numbers, attribute="number"),
            Parameter(layer=Numbers, attribute="unit"),
            Parameter(layer=Letters, attribute="case"),
        ]
    )
)
class Cell(Layer):
    def __call__(self, letters: Letters, numbers: Numbers) -> None:
        self.cell = (letters.letter, numbers.number, numbers.unit, letters.case)
        self.position = (self.index, self.splits)


@Grid.register
class Cells(Layer):
    def __call__(self, cell: Cell) -> None:
        self.cells = list(cell.cell)
        self.positions = list(cell.position)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_foreach_grid_is_the_cartesian_product_first_parameter_outermost(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    execution = Grid(datastore=datastores.Local(tmp_path), executor=executor())()
    cells = execution.layer(Cells)
    expected = list(itertools.product(["a", "b"], [1, 2, 3], ["cm"], ["lower", "upper"]))
    assert cells.cells == expected
    assert cells.positions == [(i, 12) for i in range(12)]


class Indexed(Flow): ...


@Indexed.register
class Sizes(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(size=parameters.sizes)


@Indexed.register(foreach=ForEach(parameters=[Parameter(layer=Sizes, attribute="size")]))
class Rows(Layer):
    def __call__(self, sizes: Sizes) -> None:
        self.shard(cells=[f"{sizes.size}-{j}" for j in range(sizes.size)])


@Indexed.register(foreach=ForEach(parameters=[Parameter(layer=Rows, attribute="cells", index=1)]))
class SecondRow(Layer):
    def __call__(self, rows: Rows) -> None:
        self.cell = rows.cells  # one item of the shard of Rows' split 1


@pytest.mark.parametrize("executor", EXECUTORS)
def test_parameter_index_picks_one_upstream_split(tmp_path: Path, executor: type[executors.Executor]) -> None:
    flow = Indexed(datastore=datastores.Local(tmp_path), executor=executor())
    execution = flow(sizes=[2, 3])
    assert list(execution.layer(SecondRow).cell) == ["3-0", "3-1", "3-2"]
    assert [list(cells) for cells in execution.layer(Rows).cells] == [["2-0", "2-1"], ["3-0", "3-1", "3-2"]]
    with pytest.raises(
        ConfigurationError, match=r"Rows has no artifact 'cells' in split 1 \(it stored: nothing\)"
    ):
        flow(sizes=[2])  # Rows has one split only


# ---- ForEach parameters that do not fit the flow ------------------------------------------------------


def test_parameter_on_a_layer_that_is_not_a_dependency(tmp_path: Path) -> None:
    class NotDependent(Flow): ...

    @NotDependent.register
    class Upstream(Layer):
        def __call__(self) -> None:
            self.shard(x=[1, 2])

    @NotDependent.register(foreach=ForEach(parameters=[Parameter(layer=Upstream, attribute="x")]))
    class Down(Layer):
        def __call__(self) -> None:
            self.y = 1

    flow = NotDependent(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(FlowDefinitionError) as error:
        flow()
    assert str(error.value) == (
        "ForEach parameter of layer Down reads Upstream.x, but Down does not depend on Upstream; "
        "add a parameter annotated with Upstream to Down.__call__"
    )
    assert executions_in(tmp_path) == []


@pytest.mark.parametrize("executor", EXECUTORS)
def test_parameter_on_an_attribute_the_layer_does_not_have(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class NoAttribute(Flow): ...

    @NoAttribute.register
    class Upstream(Layer):
        def __call__(self) -> None:
            self.shard(x=[1, 2])

    @NoAttribute.register(foreach=ForEach(parameters=[Parameter(layer=Upstream, attribute="nope")]))
    class Down(Layer):
        def __call__(self, upstream: Upstream) -> None:
            self.y = 1

    flow = NoAttribute(datastore=datastores.Local(tmp_path), executor=executor())
    with pytest.raises(ConfigurationError) as error:
        flow(execution="bad")
    assert "ForEach of layer Down: Upstream has no artifact 'nope' in split 0 (it stored: x); fix " in str(
        error.value
    )
    assert "Parameter(layer=Upstream, attribute='nope')" in str(error.value)
    layers = tmp_path / "flows" / "NoAttribute" / "executions" / "bad" / "layers"
    assert sorted(p.name for p in layers.iterdir()) == ["Down", "Parameters", "Upstream"]
    assert [p.name for p in (layers / "Down").iterdir()] == [
        "status.json"
    ]  # nothing of Down but its run record
    assert flow.execution("bad").status.layers["Down"] == "failed"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_join_reads_an_attribute_split_zero_did_not_store(tmp_path: Path, executor: Any) -> None:
    class Partial(Flow): ...

    @Partial.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(x=[0, 1, 2])

    @Partial.register(
        foreach=ForEach(parameters=[Parameter(layer=Items, attribute="x")]), catch=Catch(ZeroDivisionError)
    )
    class Invert(Layer):
        def __call__(self, items: Items) -> None:
            self.value = 1 / items.x

    @Partial.register
    class Join(Layer):
        def __call__(self, invert: Invert) -> None:
            self.later = list(invert.value[1:])
            self.has_nothing = hasattr(invert, "nothing")

    execution = Partial(datastore=datastores.Local(tmp_path), executor=executor())()
    assert execution.layer(Join).later == [1.0, 0.5]
    assert execution.layer(Join).has_nothing is False
    with pytest.raises(AttributeError, match="finished without assigning it"):
        execution.layer(Invert).value[0]


# ---- group commit: finished splits' records are written in batches -------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_wide_foreach_costs_a_few_writes_not_one_per_split(
    tmp_path: Path, executor: type[executors.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "INTERVAL", 30.0)  # one batch per layer, however slow the machine
    n = 1000
    store = CountingLocal(tmp_path)
    execution = Batched(datastore=store, executor=executor(concurrency=2))(execution="wide", n=n)
    assert execution.layer(Sum).total == n * (n - 1)
    assert batch_files(tmp_path, "wide", "Double") == ["0-999.json"]
    # Small values are inline: nothing was written under artifacts/, and a handful of writes in all.
    assert [key for key in store.writes if key.startswith("artifacts/")] == []
    records = [key for key in store.writes if key.endswith("status.json")]
    # The run records: the execution's at start and end, each layer's at its end (unless its layer
    # record carries it, Record.ran: a quick layer on Thread), and at its start too for a layer that
    # ran longer than the status plugin's RUNNING_AFTER.
    assert 2 <= len(records) <= 2 + 2 * 3, records
    assert len(store.writes) - len(records) < 15, store.writes
    record = store_for(execution).record("Double")
    assert record is not None and record.splits == n
    assert record.batches == {"0-999.json": ((0, n - 1),)} and record.artifacts == ("marker", "value")
    assert execution.layer(Double).marker[0] == 0 and execution.layer(Double).marker[100] == 100
    with pytest.raises(AttributeError, match="finished without assigning it"):
        execution.layer(Double).marker[1]


def test_batches_cover_every_split_exactly_once_at_the_default_interval(tmp_path: Path) -> None:
    n = 3000
    execution = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())(
        execution="default", n=n
    )
    assert execution.layer(Sum).total == n * (n - 1)
    finished = store_for(execution).finished_splits("Double")
    assert sorted(finished) == list(range(n))
    names = batch_files(tmp_path, "default", "Double")
    assert 1 <= len(names) < n
    bounds = [unwrap(layout.parse_split_batch(name)) for name in names]
    assert min(first for first, _ in bounds) == 0 and max(last for _, last in bounds) == n - 1


def test_the_locator_finds_splits_in_overlapping_batches() -> None:
    # Splits finish out of order, so consecutive batches' index ranges may overlap.
    names = ["0-9.json", "5-20.json", "21-21.json", "30-40.json", "nonsense.json", "9-3.json"]
    locator = _Locator.from_names(names)
    found: dict[int, Any] = {i: locator.candidates(i) for i in (0, 4, 5, 9, 10, 21, 25, 40, 41)}
    assert found == {
        0: ["0-9.json"],
        4: ["0-9.json"],
        5: ["5-20.json", "0-9.json"],
        9: ["5-20.json", "0-9.json"],
        10: ["5-20.json"],
        21: ["21-21.json"],
        25: [],
        40: ["30-40.json"],
        41: [],
    }


def test_a_finished_layer_finds_each_split_in_one_batch_even_after_a_straggler() -> None:
    # A straggler's batch spans from its own index to the end; the record's exact runs keep every
    # other lookup to the one batch that holds the split.
    record = datastores.Record(
        "F",
        "L",
        20_000,
        {"0-4.json": ((0, 4),), "5-19999.json": ((5, 5), (400, 19_999)), "6-399.json": ((6, 399),)},
    )
    locator = _Locator.from_record(record)
    assert [locator.candidates(i) for i in (0, 5, 6, 399, 400, 19_999, 20_000)] == [
        ["0-4.json"],
        ["5-19999.json"],
        ["6-399.json"],
        ["6-399.json"],
        ["5-19999.json"],
        ["5-19999.json"],
        [],
    ]


# ---- scheduling cost ----------------------------------------------------------------------------


class Linear(Flow): ...


@Linear.register
class Range(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))
        self.offset = 1


@Linear.register(
    foreach=ForEach(
        parameters=[Parameter(layer=Range, attribute="item"), Parameter(layer=Range, attribute="offset")]
    )
)
class Bump(Layer):
    def __call__(self, source: Range) -> None:
        self.value = source.item + source.offset


@Linear.register(foreach=ForEach(parameters=[Parameter(layer=Bump, attribute="value", index=None)]))
class Again(Layer):
    def __call__(self, bump: Bump) -> None:
        self.value = bump.value * 2


@Linear.register
class Gather(Layer):
    def __call__(self, again: Again) -> None:
        self.total = sum(again.value)


def test_scheduling_cost_is_linear_in_the_number_of_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._runtime import foreach, layer_records
    from laminar._storage.cache import MetadataCache

    # Without the metadata cache every lookup is a read, so the reads count the work itself (each
    # layer record written at once: one held in flight, waiting for others, would read for free).
    monkeypatch.setattr(MetadataCache, "get", lambda self, key: None)
    monkeypatch.setattr(layer_records, "INTERVAL", 0.0)
    grids = []
    real_grid = foreach.grid
    monkeypatch.setattr(foreach, "grid", lambda *args: grids.append(args[1]) or real_grid(*args))
    counts = {}
    archive_reads = {}
    for n in (50, 200):
        grids.clear()
        store = CountingLocal(tmp_path / str(n))
        execution = Linear(datastore=store, executor=executors.Thread())(n=n)
        assert execution.layer(Gather).total == sum(2 * (i + 1) for i in range(n))
        counts[n] = len(store.reads) + len(store.listings)
        archive_reads[n] = sum(1 for key in store.reads if "/layers/Range/" in key)
        assert all("/layers/Range/" not in prefix for prefix in store.listings)
        assert sorted(grids) == ["Again", "Bump"]  # each foreach grid is computed once
    assert counts[50] > 50 and counts[200] <= 4.5 * counts[50], counts
    # The foreach's upstream archives are read a bounded number of times, not once per split (in
    # its layer record, which holds its one split, read too whenever the uncached record is; while
    # that record is written behind, this process reads it from memory instead).
    assert max(archive_reads.values()) <= 8, archive_reads
