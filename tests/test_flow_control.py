"""Issue 3: fan-out and joins, conditions, hooks, recovery (SPEC "Fan-out" and "Control").

Every flow test runs on the Thread and on the Process executor against a Local datastore. Side
effects that must be seen across processes (how often a split ran, which hooks ran in what order)
go to files below ``tmp_path``, whose path reaches the layers as a flow parameter.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, CountingLocal, executions_in
from laminar import Flow, Layer, Parameters
from laminar._runtime.context import store_for
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import Catch, Container, ForEach, Parameter, Retry
from laminar.errors import ConfigurationError, FlowDefinitionError
from laminar.types import unwrap


def append(path: str | Path, line: str) -> None:
    """Append one line; O_APPEND keeps lines whole across processes."""
    with open(path, "a") as file:
        file.write(line + "\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


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
            # Incompressible items larger than artifacts.INLINE_LIMIT: each is an artifact of its own.
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
    iterator = iter(items)
    assert next(iterator).startswith(b"value 0 ") and len(artifact_reads()) == 6
    # Each item is its own artifact: the archive lists 100 of them.
    archive = store_for(execution).archive("Many", 0, "item")
    assert archive is not None and archive.sharded
    assert len({artifact.hexdigest for artifact in archive.artifacts}) == 100


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


# ---- hooks --------------------------------------------------------------------------------------


class Hooked(Flow):
    @hooks.execution
    def flow_wraps(self, parameters: Parameters) -> Any:  # a flow hook: applies to every layer
        append(parameters.log, f"{self.name} flow-execution before {self.index}")
        yield
        append(parameters.log, f"{self.name} flow-execution after {self.index}")


@Hooked.register
class Config(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(memory=[2000, 3000, 4000])


@Hooked.register(
    foreach=ForEach(parameters=[Parameter(layer=Config, attribute="memory")]),
    container=Container(cpu=2, memory=1000, image="python:3.12", command="python flow.py", workdir="/w"),
)
class Work(Layer):
    @hooks.submission
    def size(self, config: Config, parameters: Parameters) -> None:
        # In the scheduler, a dependency's sharded attribute reads as the whole Accessor.
        self.configuration.container.memory = config.memory[unwrap(self.index)]
        append(parameters.log, f"Work submission size {self.index}")

    @hooks.submission
    def around_submission(self, parameters: Parameters) -> Any:
        append(parameters.log, f"Work submission before {self.index}")
        yield
        append(parameters.log, f"Work submission after {self.index}")

    @hooks.execution
    def first(self, parameters: Parameters) -> None:
        append(parameters.log, f"Work execution first {self.index}")

    @hooks.execution
    def second(self, parameters: Parameters) -> Any:
        append(parameters.log, f"Work execution second before {self.index}")
        yield
        append(parameters.log, f"Work execution second after {self.index}")

    def __call__(self, config: Config, parameters: Parameters) -> None:
        append(parameters.log, f"Work call {self.index}")
        container = self.configuration.container
        self.container = (
            container.cpu,
            container.memory,
            container.image,
            container.command,
            container.workdir,
        )
        self.memory = config.memory  # the one item of this split
        self.pid = os.getpid()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_hooks_in_definition_order_and_submission_changes_apply_to_one_split(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    log = tmp_path / "log"
    flow = Hooked(datastore=datastores.Local(tmp_path / "store"), executor=executor(concurrency=1))
    execution = flow(log=str(log))
    work = execution.layer(Work)
    assert list(work.container) == [(2, m, "python:3.12", "python flow.py", "/w") for m in (2000, 3000, 4000)]
    assert list(work.memory) == [2000, 3000, 4000]
    assert Hooked.registry["Work"].configuration.container.memory == 1000  # the definition is untouched

    def split(i: int) -> list[str]:
        return [
            f"Work submission size {i}",  # submission hooks: in the scheduler, in definition order
            f"Work submission before {i}",
            f"Work flow-execution before {i}",  # where the split runs: the flow's hooks first
            f"Work execution first {i}",
            f"Work execution second before {i}",
            f"Work call {i}",
            f"Work execution second after {i}",  # code after `yield` runs after, in reverse order
            f"Work flow-execution after {i}",
            f"Work submission after {i}",
        ]

    assert lines(log) == [
        "Config flow-execution before None",
        "Config flow-execution after None",
        *split(0),
        *split(1),
        *split(2),
    ]
    if executor is executors.Process:
        assert os.getpid() not in set(work.pid)  # execution hooks and the call run in a worker


class Conditional(Flow): ...


@Conditional.register
class Gate(Layer):
    @hooks.entry
    def enabled(self, parameters: Parameters) -> Any:
        append(parameters.log, "Gate entry")
        return parameters.gate  # truthy runs the layer, falsy skips it

    def __call__(self) -> None:
        self.opened = True


@Conditional.register
class AfterGate(Layer):  # no entry hook: skipped when a dependency was skipped
    def __call__(self, gate: Gate) -> None:
        self.opened = gate.opened


@Conditional.register
class Fallback(Layer):
    @hooks.entry
    def when_skipped(self, after: AfterGate) -> bool:  # takes a layer: it becomes a dependency
        return not after.state.finished

    def __call__(self) -> None:
        self.used = True


@Conditional.register
class Always(Layer):
    @hooks.entry
    def first(self, parameters: Parameters) -> bool:
        append(parameters.log, "Always first")
        return True

    @hooks.entry
    def second(self, parameters: Parameters) -> str:
        append(parameters.log, "Always second")
        return "yes"

    def __call__(self, fallback: Fallback, after: AfterGate) -> None:  # runs even though AfterGate skipped
        self.states = (fallback.state.finished, after.state.finished)


@Conditional.register
class Never(Layer):
    @hooks.entry
    def no(self, parameters: Parameters) -> int:
        append(parameters.log, "Never no")
        return 0

    @hooks.entry
    def not_reached(self, parameters: Parameters) -> bool:  # entry hooks stop at the first falsy one
        append(parameters.log, "Never not_reached")
        return True

    def __call__(self) -> None:
        self.ran = True


@Conditional.register
class AfterNever(Layer):
    def __call__(self, never: Never, always: Always) -> None:
        self.ran = True


@pytest.mark.parametrize("executor", EXECUTORS)
def test_entry_hooks_skip_and_skips_propagate(tmp_path: Path, executor: type[executors.Executor]) -> None:
    log = tmp_path / "log"
    flow = Conditional(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    closed = flow(execution="closed", gate=False, log=str(log))
    assert flow.plan.dependencies["Fallback"] == frozenset({"AfterGate"})
    finished = {name: closed.layer(name).state.finished for name in flow.layer_names()}
    assert finished == {
        "Parameters": True,
        "Gate": False,
        "AfterGate": False,
        "Fallback": True,
        "Always": True,
        "Never": False,
        "AfterNever": False,
    }
    assert closed.layer(Always).states == (True, False)
    with pytest.raises(AttributeError, match="has not finished"):
        closed.layer(Gate).opened  # noqa: B018
    assert lines(log).count("Never not_reached") == 0
    assert lines(log).index("Always first") < lines(log).index("Always second")

    opened = flow(execution="opened", gate="yes", log=str(log))
    assert opened.layer(AfterGate).opened is True
    assert not opened.layer(Fallback).state.finished
    assert opened.layer(Always).states == (False, True)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_entry_hook_sees_its_own_state(tmp_path: Path, executor: type[executors.Executor]) -> None:
    class Own(Flow): ...

    seen: list[bool] = []

    @Own.register
    class Check(Layer):
        @hooks.entry
        def look(self) -> bool:
            seen.append(self.state.finished)
            return True

        def __call__(self) -> None:
            self.ok = True

    execution = Own(datastore=datastores.Local(tmp_path), executor=executor())()
    assert seen == [False]  # entry hooks run in the scheduler, whatever the executor
    assert execution.layer(Check).state.finished


def test_entry_hook_cannot_be_a_generator() -> None:
    with pytest.raises(
        FlowDefinitionError, match=r"entry hook .*is a generator; .*use `return`, not `yield`"
    ):

        class Bad(Layer):
            @hooks.entry
            def maybe(self) -> Any:
                yield True


@pytest.mark.parametrize("executor", EXECUTORS)
def test_flow_class_entry_hook_applies_to_every_layer(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Selective(Flow):
        @hooks.entry
        def only_listed(self, parameters: Parameters) -> bool:
            return self.name in parameters.run

    @Selective.register
    class One(Layer):
        def __call__(self) -> None:
            self.ok = True

    @Selective.register
    class Two(Layer):
        def __call__(self) -> None:
            self.ok = True

    @Selective.register
    class Three(Layer):
        def __call__(self, two: Two) -> None:
            self.ok = True

    execution = Selective(datastore=datastores.Local(tmp_path), executor=executor())(run=["One", "Three"])
    finished = [execution.layer(name).state.finished for name in ("One", "Two", "Three")]
    # Three has an entry hook (the flow's), so the hook decides even though Two was skipped.
    assert finished == [True, False, True]


# ---- recovery: Catch, Retry, resume -------------------------------------------------------------


class Recovering(Flow): ...


@Recovering.register(catch=Catch(TypeError, IOError))
class Partial(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.before = "kept"
        if parameters.error == "io":
            raise FileNotFoundError("no such file")  # a subclass of IOError (OSError)
        if parameters.error == "type":
            raise TypeError("bad type")
        if parameters.error == "value":
            raise ValueError("not caught")
        self.after = "also kept"


@Recovering.register
class UsesPartial(Layer):
    def __call__(self, partial: Partial) -> None:
        self.seen = partial.before
        self.finished = partial.state.finished


@pytest.mark.parametrize("executor", EXECUTORS)
def test_catch_ends_the_layer_finished_with_what_it_assigned(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    flow = Recovering(datastore=datastores.Local(tmp_path), executor=executor())
    caught = flow(execution="caught", error="io")
    assert caught.layer(Partial).state.finished
    assert caught.layer(Partial).before == "kept"
    assert (caught.layer(UsesPartial).seen, caught.layer(UsesPartial).finished) == ("kept", True)
    with pytest.raises(AttributeError, match=r"finished without assigning it \(it stored: before\)"):
        caught.layer(Partial).after  # noqa: B018

    typed = flow(execution="typed", error="type")
    assert typed.layer(Partial).state.finished and typed.layer(UsesPartial).seen == "kept"

    clean = flow(execution="clean", error=None)
    assert clean.layer(Partial).after == "also kept"

    with pytest.raises(ValueError, match="not caught"):
        flow(execution="uncaught", error="value")
    assert not flow.execution("uncaught").layer(Partial).state.finished


class CaughtSplits(Flow): ...


@CaughtSplits.register
class Divisors(Layer):
    def __call__(self) -> None:
        self.shard(divisor=[4, 0, 2])


@CaughtSplits.register(
    foreach=ForEach(parameters=[Parameter(layer=Divisors, attribute="divisor")]), catch=Catch(ArithmeticError)
)
class Divide(Layer):
    def __call__(self, divisors: Divisors) -> None:
        self.divisor = divisors.divisor
        self.quotient = 8 // divisors.divisor  # ZeroDivisionError (an ArithmeticError) in split 1


@CaughtSplits.register
class Quotients(Layer):
    def __call__(self, divide: Divide) -> None:
        self.divisors = list(divide.divisor)
        self.first = divide.quotient[0]
        try:
            divide.quotient[1]
        except AttributeError as error:
            self.missing = str(error)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_catch_in_a_foreach_keeps_each_splits_artifacts(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    execution = CaughtSplits(datastore=datastores.Local(tmp_path), executor=executor())()
    quotients = execution.layer(Quotients)
    assert (quotients.divisors, quotients.first) == ([4, 0, 2], 2)
    assert "Divide has no artifact 'quotient'" in quotients.missing
    assert "finished without assigning it (it stored: divisor)" in quotients.missing
    assert execution.layer(Divide).quotient[2] == 4


class Retrying(Flow): ...


@Retrying.register(retry=Retry(attempts=3, delay=0.01, backoff=2, jitter=0.1))
class Flaky(Layer):
    @hooks.retry
    def plain(self, parameters: Parameters) -> None:
        append(parameters.log, f"retry plain {self.attempt}")

    @hooks.retry
    def note_retry(self, parameters: Parameters) -> Any:
        append(parameters.log, f"retry hook before attempt {self.attempt} pid {os.getpid()}")
        yield
        append(parameters.log, f"retry hook after attempt {self.attempt}")

    def __call__(self, parameters: Parameters) -> None:
        append(parameters.log, f"call attempt {self.attempt}")
        if self.attempt < parameters.failures:
            raise RuntimeError(f"flaky on attempt {self.attempt}")
        self.attempt_seen = self.attempt


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retry_runs_again_with_the_attempt_number(tmp_path: Path, executor: type[executors.Executor]) -> None:
    log = tmp_path / "log"
    flow = Retrying(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    execution = flow(execution="twice", failures=2, log=str(log))
    assert execution.layer(Flaky).attempt_seen == 2
    pid = os.getpid()
    assert lines(log) == [
        "call attempt 0",
        "retry plain 1",  # retry hooks run in the scheduler, in definition order, before the back-off
        f"retry hook before attempt 1 pid {pid}",
        "retry hook after attempt 1",  # after the back-off, before the attempt
        "call attempt 1",
        "retry plain 2",
        f"retry hook before attempt 2 pid {pid}",
        "retry hook after attempt 2",
        "call attempt 2",
    ]

    log.unlink()
    with pytest.raises(RuntimeError, match="flaky on attempt 2") as error:
        flow(execution="exhausted", failures=5, log=str(log))
    assert "attempt 2" in "\n".join(getattr(error.value, "__notes__", []))
    assert [line for line in lines(log) if line.startswith("call")] == [f"call attempt {i}" for i in range(3)]
    assert not flow.execution("exhausted").layer(Flaky).state.finished


def test_retry_back_off_follows_delay_backoff_and_jitter() -> None:
    retry = Retry(attempts=5, delay=0.5, backoff=3, jitter=0.1)
    for attempt, base in [(1, 0.5), (2, 1.5), (3, 4.5)]:
        waits = [retry.wait(attempt) for _ in range(200)]
        assert all(base <= wait <= base * 1.1 for wait in waits)
        assert len(set(waits)) > 1  # the jitter is random
    assert Retry(delay=0.2, backoff=2, jitter=0).wait(3) == pytest.approx(0.8)
    spec = Retry(attempts=3, delay=0.1, backoff=2, jitter=0.1)  # SPEC's example: 0.1 s, then 0.2 s
    assert all(0.1 <= spec.wait(1) <= 0.11 and 0.2 <= spec.wait(2) <= 0.22 for _ in range(100))


class Resumable(Flow): ...


@Resumable.register
class Numbers1k(Layer):
    def __call__(self, parameters: Parameters) -> None:
        append(parameters.root + "/runs", "Numbers1k")
        self.shard(n=range(parameters.n))


@Resumable.register(foreach=ForEach(parameters=[Parameter(layer=Numbers1k, attribute="n")]))
class MaybeFails(Layer):
    def __call__(self, numbers: Numbers1k, parameters: Parameters) -> None:
        append(parameters.root + "/runs", f"split {self.index}")
        if numbers.n in parameters.failing and os.path.exists(parameters.root + "/broken"):
            raise RuntimeError(f"split {self.index} is broken")
        self.square = numbers.n**2


@Resumable.register
class SumSquares(Layer):
    def __call__(self, fails: MaybeFails) -> None:
        self.total = sum(fails.square)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_reruns_only_the_splits_that_did_not_finish(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    n = 1000
    failing = [n - 3, n - 2, n - 1]
    (tmp_path / "broken").touch()
    flow = Resumable(datastore=datastores.Local(tmp_path / "store"), executor=executor(concurrency=2))
    with pytest.raises(RuntimeError, match=r"split 99\d is broken"):
        flow(execution="resume-me", root=str(tmp_path), n=n, failing=failing)
    first = lines(tmp_path / "runs")
    assert first.count("Numbers1k") == 1
    assert {f"split {i}" for i in range(n - 3)} <= set(first)  # every split before the failures ran
    assert not flow.execution("resume-me").layer(MaybeFails).state.finished

    (tmp_path / "broken").unlink()
    (tmp_path / "runs").unlink()
    resumed = flow.execution("resume-me").resume()
    assert resumed.id == "resume-me" and resumed.retry
    rerun = lines(tmp_path / "runs")
    assert sorted(rerun) == sorted(f"split {i}" for i in failing)  # Numbers1k and 997 splits skipped
    assert resumed.layer(SumSquares).total == sum(i * i for i in range(n))
    assert resumed.layer(MaybeFails).square[n - 1] == (n - 1) ** 2

    (tmp_path / "runs").unlink()
    again = flow.execution("resume-me").resume()  # nothing left to do
    assert lines(tmp_path / "runs") == [] and again.layer(SumSquares).total == resumed.layer(SumSquares).total


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_after_early_failures_runs_each_unfinished_split_once(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    # A failing split stops new splits from starting, so splits after it may never have run: resume
    # runs exactly the splits without a split record (failed or never started), each once.
    n, failing = 200, [10, 100]
    (tmp_path / "broken").touch()
    root = tmp_path / "store"
    flow = Resumable(datastore=datastores.Local(root), executor=executor(concurrency=2))
    with pytest.raises(RuntimeError, match="is broken"):
        flow(execution="early", root=str(tmp_path), n=n, failing=failing)
    finished = set(store_for(flow.execution("early")).finished_splits("MaybeFails"))
    assert 10 not in finished and set(range(10)) <= finished

    (tmp_path / "broken").unlink()
    (tmp_path / "runs").unlink()
    resumed = flow.execution("early").resume()
    rerun = lines(tmp_path / "runs")
    assert sorted(rerun) == sorted(f"split {i}" for i in set(range(n)) - finished)
    assert resumed.layer(SumSquares).total == sum(i * i for i in range(n))


def test_resume_of_an_unknown_execution_is_refused(tmp_path: Path) -> None:
    flow = Resumable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(
        FlowDefinitionError, match="cannot resume execution nope of flow Resumable: it does not exist"
    ):
        flow.execution("nope").resume()
    assert executions_in(tmp_path) == []


@pytest.mark.parametrize("executor", EXECUTORS)
def test_container_defaults_and_configuration_readable_in_the_layer(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Sized(Flow): ...

    @Sized.register
    class Default(Layer):
        def __call__(self) -> None:
            container = self.configuration.container
            self.container = (
                container.cpu,
                container.memory,
                container.image,
                container.command,
                container.workdir,
            )

    execution = Sized(datastore=datastores.Local(tmp_path), executor=executor())()
    assert execution.layer(Default).container == (1, 1500, "python:3.11", "python main.py", "/laminar")
    assert Sized.registry["Default"].configuration.container == Container()


# ---- bad input ----------------------------------------------------------------------------------


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
    assert sorted(p.name for p in layers.iterdir()) == ["Parameters", "Upstream"]  # nothing of Down


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Retry(attempts=0), "Retry(attempts=...) must be at least 1 (the first try), got 0"),
        (lambda: Retry(attempts=-2), "Retry(attempts=...) must be at least 1 (the first try), got -2"),
        (lambda: Retry(attempts=3, delay=-0.1), "Retry(delay=...) must be a number >= 0, got -0.1"),
        (lambda: Retry(backoff=-1), "Retry(backoff=...) must be a number >= 0, got -1"),
        (lambda: Retry(jitter=-1), "Retry(jitter=...) must be a number >= 0, got -1"),
        (
            lambda: Catch("not an exception"),
            "Catch() takes exception classes such as Catch(TypeError), got 'not an exception'",
        ),
        (
            lambda: Catch(ValueError, int),
            "Catch() takes exception classes such as Catch(TypeError), got <class 'int'>",
        ),
        (lambda: ForEach(parameters=[]), "ForEach(parameters=[...]) needs at least one Parameter"),
        (
            lambda: Parameter(layer=int, attribute="x"),
            "Parameter(layer=...) must be a Layer class, got <class 'int'>",
        ),  # type: ignore[arg-type]
        (
            lambda: Parameter(layer=Items, attribute="not valid"),
            "Parameter(attribute=...) must name an artifact of Items",
        ),
        (
            lambda: Parameter(layer=Items, attribute="x", index=-1),
            "Parameter(index=...) must be None or a split number >= 0",
        ),
    ],
)
def test_bad_configuration_values_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        make()
    assert message in str(error.value)


def test_register_refuses_a_wrong_configuration_type() -> None:
    class Wrong(Flow): ...

    with pytest.raises(ConfigurationError, match=r"register\(retry=...\) takes a Retry, got 3"):

        @Wrong.register(retry=3)  # type: ignore[arg-type]
        class A(Layer): ...


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
    from laminar._runtime import foreach
    from laminar._storage import store as store_module

    # Without the metadata cache every lookup is a read, so the reads count the work itself.
    monkeypatch.setattr(store_module._Cache, "get", lambda self, key: None)
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
        archive_reads[n] = sum(1 for key in store.reads if "/layers/Range/splits/" in key)
        assert all("/layers/Range/" not in prefix for prefix in store.listings)
        assert sorted(grids) == ["Again", "Bump"]  # each foreach grid is computed once
    assert counts[50] > 50 and counts[200] <= 4.5 * counts[50], counts
    # The foreach's upstream archives are read a bounded number of times, not once per split.
    assert 1 <= archive_reads[200] == archive_reads[50] <= 4, archive_reads


# ---- rules settled after review -------------------------------------------------------------------


def test_a_flow_hook_taking_a_layer_skips_that_layer_and_its_ancestors(tmp_path: Path) -> None:
    class Configured(Flow):
        @hooks.execution
        def announce(self, settings: Settings) -> None:
            self.prefix = settings.prefix

    @Configured.register
    class Base(Layer):
        def __call__(self) -> None:
            self.ready = True

    @Configured.register
    class Settings(Layer):
        def __call__(self, base: Base) -> None:
            self.prefix = ">"

    @Configured.register
    class Work(Layer):
        def __call__(self) -> None:
            self.out = self.prefix + "work"

    flow = Configured(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow.plan.dependencies["Work"] == {"Settings"}
    assert [h.function.__name__ for h in flow.plan.layer_hooks[("Settings", "execution")]] == []
    assert [h.function.__name__ for h in flow.plan.layer_hooks[("Base", "execution")]] == []
    assert flow().layer(Work).out == ">work"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_configuration_changes_never_reach_the_registry(tmp_path: Path, executor: Any) -> None:
    class Leak(Flow): ...

    @Leak.register(container=Container(memory=100))
    class Changes(Layer):
        def __call__(self) -> None:
            self.configuration.container.memory *= 2
            self.seen = self.configuration.container.memory

        @hooks.entry
        def decide(self) -> bool:
            self.configuration.container.memory += 1
            return True

    flow = Leak(datastore=datastores.Local(tmp_path), executor=executor())
    assert [flow().layer(Changes).seen for _ in range(2)] == [200, 200]
    assert Leak.registry["Changes"].configuration.container.memory == 100


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


def test_merging_one_layer_registered_differently_is_an_error() -> None:
    class First(Flow): ...

    class Second(Flow): ...

    @First.register(retry=Retry(attempts=2))
    @Second.register(retry=Retry(attempts=3))
    class Shared(Layer):
        def __call__(self) -> None: ...

    with pytest.raises(FlowDefinitionError, match="registered with different configurations in First"):

        class Both(First, Second): ...
