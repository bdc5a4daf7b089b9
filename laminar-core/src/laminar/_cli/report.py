"""``laminar report``: one self-contained HTML file that shows a whole execution.

The page needs nothing but itself: its CSS is inline, the DAG is an inline SVG drawn here (a layered
layout: each layer one column right of its deepest dependency), and it has no JavaScript at all. Its
templates (``_cli/templates``) and previews (:mod:`laminar._cli.previews`) are the ones ``laminar ui``
draws an execution with, so the two show the same. A
Content-Security-Policy forbids scripts and every fetch, so even markup that slipped through could
not run. Everything that comes from the user — names, parameters, artifact previews, error
messages, tracebacks, logs — goes through Jinja's autoescaping and shows as text.

Artifact previews are capped: only values stored in at most :data:`PREVIEW_BYTES` bytes are loaded,
and a repr is cut at :data:`PREVIEW_CHARS`; a foreach artifact shows its items. Logs are excerpts (the last
:data:`LOG_CHARS` characters of at most :data:`LOG_SPLITS` splits per layer), and the timeline shows
at most :data:`TIMELINE_ROWS` attempts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import jinja2

from laminar import Execution, Flow
from laminar._cli import parameters, previews, records
from laminar._cli.common import datastore_option, file_argument, find_execution, is_foreach, open_flow
from laminar._cli.graph import Graph
from laminar._cli.output import duration_text, error_text, one_line, preview, size_text, time_text
from laminar._storage import layout

PREVIEW_BYTES = previews.PREVIEW_BYTES
PREVIEW_CHARS = previews.PREVIEW_CHARS
LOG_CHARS = 6000
LOG_SPLITS = 10
TIMELINE_ROWS = 400

COLOURS = {
    "finished": "#2e7d32",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#8d8d8d",
    "running": "#1565c0",
    "not started": "#cfd8dc",
    "cancelled": "#ef6c00",
}

NODE_WIDTH, NODE_HEIGHT, COLUMN_GAP, ROW_GAP, MARGIN = 170, 46, 70, 18, 16


@dataclass(frozen=True)
class Node:
    name: str
    status: str
    colour: str
    x: float
    y: float
    label: str
    foreach: bool


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str


@dataclass
class Dag:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float
    note: str = ""


#: Vertical distance between the lanes of edges that skip columns.
LANE_GAP = 10


def layout_dag(graph: Graph, statuses: dict[str, str], note: str = "") -> Dag:
    """A layered layout: each layer in the column of its rank (longest path from a source), in plan
    order within the column. An edge to the next column is one curve; an edge that skips columns runs
    in a lane of its own below the columns it passes, so no box hides it."""
    ranks = graph.ranks()
    rows: dict[int, int] = {}
    places: dict[str, tuple[float, float]] = {}
    for name in graph.order:
        column = ranks[name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        places[name] = (MARGIN + column * (NODE_WIDTH + COLUMN_GAP), MARGIN + row * (NODE_HEIGHT + ROW_GAP))
    nodes = []
    for name in graph.order:
        status = statuses.get(name, "not started")
        x, y = places[name]
        label = name if len(name) <= 20 else name[:19] + "…"
        nodes.append(Node(name, status, COLOURS.get(status, "#cfd8dc"), x, y, label, name in graph.foreach))
    bottom = MARGIN + max(rows.values(), default=1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    edges = []
    lanes = 0
    for source, target in graph.edges():
        (x1, y1), (x2, y2) = places[source], places[target]
        start = (x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2)
        end = (x2 - 6, y2 + NODE_HEIGHT / 2)
        if ranks[target] - ranks[source] <= 1:
            bend = (end[0] - start[0]) / 2
            path = (
                f"M {start[0]:.1f} {start[1]:.1f} C {start[0] + bend:.1f} {start[1]:.1f}, "
                f"{end[0] - bend:.1f} {end[1]:.1f}, {end[0]:.1f} {end[1]:.1f}"
            )
        else:  # down into a lane below every box, across, and up into the target
            lanes += 1
            lane = bottom + lanes * LANE_GAP
            out, into = start[0] + COLUMN_GAP / 2, x2 - COLUMN_GAP / 2
            path = (
                f"M {start[0]:.1f} {start[1]:.1f} C {out:.1f} {start[1]:.1f}, {start[0]:.1f} {lane:.1f}, "
                f"{out:.1f} {lane:.1f} L {into:.1f} {lane:.1f} C {x2:.1f} {lane:.1f}, "
                f"{into:.1f} {end[1]:.1f}, {end[0]:.1f} {end[1]:.1f}"
            )
        edges.append(Edge(source, target, path))
    columns = max(ranks.values(), default=0) + 1
    return Dag(
        nodes,
        edges,
        width=2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP,
        height=bottom + MARGIN + lanes * LANE_GAP,
        note=note,
    )


@dataclass
class Bar:
    layer: str
    index: int
    attempt: int
    left: float
    width: float
    failed: bool
    label: str
    wait: float = 0.0  # how long (in % of the span) the attempt waited after its layer started


@dataclass
class ArtifactRow:
    layer: str
    name: str
    splits: int
    count: int  # items across splits
    size: int
    preview: previews.Preview
    items: previews.Items | None = None  # a foreach artifact's items, each previewed
    digests: tuple[str, ...] = ()  # the items' content hashes: equal values, equal digests


@dataclass
class ErrorBlock:
    where: str
    type: str
    message: str
    traceback: str


@dataclass
class LogBlock:
    where: str
    text: str
    cut: bool
    key: str = ""  # layer/index/attempt, for laminar ui, which appends to it what the split prints next


@dataclass
class LayerRow:
    name: str
    status: str
    colour: str
    reason: str
    splits: str
    attempts: int
    duration: str
    error: str


@dataclass
class Report:
    flow: str
    execution: str
    status: str
    colour: str
    started: str
    ended: str
    duration: str
    generated: str
    parameters: list[tuple[str, str, str]]  # name, value, type
    dag: Dag
    layers: list[LayerRow]
    bars: list[Bar]
    bars_left_out: int
    axis: list[str]
    errors: list[ErrorBlock]
    artifacts: list[ArtifactRow]
    logs: list[LogBlock]
    notes: list[str] = field(default_factory=list)
    layer_statuses: list[records.LayerStatus] = field(default_factory=list)  # as read, for laminar ui
    runs: list[str] = field(default_factory=list)  # the run history, when it was resumed


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


#: Ticks on the timeline's time axis.
TICKS = 5


def _axis(span: float) -> list[str]:
    return [duration_text(span * tick / (TICKS - 1)) if tick else "0 s" for tick in range(TICKS)]


def _timeline(layers: list[records.LayerStatus], status: Any) -> tuple[list[Bar], int, list[str]]:
    layer_starts = {layer.name: _timestamp(layer.started) for layer in layers}
    attempts = [
        (layer.name, index, attempt)
        for layer in layers
        for index, found in sorted(layer.attempts.items())
        for attempt in found
        if attempt.started is not None
    ]
    if not attempts:
        return [], 0, []
    starts: list[float] = [_timestamp(a.started) or 0.0 for _, _, a in attempts]
    ends: list[float] = [_timestamp(a.ended) or _timestamp(a.started) or 0.0 for _, _, a in attempts]
    origin = min([*starts, *([status.started.timestamp()] if status.started else [])])
    finish = max([*ends, *([status.ended.timestamp()] if status.ended else [])])
    span = max(finish - origin, 1e-6)
    bars = []
    waited: set[tuple[str, int]] = set()  # splits whose wait is drawn: before their first attempt
    for (layer, index, attempt), start, end in list(zip(attempts, starts, ends, strict=True))[:TIMELINE_ROWS]:
        left = (start - origin) / span * 100
        began = layer_starts.get(layer)
        first = began is not None and start >= began and (layer, index) not in waited
        wait = (start - began) / span * 100 if first and began is not None else 0.0
        if first:
            waited.add((layer, index))
        bars.append(
            Bar(
                layer,
                index,
                attempt.attempt,
                left,
                max((end - start) / span * 100, 0.3),
                attempt.error is not None,
                f"{duration_text(attempt.duration)}"
                + (f" — {error_text(attempt.error)}" if attempt.error else "")
                + (f" — caught {error_text(attempt.caught)}" if attempt.caught else ""),
                max(min(wait, left), 0.0),
            )
        )
    return bars, max(len(attempts) - TIMELINE_ROWS, 0), _axis(span)


def _errors(layers: list[records.LayerStatus], status: Any) -> list[ErrorBlock]:
    found = []
    if status.error:
        found.append(
            ErrorBlock(
                "execution",
                str(status.error.get("type", "")),
                str(status.error.get("message", "")),
                str(status.error.get("traceback", "")),
            )
        )
    for layer in layers:
        for index, attempts in sorted(layer.attempts.items()):
            for attempt in attempts:
                for error, how in ((attempt.error, ""), (attempt.caught, " (caught by Catch: it finished)")):
                    if error:
                        split = f" split {index}" if layer.splits and layer.splits > 1 else ""
                        found.append(
                            ErrorBlock(
                                f"{layer.name}{split}, attempt {attempt.attempt}{how}",
                                str(error.get("type", "")),
                                str(error.get("message", "")),
                                str(error.get("traceback", "")),
                            )
                        )
        if layer.error and not any(a.error for found_ in layer.attempts.values() for a in found_):
            found.append(
                ErrorBlock(
                    layer.name,
                    str(layer.error.get("type", "")),
                    str(layer.error.get("message", "")),
                    str(layer.error.get("traceback", "")),
                )
            )
    return found


def _opener(store: Any) -> Any:
    """How a preview reads the start of an artifact's stored bytes, without loading it whole."""
    return lambda artifact: store.datastore.open_read(layout.artifact(artifact.hexdigest))


