"""laminar-otel: a span per execution, layer and split attempt, through the lifecycle hooks.

The spans go to an SDK ``TracerProvider`` with an in-memory exporter, handed to the plugin through
``laminar_otel.tracer_provider`` (OpenTelemetry's global provider can be set only once per process);
one test sets the global provider the way users do, in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import laminar_otel
import pytest
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.plugins import Run, hookimpl
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode


class Opened(SpanProcessor):
    """Every span started, to check that each one also ended."""

    def __init__(self) -> None:
        self.started: list[Span] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append(span)


@pytest.fixture
def opened() -> Opened:
    return Opened()


@pytest.fixture
def exporter(opened: Opened) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(opened)
    laminar_otel.tracer_provider = provider
    yield exporter
    laminar_otel.tracer_provider = None
    provider.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def test_the_plugin_is_registered_through_the_laminar_entry_point_group() -> None:
    from laminar._plugins.manager import plugin_manager  # internal: which plugins are registered

    assert plugin_manager().get_plugin("otel") is laminar_otel


class Traced(Flow): ...


@Traced.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(parameters.n)))


@Traced.register(
    foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]),
    retry=Retry(attempts=2, delay=0),
)
class Work(Layer):
    def __call__(self, items: Items) -> None:
        if items.item == 1 and self.attempt == 0:
            raise OSError("item 1 is not ready yet")
        self.value = items.item * 10


@Traced.register
class Gate(Layer):
    @hooks.entry
    def closed(self) -> bool:
        return False

    def __call__(self, work: Work) -> None:
        self.opened = True


def test_a_run_makes_a_span_per_execution_layer_and_split_attempt(
    tmp_path: Path, exporter: InMemorySpanExporter, opened: Opened
) -> None:
    flow = Traced(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))
    execution = flow(execution="traced", n=3)
    assert execution.status == "succeeded"
    spans = exporter.get_finished_spans()

    [root] = named(spans, "execution Traced")
    assert root.parent is None
    assert root.attributes == {
        "laminar.flow": "Traced",
        "laminar.execution.id": "traced",
        "laminar.execution.resumed": False,
        "laminar.execution.status": "succeeded",
    }
    assert root.status.status_code is StatusCode.UNSET

    [items] = named(spans, "layer Items")
    [work] = named(spans, "layer Work")
    for layer, splits in ((items, 1), (work, 3)):
        assert parent_of(layer) == span_id(root)
        assert layer.attributes is not None
        assert layer.attributes["laminar.layer.splits"] == splits
        assert layer.attributes["laminar.layer.status"] == "finished"

    [gate] = named(spans, "layer Gate")  # skipped: a span that starts and ends at once
    assert parent_of(gate) == span_id(root)
    assert gate.attributes is not None
    assert gate.attributes["laminar.layer.status"] == "skipped"
    assert gate.attributes["laminar.layer.reason"] == "an entry hook returned a falsy value"

    [items_split] = named(spans, "split Items")
    assert parent_of(items_split) == span_id(items)
    assert items_split.attributes == {
        "laminar.layer": "Items",
        "laminar.split.attempt": 0,
        "laminar.split.status": "succeeded",
    }  # a layer without ForEach: no index

    attempts = named(spans, "split Work")
    assert len(attempts) == 4  # 3 splits, one of them tried twice
    assert all(parent_of(span) == span_id(work) for span in attempts)
    by_split = {
        (span.attributes["laminar.split.index"], span.attributes["laminar.split.attempt"]): span
        for span in attempts
        if span.attributes is not None
    }
    assert sorted(by_split) == [(0, 0), (1, 0), (1, 1), (2, 0)]

    failed = by_split[(1, 0)]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "OSError: item 1 is not ready yet"
    assert failed.attributes is not None and failed.attributes["laminar.split.status"] == "retried"
    [event] = failed.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "OSError"
    assert event.attributes["exception.message"] == "item 1 is not ready yet"
    for key in ((0, 0), (1, 1), (2, 0)):
        succeeded = by_split[key]
        assert succeeded.status.status_code is StatusCode.UNSET and not succeeded.events
        assert succeeded.attributes is not None
        assert succeeded.attributes["laminar.split.status"] == "succeeded"
    # The retry follows the failed attempt; both lie within their layer, the layers within the run.
    assert failed.end_time is not None and by_split[(1, 1)].start_time is not None
    assert failed.end_time <= by_split[(1, 1)].start_time
    for child, parent in [(span, work) for span in attempts] + [(items, root), (work, root), (gate, root)]:
        assert child.start_time is not None and child.end_time is not None
        assert parent.start_time is not None and parent.end_time is not None
        assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time

    assert len({span.context.trace_id for span in spans if span.context is not None}) == 1  # one trace
    assert len(spans) == len(opened.started) == 9  # every span started also ended


class Broken(Flow): ...


@Broken.register
class Shards(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(parameters.n)))


@Broken.register
class Fine(Layer):
    def __call__(self) -> None:
        self.value = 1


@Broken.register(foreach=ForEach(parameters=[Parameter(layer=Shards, attribute="item")]))
class Fails(Layer):
    def __call__(self, shards: Shards, fine: Fine) -> None:
        if shards.item == 2:
            raise ValueError("item 2 is broken")
        self.value = shards.item


@Broken.register
class After(Layer):
    def __call__(self, fails: Fails) -> None:
        self.value = 2


def test_a_failing_run_has_an_execution_span_with_status_error(
    tmp_path: Path, exporter: InMemorySpanExporter, opened: Opened
) -> None:
    flow = Broken(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=1))
    with pytest.raises(ValueError, match="item 2 is broken"):
        flow(execution="broken", n=4)
    spans = exporter.get_finished_spans()

    [root] = named(spans, "execution Broken")
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "ValueError: item 2 is broken"
    assert root.attributes is not None and root.attributes["laminar.execution.status"] == "failed"
    assert [event.name for event in root.events] == ["exception"]

    [fails] = named(spans, "layer Fails")
    assert fails.status.status_code is StatusCode.ERROR
    assert fails.attributes is not None and fails.attributes["laminar.layer.status"] == "failed"
    [failed] = [
        span
        for span in named(spans, "split Fails")
        if span.attributes is not None and span.attributes["laminar.split.index"] == 2
    ]
    assert failed.attributes is not None and failed.attributes["laminar.split.status"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].attributes is not None
    assert failed.events[0].attributes["exception.message"] == "item 2 is broken"
    assert not named(spans, "layer After")  # never started: no span
    assert len(spans) == len(opened.started)  # every span started also ended


class Queued(Flow): ...


@Queued.register
class Items(Layer):
    def __call__(self) -> None:
        self.shard(item=list(range(100)))


@Queued.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Slowly(Layer):
    def __call__(self, items: Items) -> None:
        if items.item == 1:
            raise ValueError("item 1 is broken")
        time.sleep(0.02)
        self.value = items.item


def test_a_split_still_queued_when_the_run_fails_has_a_span_that_reads_not_started(
    tmp_path: Path, exporter: InMemorySpanExporter, opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_BATCH_SECONDS", "0")  # one split a hand-over: 64 queued at once
    flow = Queued(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))
    with pytest.raises(ValueError, match="item 1 is broken"):
        flow()
    spans = exporter.get_finished_spans()
    splits = {
        span.attributes["laminar.split.index"]: span
        for span in named(spans, "split Slowly")
        if span.attributes
    }
    status = {
        index: span.attributes["laminar.split.status"] for index, span in splits.items() if span.attributes
    }
    assert status[1] == "failed"
    queued = [index for index, told in status.items() if told == "not started"]
    assert len(queued) >= 50, status  # handed over (the window is 64), never run
    assert set(status.values()) == {"succeeded", "failed", "not started"}
    for index in queued:
        assert splits[index].status.status_code is StatusCode.UNSET and not splits[index].events
    assert len(spans) == len(opened.started)  # every span started also ended


BROKEN = {"item": 2}


class Resumed(Flow): ...


@Resumed.register
class Parts(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(parameters.n)))


@Resumed.register(foreach=ForEach(parameters=[Parameter(layer=Parts, attribute="item")]))
class Each(Layer):
    def __call__(self, parts: Parts) -> None:
        if parts.item == BROKEN["item"]:
            raise ValueError(f"item {parts.item} is broken")
        self.value = parts.item


def test_a_resume_is_a_trace_of_its_own_with_spans_only_for_what_runs_again(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    flow = Resumed(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=1))
    with pytest.raises(ValueError, match="item 2 is broken"):
        flow(execution="again", n=3)
    exporter.clear()
    BROKEN["item"] = -1
    try:
        assert flow.execution("again").resume().status == "succeeded"
    finally:
        BROKEN["item"] = 2
    spans = exporter.get_finished_spans()
    [root] = named(spans, "execution Resumed")
    assert root.attributes is not None and root.attributes["laminar.execution.resumed"] is True
    assert root.attributes["laminar.execution.status"] == "succeeded"
    [each] = named(spans, "split Each")  # splits 0 and 1 finished in the first run
    assert each.attributes is not None and each.attributes["laminar.split.index"] == 2


def test_spans_left_open_by_a_stopped_run_end_with_the_execution(exporter: InMemorySpanExporter) -> None:
    """Hooks called as a run stopping under its layers would: the execution's end closes the rest."""

    class Stopped(Flow): ...

    @Stopped.register
    class Slow(Layer):
        def __call__(self) -> None: ...

    execution = Stopped(datastore="memory://", executor="thread").execution("stopped")
    layer = execution.layer(Slow)
    run = Run(execution, execution.store, resumed=False, started=time.time())
    laminar_otel.laminar_execution_started(execution=execution, run=run)
    laminar_otel.laminar_layer_started(layer=layer, splits=2, run=run)
    laminar_otel.laminar_split_started(layer=layer, index=0, attempt=0, run=run)
    laminar_otel.laminar_split_started(layer=layer, index=1, attempt=0, run=run)
    laminar_otel.laminar_execution_finished(error=KeyboardInterrupt(), run=run)

    spans = exporter.get_finished_spans()
    assert sorted(span.name for span in spans) == [
        "execution Stopped",
        "layer Slow",
        "split Slow",
        "split Slow",
    ]
    [root] = named(spans, "execution Stopped")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None and root.attributes["laminar.execution.status"] == "cancelled"
    for span, status in [(span, "laminar.split.status") for span in named(spans, "split Slow")] + [
        (span, "laminar.layer.status") for span in named(spans, "layer Slow")
    ]:
        assert span.attributes is not None and span.attributes[status] == "cancelled"


