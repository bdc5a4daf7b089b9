"""OpenTelemetry traces of Laminar runs, made by a plugin on the lifecycle hooks.

Installed (``pip install "laminar[otel]"``), this module is registered through the ``laminar``
entry-point group and every run makes:

- a span per execution (``execution <Flow>``): ``laminar.flow``, ``laminar.execution.id``,
  ``laminar.execution.resumed`` and, when it ends, ``laminar.execution.status`` (succeeded, failed or
  cancelled); a run that did not succeed records its error and has status ERROR;
- a child span per layer (``layer <Layer>``): ``laminar.layer``, ``laminar.layer.splits`` and
  ``laminar.layer.status`` (finished, failed, cancelled, skipped, with ``laminar.layer.reason`` for
  the last two); a layer whose own split failed for good (or whose ForEach grid could not be
  computed) has status ERROR. A skipped layer's span starts and ends at once;
- a child span per split attempt under its layer (``split <Layer>``): ``laminar.split.index`` (absent
  for a layer without ForEach), ``laminar.split.attempt`` and ``laminar.split.status`` (succeeded,
  retried, failed, cancelled, or not started: handed to the executor, which still queued it when the
  run failed or was stopped); a failed attempt records its exception and has status ERROR.

Only the OpenTelemetry API is used, with the global tracer provider (``trace.get_tracer("laminar")``),
so the application configures the SDK, its exporters and samplers the usual way. Set
:data:`tracer_provider` to use another provider for Laminar's spans alone (tests do).

The hooks are called on the scheduler's event loop, interleaved across splits and layers, so every
span is started with an explicit parent, never from the current context; nothing here makes a span
current. A run's open spans live in its run object's stash (``SPANS``), so executions running at
once in one process never share them. Each split hook is a few dictionary look-ups. When an
execution's span is not recorded (no SDK configured, or sampled out), its layers and splits make no
spans at all. When no provider could be configured (neither :data:`tracer_provider`, nor
``opentelemetry.trace`` imported by the application, nor ``OTEL_PYTHON_TRACER_PROVIDER`` set) no
span could be recorded, and a run does not import OpenTelemetry at all.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from laminar.plugins import Run, SplitNotStarted, StashKey, hookimpl

if TYPE_CHECKING:
    from laminar import Execution, Layer
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

__all__ = ["TRACER_NAME", "tracer_provider"]

#: The instrumentation scope of every span this plugin makes.
TRACER_NAME = "laminar"

#: The provider Laminar's spans go to; ``None`` (the default): OpenTelemetry's global one.
tracer_provider: trace.TracerProvider | None = None


@functools.cache
def _version() -> str | None:
    """This distribution's version, the instrumentation scope's (read once, when first traced)."""
    try:
        return metadata.version("laminar-otel")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
        return None


@dataclass
class _LayerSpans:
    tracer: Tracer
    span: Span
    splits: int
    context: Context  # its span as the parent of its splits' spans
    #: (index, attempt) -> the span of an attempt that has not ended yet
    attempts: dict[tuple[int | None, int], Span] = field(default_factory=dict)
    failed: BaseException | None = None  # the error of a split of its own that failed for good
    cancelled: bool = False  # a split of its own was cancelled
    attempted: bool = False  # a split of its own started


@dataclass
class _ExecutionSpans:
    tracer: Tracer
    span: Span
    context: Context  # its span as the parent of its layers' spans
    layers: dict[str, _LayerSpans] = field(default_factory=dict)  # layer name -> its open spans


#: The spans of one run, in its run object's stash; only a recorded execution's are kept.
SPANS = StashKey[_ExecutionSpans]()


def _layer(layer: Layer, run: Run) -> _LayerSpans | None:
    spans = run.stash.get(SPANS, None)
    return spans.layers.get(layer.name) if spans is not None else None


def _cancelled(error: BaseException) -> bool:
    return isinstance(error, (KeyboardInterrupt, asyncio.CancelledError))


def _fail(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# ---- execution -----------------------------------------------------------------------------------
def _may_record() -> bool:
    """Whether a provider that records could be in place: set here, configured by an application
    that imported OpenTelemetry's API, or named by the environment for the API to load."""
    return (
        tracer_provider is not None
        or "opentelemetry.trace" in sys.modules
        or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
    )


@hookimpl
def laminar_execution_started(execution: Execution, run: Run) -> None:
    if not _may_record():  # every span would be a no-op one: spare importing OpenTelemetry
        return
    from opentelemetry import trace

    tracer = trace.get_tracer(TRACER_NAME, _version(), tracer_provider=tracer_provider)
    span = tracer.start_span(
        f"execution {execution.flow.name}",
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root span, whatever is current
        attributes={
            "laminar.flow": execution.flow.name,
            "laminar.execution.id": execution.id,
            "laminar.execution.resumed": run.resumed,
        },
    )
    if span.is_recording():
        run.stash[SPANS] = _ExecutionSpans(tracer, span, trace.set_span_in_context(span))
    else:
        span.end()