def _artifacts(
    flow: Flow, execution: Execution, previewed: MutableMapping[str, Any] | None = None
) -> list[ArtifactRow]:
    """Every artifact with its preview; ``previewed`` keeps previews by content (the UI's, across the
    reads of a running execution), so a value is loaded and drawn once."""
    store = execution.store

    def cached(key: str, make: Callable[[], Any]) -> Any:
        if previewed is None:
            return make()
        if key not in previewed:
            previewed[key] = make()
        return previewed[key]

    rows = []
    for layer in flow.layer_names():
        splits = store.finished_splits(layer)
        names: dict[str, list[Any]] = {}
        for index in sorted(splits):
            for name, archive in splits[index].archives.items():
                names.setdefault(name, []).append(archive)
        for name in sorted(names):
            archives = names[name]
            found = [artifact for archive in archives for artifact in archive.artifacts]
            size = sum(a.size for a in found)
            digests = tuple(a.hexdigest for a in found)
            if not found:
                row = ArtifactRow(
                    layer,
                    name,
                    len(archives),
                    0,
                    size,
                    previews.Preview("note", text="(empty)"),
                    None,
                    digests,
                )
            elif len(found) == 1:
                row = ArtifactRow(
                    layer,
                    name,
                    1,
                    1,
                    size,
                    cached(
                        digests[0],
                        functools.partial(previews.of_artifact, store.load, found[0], _opener(store)),
                    ),
                    None,
                    digests,
                )
            else:
                items = cached(" ".join(digests), functools.partial(previews.of_items, store.load, found))
                row = ArtifactRow(
                    layer, name, len(archives), len(found), size, items.previews[0], items, digests
                )
            rows.append(row)
    return rows