def test_a_layer_stopped_before_its_splits_is_cancelled_and_one_without_a_grid_failed(
    exporter: InMemorySpanExporter,
) -> None:
    class Halted(Flow): ...

    @Halted.register
    class Waiting(Layer):
        def __call__(self) -> None: ...

    @Halted.register
    class Gridless(Layer):
        def __call__(self) -> None: ...

    execution = Halted(datastore="memory://", executor="thread").execution("halted")
    error = ValueError("another layer failed")
    run = Run(execution, execution.store, resumed=False, started=time.time())
    laminar_otel.laminar_execution_started(execution=execution, run=run)
    for layer, splits in ((execution.layer(Waiting), 3), (execution.layer(Gridless), 0)):
        laminar_otel.laminar_layer_started(layer=layer, splits=splits, run=run)
        laminar_otel.laminar_layer_finished(layer=layer, splits=splits, error=error, run=run)
    laminar_otel.laminar_execution_finished(error=error, run=run)

    [waiting] = named(exporter.get_finished_spans(), "layer Waiting")
    assert waiting.status.status_code is StatusCode.UNSET and waiting.attributes is not None
    assert waiting.attributes["laminar.layer.status"] == "cancelled"
    assert (
        waiting.attributes["laminar.layer.reason"]
        == "the run stopped first: ValueError: another layer failed"
    )
    [gridless] = named(exporter.get_finished_spans(), "layer Gridless")
    assert gridless.status.status_code is StatusCode.ERROR and gridless.attributes is not None
    assert gridless.attributes["laminar.layer.status"] == "failed"