@hookimpl
def laminar_execution_finished(error: BaseException | None, run: Run) -> None:
    spans = run.stash.get(SPANS, None)
    if spans is None:
        return
    del run.stash[SPANS]
    if error is None:
        spans.span.set_attribute("laminar.execution.status", "succeeded")
    else:
        spans.span.set_attribute("laminar.execution.status", "cancelled" if _cancelled(error) else "failed")
        _fail(spans.span, error)
    _close(spans)


def _close(run: _ExecutionSpans) -> None:
    """End every span of ``run`` still open (the run stopped under them), then the execution's own."""
    for spans in run.layers.values():
        for span in spans.attempts.values():
            span.set_attribute("laminar.split.status", "cancelled")
            span.end()
        spans.span.set_attribute("laminar.layer.status", "cancelled")
        spans.span.set_attribute("laminar.layer.reason", "the run ended before the layer did")
        spans.span.end()
    run.layers.clear()
    run.span.end()


# ---- layers --------------------------------------------------------------------------------------
@hookimpl
def laminar_layer_started(layer: Layer, splits: int, run: Run) -> None:
    execution = run.stash.get(SPANS, None)
    if execution is None:
        return
    from opentelemetry.trace import set_span_in_context

    span = execution.tracer.start_span(
        f"layer {layer.name}",
        context=execution.context,
        attributes={"laminar.layer": layer.name, "laminar.layer.splits": splits},
    )
    execution.layers[layer.name] = _LayerSpans(execution.tracer, span, splits, set_span_in_context(span))


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str, run: Run) -> None:
    execution = run.stash.get(SPANS, None)
    if execution is None:
        return
    span = execution.tracer.start_span(
        f"layer {layer.name}",
        context=execution.context,
        attributes={
            "laminar.layer": layer.name,
            "laminar.layer.splits": 0,
            "laminar.layer.status": "skipped",
            "laminar.layer.reason": reason,
        },
    )
    span.end()


@hookimpl
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None, run: Run) -> None:
    execution = run.stash.get(SPANS, None)
    spans = execution.layers.pop(layer.name, None) if execution is not None else None
    if spans is None:
        return
    for span in spans.attempts.values():  # pragma: no cover - every attempt ends before its layer
        span.set_attribute("laminar.split.status", "cancelled")
        span.end()
    span = spans.span
    span.set_attribute("laminar.layer.splits", splits)
    if error is None:
        span.set_attribute("laminar.layer.status", "finished")
    elif spans.failed is not None:
        span.set_attribute("laminar.layer.status", "failed")
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"{type(spans.failed).__name__}: {spans.failed}"))
    elif spans.splits == 0 and not spans.attempted and not _cancelled(error):  # no ForEach grid
        span.set_attribute("laminar.layer.status", "failed")
        _fail(span, error)
    else:
        span.set_attribute("laminar.layer.status", "cancelled")
        why = "the run was stopped" if spans.cancelled or _cancelled(error) else "the run stopped first"
        span.set_attribute("laminar.layer.reason", f"{why}: {type(error).__name__}: {error}")
    span.end()


# ---- split attempts (called once per attempt: a few dictionary look-ups each) ----------------------
@hookimpl
def laminar_split_started(layer: Layer, index: int | None, attempt: int, run: Run) -> None:
    spans = _layer(layer, run)
    if spans is None:
        return
    spans.attempted = True
    attributes: dict[str, str | int] = {"laminar.layer": layer.name, "laminar.split.attempt": attempt}
    if index is not None:
        attributes["laminar.split.index"] = index
    spans.attempts[(index, attempt)] = spans.tracer.start_span(
        f"split {layer.name}", context=spans.context, attributes=attributes
    )


@hookimpl
def laminar_split_retried(
    layer: Layer, index: int | None, attempt: int, error: BaseException, run: Run
) -> None:
    spans = _layer(layer, run)
    span = spans.attempts.pop((index, attempt - 1), None) if spans is not None else None
    if span is None:
        return
    span.set_attribute("laminar.split.status", "retried")
    _fail(span, error)
    span.end()


@hookimpl
def laminar_split_finished(
    layer: Layer, index: int | None, attempt: int, error: BaseException | None, run: Run
) -> None:
    spans = _layer(layer, run)
    span = spans.attempts.pop((index, attempt), None) if spans is not None else None
    if spans is None or span is None:
        return
    if error is None:
        span.set_attribute("laminar.split.status", "succeeded")
    elif isinstance(error, SplitNotStarted):  # handed over, then the run failed or stopped first
        span.set_attribute("laminar.split.status", "not started")
    elif _cancelled(error):
        spans.cancelled = True
        span.set_attribute("laminar.split.status", "cancelled")
        span.record_exception(error)
    else:
        if spans.failed is None:
            spans.failed = error
        span.set_attribute("laminar.split.status", "failed")
        _fail(span, error)
    span.end()