def _logs(execution: Execution, layers: list[records.LayerStatus]) -> tuple[list[LogBlock], list[str]]:
    found: list[LogBlock] = []
    notes: list[str] = []
    for layer in layers:
        indices = sorted(layer.attempts) or ([0] if layer.status == "finished" else [])
        for index in indices[:LOG_SPLITS]:
            try:
                text = records.logs(execution, layer.name, index=index, attempt=None)
            except click.ClickException as error:
                notes.append(f"logs: {error.message}")
                return found, notes
            except Exception as error:
                notes.append(
                    f"logs of {layer.name} split {index}: {type(error).__name__}: {one_line(str(error))}"
                )
                continue
            if text:
                cut = len(text) > LOG_CHARS
                where = layer.name + (f" split {index}" if is_foreach(execution.flow, layer.name) else "")
                found.append(LogBlock(where, text[-LOG_CHARS:] if cut else text, cut))
        if len(indices) > LOG_SPLITS:
            notes.append(f"logs of {layer.name}: {LOG_SPLITS} of {len(indices)} splits shown")
    return found, notes


def build_report(
    flow: Flow,
    execution: Execution,
    *,
    dag_note: str = "",
    previewed: MutableMapping[str, Any] | None = None,
    logs: bool = True,
) -> Report:
    """Everything the page shows, read from the execution's records (values only for previews);
    ``dag_note`` is said under the DAG, ``previewed`` keeps previews by content between calls.
    ``logs=False`` reads no logs (``laminar ui`` follows them itself, reading only what is new)."""
    status = records.status_of(execution)
    layers = records.layers_of(execution, status)
    graph = Graph.of(flow)
    dag = layout_dag(graph, {layer.name: layer.status for layer in layers}, dag_note)
    bars, left_out, axis = _timeline(layers, status)
    logged, notes = _logs(execution, layers) if logs else ([], [])
    try:
        values = status.parameters
        typed = parameters.types(values, parameters.declaration(execution))
        shown = [(name, preview(value, PREVIEW_CHARS), typed[name]) for name, value in values.items()]
    except Exception as error:
        shown = []
        notes.append(f"parameters: {type(error).__name__}: {one_line(str(error))}")
    return Report(
        flow=flow.name,
        execution=execution.id,
        status=str(status),
        colour=COLOURS.get(str(status), "#cfd8dc"),
        started=time_text(status.started),
        ended=time_text(status.ended),
        duration=duration_text(status.duration),
        generated=time_text(datetime.now(timezone.utc)),
        parameters=shown,
        dag=dag,
        layers=[
            LayerRow(
                layer.name,
                layer.status,
                COLOURS.get(layer.status, "#cfd8dc"),
                layer.reason or records.caught_text(layer) or layer.why or "",
                "" if layer.splits is None else str(layer.splits),
                sum(len(a) for a in layer.attempts.values()),
                duration_text(layer.duration),
                error_text(layer.error),
            )
            for layer in layers
        ],
        bars=bars,
        bars_left_out=left_out,
        axis=axis,
        errors=_errors(layers, status),
        artifacts=_artifacts(flow, execution, previewed),
        logs=logged,
        notes=notes,
        layer_statuses=layers,
        runs=[
            f"{run.status}, started {time_text(run.started)}, ended {time_text(run.ended)}, "
            f"took {duration_text(run.duration)}"
            for run in status.runs
        ],
    )


def environment() -> jinja2.Environment:
    """The templates the report and ``laminar ui`` share (``_cli/templates``), autoescaping everything."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("laminar._cli", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


_environment = environment()


def context(report: Report, *, live: bool = False) -> dict[str, Any]:
    """What the shared templates are rendered with."""
    return {
        "r": report,
        "W": NODE_WIDTH,
        "H": NODE_HEIGHT,
        "size": size_text,
        "LOG_CHARS": LOG_CHARS,
        "live": live,
    }


def render(report: Report) -> str:
    """The report as one HTML page; every value in it is escaped by the template."""
    return _environment.get_template("report.html").render(context(report))


@click.command(name="report")
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the HTML file.",
)
@datastore_option
def report(file: str, execution_id: str, output: Path, datastore: str | None) -> None:
    """Write one self-contained HTML page of EXECUTION: DAG, timeline, errors, artifacts, logs."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    output.write_text(render(build_report(flow, execution)), encoding="utf-8")
    click.echo(f"wrote {output}")
