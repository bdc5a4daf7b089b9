"""The run object, one store per execution, and a plugin manager per flow (issue #25 items 1, 2).

Each run or resume has one run object, handed to every lifecycle hook; the built-in plugins and
laminar-otel keep their state of a run in its stash, so executions running at once in one process
keep separate records, progress and spans. A flow's plugins are its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import laminar_otel
import pytest
from laminar import Execution, Flow, Layer, Parameters
from laminar._plugins.manager import plugin_manager
from laminar._storage import layout
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.plugins import Run, Stash, StashKey, hookimpl
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Pair(Flow): ...


@Pair.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(parameters.n)))


@Pair.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Work(Layer):
    def __call__(self, items: Items) -> None:
        self.double = items.item * 2


@Pair.register
class Total(Layer):
    def __call__(self, work: Work) -> None:
        self.total = sum(work.double)


# ---- a plugin written against the hookspecs as they were before the run object ----------------------
class Earlier:
    """Takes ``execution`` and ``layer`` only, as every plugin written before ``run`` existed does."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @hookimpl
    def laminar_execution_started(self, execution: Execution) -> None:
        self.events.append(("started", execution.id))

    @hookimpl
    def laminar_layer_started(self, layer: Layer, splits: int) -> None:
        self.events.append(("layer", layer.name, splits))

    @hookimpl
    def laminar_split_finished(self, layer: Layer, index: int | None, error: BaseException | None) -> None:
        self.events.append(("split", layer.name, index, error))

    @hookimpl
    def laminar_layer_finished(self, layer: Layer, error: BaseException | None) -> None:
        self.events.append(("layer done", layer.name, error))

    @hookimpl
    def laminar_execution_finished(self, execution: Execution, error: BaseException | None) -> None:
        self.events.append(("finished", execution.id, error))


def test_a_plugin_written_before_the_run_object_keeps_working(tmp_path: Path) -> None:
    flow = Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    earlier = Earlier()
    assert flow.configuration.plugins is not None
    flow.configuration.plugins.register(earlier)
    execution = flow(execution="old-style", n=3)
    assert execution.layer(Total).total == 6
    assert earlier.events[0] == ("started", "old-style")
    assert ("layer", "Work", 3) in earlier.events and ("layer", "Total", 1) in earlier.events
    assert sorted(e[2] for e in earlier.events if e[:2] == ("split", "Work")) == [0, 1, 2]
    assert ("layer done", "Total", None) in earlier.events
    assert earlier.events[-1] == ("finished", "old-style", None)


# ---- the run object --------------------------------------------------------------------------------
COUNTS = StashKey[dict[str, int]]()