def test_without_a_configured_sdk_the_plugin_keeps_nothing(tmp_path: Path) -> None:
    kept: list[bool] = []

    class Watcher:
        @hookimpl(trylast=True)  # after the otel plugin's own
        def laminar_layer_started(self, run: Run) -> None:
            kept.append(laminar_otel.SPANS in run.stash)

    laminar_otel.tracer_provider = NoOpTracerProvider()
    try:
        flow = Traced(datastore=datastores.Local(tmp_path), executor=executors.Thread())
        assert flow.configuration.plugins is not None
        flow.configuration.plugins.register(Watcher())
        assert flow(n=3).status == "succeeded"
    finally:
        laminar_otel.tracer_provider = None
    assert kept and not any(kept)  # no span recorded, no state kept while the run goes on


GLOBAL = textwrap.dedent(
    """
    import sys

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from laminar import Flow, Layer
    from laminar.configurations import datastores, executors

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


    class Globally(Flow): ...


    @Globally.register
    class A(Layer):
        def __call__(self) -> None:
            self.value = 1


    with trace.get_tracer("app").start_as_current_span("job") as job:
        Globally(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["execution Globally", "job", "layer A", "split A"], sorted(spans)
    assert spans["execution Globally"].parent is None  # its own trace, not the caller's current span
    assert spans["split A"].instrumentation_scope.name == "laminar"
    print("ok")
    """
)


def test_the_global_tracer_provider_is_used_as_users_configure_it(tmp_path: Path) -> None:
    script = tmp_path / "traced.py"
    script.write_text(GLOBAL)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