class Counting:
    """Keeps its state of a run in the run's stash, as the built-in plugins do."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.counted: list[dict[str, int]] = []

    @hookimpl
    def laminar_execution_started(self, run: Run) -> None:
        self.runs.append(run)
        run.stash[COUNTS] = {}

    @hookimpl
    def laminar_split_finished(self, layer: Layer, run: Run) -> None:
        self.runs.append(run)
        counts = run.stash[COUNTS]
        counts[layer.name] = counts.get(layer.name, 0) + 1

    @hookimpl
    def laminar_execution_finished(self, run: Run) -> None:
        self.runs.append(run)
        self.counted.append(run.stash[COUNTS])


def test_every_event_of_a_run_gets_the_same_run_object_with_the_execution_s_own_store(
    tmp_path: Path,
) -> None:
    flow = Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    counting = Counting()
    assert flow.configuration.plugins is not None
    flow.configuration.plugins.register(counting)
    before = time.time()
    execution = flow(execution="one-run", n=3)
    [run] = {id(run): run for run in counting.runs}.values()
    assert run.execution is execution and run.store is execution.store
    assert run.resumed is False and before <= run.started <= time.time()
    assert counting.counted == [{"Items": 1, "Work": 3, "Total": 1}]
    assert repr(run).startswith("Run(flow=Pair, execution='one-run', resumed=False")

    resumed = execution.resume()  # a resume is a run of its own, with a fresh stash
    assert len({id(run) for run in counting.runs}) == 2
    again = counting.runs[-1]
    assert again.resumed is True and again.execution is not execution
    assert again.store is resumed.store and again.stash is not run.stash
    assert counting.counted[-1] == {}  # every layer had finished: nothing ran again


def test_a_stash_gives_back_what_was_put_under_each_key() -> None:
    first, second = StashKey[int](), StashKey[str]()
    stash = Stash()
    assert first not in stash and stash.get(first, None) is None and len(stash) == 0
    stash[first] = 1
    assert stash.setdefault(second, "two") == "two" and stash.setdefault(second, "other") == "two"
    assert (stash[first], stash[second], len(stash)) == (1, "two", 2)
    del stash[first]
    assert first not in stash and second in stash
    with pytest.raises(KeyError):
        stash[first]


# ---- one plugin manager per flow -------------------------------------------------------------------
class Seen:
    def __init__(self) -> None:
        self.flows: list[str] = []

    @hookimpl
    def laminar_execution_started(self, execution: Execution) -> None:
        self.flows.append(execution.flow.name)


class Other(Flow): ...


@Other.register
class Alone(Layer):
    def __call__(self) -> None:
        self.value = 1


def test_two_flows_configured_with_different_plugins_do_not_see_each_other_s(tmp_path: Path) -> None:
    pair = Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    installed = Seen()
    plugin_manager().register(installed)  # installed now: the flows made from now on have it
    try:
        other = Other(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    finally:
        plugin_manager().unregister(installed)
    own_pair, own_other = Seen(), Seen()
    assert pair.configuration.plugins is not None and other.configuration.plugins is not None
    pair.configuration.plugins.register(own_pair)
    other.configuration.plugins.register(own_other)
    pair(n=1)
    other()
    assert own_pair.flows == ["Pair"] and own_other.flows == ["Other"]
    assert installed.flows == ["Other"]  # made before it was installed, Pair never had it
    assert pair.configuration.plugins is not other.configuration.plugins
    assert pair.configuration.plugins.get_plugin("laminar.status") is not None  # built-ins in each


# ---- two executions at once, with the status, progress and otel plugins on ---------------------------
class Left(Flow): ...


class Right(Flow): ...


#: Both executions' first splits wait here for each other: the two runs are surely under way at once.
meeting = threading.Barrier(2, timeout=30)


@Left.register
@Right.register
class Parts(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(parameters.n)))


@Left.register(foreach=ForEach(parameters=[Parameter(layer=Parts, attribute="item")]))
@Right.register(foreach=ForEach(parameters=[Parameter(layer=Parts, attribute="item")]))
class Shared(Layer):
    """A layer of both flows, with a different split count in each."""

    def __call__(self, parts: Parts) -> None:
        if parts.item == 0:
            meeting.wait()
        self.value = parts.item


@Right.register
class Extra(Layer):
    def __call__(self, shared: Shared) -> None:
        self.total = sum(shared.value)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    laminar_otel.tracer_provider = provider
    yield exporter
    laminar_otel.tracer_provider = None
    provider.shutdown()


def _children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def test_two_executions_at_once_keep_separate_records_progress_and_spans(
    tmp_path: Path,
    exporter: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAMINAR_PROGRESS", "plain")
    meeting.reset()
    datastore = datastores.Local(tmp_path)
    flows = {
        "left": Left(datastore=datastore, executor=executors.Thread()),
        "right": Right(datastore=datastore),
    }
    flows["right"].configuration.executor = executors.Thread()
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            flows[name](execution=f"{name}-1", n=2 if name == "left" else 5)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in flows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and not any(thread.is_alive() for thread in threads)

    # the run records: each execution's own layers, with its own split counts
    left, right = flows["left"].execution("left-1"), flows["right"].execution("right-1")
    assert left.status == "succeeded" and right.status == "succeeded"
    assert sorted(left.status.layers) == ["Parts", "Shared"]
    assert sorted(right.status.layers) == ["Extra", "Parts", "Shared"]
    assert left.status.layers["Shared"].splits == 2 and right.status.layers["Shared"].splits == 5
    assert sorted(left.status.layers["Shared"].attempts) == [0, 1]
    assert sorted(right.status.layers["Shared"].attempts) == [0, 1, 2, 3, 4]

    # the progress lines: each run counts its own layers and splits
    lines = capsys.readouterr().err.splitlines()
    assert "laminar: Left left-1: layer Shared started: 2 splits [1/2 layers]" in lines
    assert "laminar: Right right-1: layer Shared started: 5 splits [1/3 layers]" in lines
    assert any(line.startswith("laminar: Left left-1: layer Shared finished: 2/2 splits") for line in lines)
    assert any(line.startswith("laminar: Right right-1: layer Shared finished: 5/5 splits") for line in lines)
    assert any(
        line.startswith("laminar: Left left-1: succeeded in") and "[2/2 layers]" in line for line in lines
    )
    assert any(
        line.startswith("laminar: Right right-1: succeeded in") and "[3/3 layers]" in line for line in lines
    )

    # the spans: each execution's layers and splits under its own span
    spans = exporter.get_finished_spans()
    roots = {
        str((span.attributes or {})["laminar.execution.id"]): span
        for span in spans
        if span.name.startswith("execution ")
    }
    assert sorted(roots) == ["left-1", "right-1"]
    for execution, layers, splits in (
        ("left-1", ["layer Parts", "layer Shared"], 2),
        ("right-1", ["layer Extra", "layer Parts", "layer Shared"], 5),
    ):
        children = _children(spans, roots[execution])
        assert sorted(span.name for span in children) == layers
        [shared] = [span for span in children if span.name == "layer Shared"]
        assert shared.attributes is not None and shared.attributes["laminar.layer.splits"] == splits
        assert len(_children(spans, shared)) == splits
        assert all(span.end_time is not None for span in [roots[execution], *children])


def test_disabled_reaches_a_flow_made_before_it_and_gives_the_plugin_back_after(tmp_path: Path) -> None:
    from laminar.plugins import disabled

    flow = Other(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with disabled("laminar.status"):
        quiet = flow(execution="quiet")
    assert not (tmp_path / layout.execution_status("Other", "quiet")).exists()
    assert (tmp_path / layout.execution_metadata("Other", "quiet")).exists()  # it ran and stored
    assert quiet.layer(Alone).value == 1
    assert flow(execution="recorded").status == "succeeded"  # registered again afterwards
