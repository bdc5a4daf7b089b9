"""``laminar report``: one self-contained HTML file that shows a whole execution.

The page needs nothing but itself: its CSS is inline, the DAG is an inline SVG drawn here (a layered
layout: each layer one column right of its deepest dependency), and it has no JavaScript at all. A
Content-Security-Policy forbids scripts and every fetch, so even markup that slipped through could
not run. Everything that comes from the user — names, parameters, artifact previews, error
messages, tracebacks, logs — goes through Jinja's autoescaping and shows as text.

Artifact previews are capped: only values stored in at most :data:`PREVIEW_BYTES` bytes are loaded,
one item of each, and their repr is cut at :data:`PREVIEW_CHARS`. Logs are excerpts (the last
:data:`LOG_CHARS` characters of at most :data:`LOG_SPLITS` splits per layer), and the timeline shows
at most :data:`TIMELINE_ROWS` attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import jinja2

from laminar import Execution, Flow
from laminar._cli import records
from laminar._cli.common import datastore_option, file_argument, find_execution, is_foreach, open_flow
from laminar._cli.graph import Graph
from laminar._cli.output import duration_text, error_text, one_line, preview, size_text, time_text

PREVIEW_BYTES = 256 * 1024
PREVIEW_CHARS = 300
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
    path: str


@dataclass
class Dag:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def layout_dag(graph: Graph, statuses: dict[str, str]) -> Dag:
    """Place each layer in the column of its rank, in plan order within the column; edges as curves."""
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
    edges = []
    for source, target in graph.edges():
        (x1, y1), (x2, y2) = places[source], places[target]
        start = (x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2)
        end = (x2, y2 + NODE_HEIGHT / 2)
        bend = (end[0] - start[0]) / 2
        edges.append(
            Edge(
                f"M {start[0]:.1f} {start[1]:.1f} C {start[0] + bend:.1f} {start[1]:.1f}, "
                f"{end[0] - bend:.1f} {end[1]:.1f}, {end[0] - 6:.1f} {end[1]:.1f}"
            )
        )
    columns = max(ranks.values(), default=0) + 1
    height_rows = max(rows.values(), default=1)
    return Dag(
        nodes,
        edges,
        width=2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP,
        height=2 * MARGIN + height_rows * NODE_HEIGHT + (height_rows - 1) * ROW_GAP,
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


@dataclass
class ArtifactRow:
    layer: str
    name: str
    splits: int
    items: int
    size: int
    preview: str


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
    parameters: list[tuple[str, str]]
    dag: Dag
    layers: list[LayerRow]
    bars: list[Bar]
    bars_left_out: int
    errors: list[ErrorBlock]
    artifacts: list[ArtifactRow]
    logs: list[LogBlock]
    notes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the run history, when it was resumed


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _timeline(layers: list[records.LayerStatus], status: Any) -> tuple[list[Bar], int]:
    attempts = [
        (layer.name, index, attempt)
        for layer in layers
        for index, found in sorted(layer.attempts.items())
        for attempt in found
        if attempt.started is not None
    ]
    if not attempts:
        return [], 0
    starts: list[float] = [_timestamp(a.started) or 0.0 for _, _, a in attempts]
    ends: list[float] = [_timestamp(a.ended) or _timestamp(a.started) or 0.0 for _, _, a in attempts]
    origin = min([*starts, *([status.started.timestamp()] if status.started else [])])
    finish = max([*ends, *([status.ended.timestamp()] if status.ended else [])])
    span = max(finish - origin, 1e-6)
    bars = []
    for (layer, index, attempt), start, end in list(zip(attempts, starts, ends, strict=True))[:TIMELINE_ROWS]:
        left = (start - origin) / span * 100
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
            )
        )
    return bars, max(len(attempts) - TIMELINE_ROWS, 0)


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


def _artifacts(flow: Flow, execution: Execution) -> list[ArtifactRow]:
    store = execution.store
    rows = []
    for layer in flow.layer_names():
        splits = store.finished_splits(layer)
        names: dict[str, list[Any]] = {}
        for index in sorted(splits):
            for name, archive in splits[index].archives.items():
                names.setdefault(name, []).append(archive)
        for name in sorted(names):
            archives = names[name]
            items = [artifact for archive in archives for artifact in archive.artifacts]
            first = items[0] if items else None
            if first is None:
                text = "(empty)"
            elif first.size > PREVIEW_BYTES:
                text = f"(not loaded: {size_text(first.size)})"
            else:
                try:
                    text = preview(store.load(first), PREVIEW_CHARS)
                except Exception as error:
                    text = f"(not previewed: {type(error).__name__}: {one_line(str(error))[:PREVIEW_CHARS]})"
                if len(items) > 1:
                    text = f"[item 0 of {len(items)}] {text}"
            rows.append(ArtifactRow(layer, name, len(archives), len(items), sum(a.size for a in items), text))
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


def build_report(flow: Flow, execution: Execution) -> Report:
    """Everything the page shows, read from the execution's records (values only for previews)."""
    status = records.status_of(execution)
    layers = records.layers_of(execution, status)
    graph = Graph.of(flow)
    dag = layout_dag(graph, {layer.name: layer.status for layer in layers})
    bars, left_out = _timeline(layers, status)
    logs, notes = _logs(execution, layers)
    try:
        parameters = [(name, preview(value, PREVIEW_CHARS)) for name, value in status.parameters.items()]
    except Exception as error:
        parameters = []
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
        parameters=parameters,
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
        errors=_errors(layers, status),
        artifacts=_artifacts(flow, execution),
        logs=logs,
        notes=notes,
        runs=[
            f"{run.status}, started {time_text(run.started)}, ended {time_text(run.ended)}, "
            f"took {duration_text(run.duration)}"
            for run in status.runs
        ],
    )


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Laminar report: {{ r.flow }} {{ r.execution }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2327; background: #f6f7f9; }
header { background: #1d2327; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .meta { opacity: .85; }
main { padding: 8px 24px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 12px 16px; margin: 16px 0; overflow-x: auto; }
h2 { font-size: 16px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eceff1; vertical-align: top; }
th { font-weight: 600; color: #455a64; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f3f4f6; padding: 8px; border-radius: 4px; white-space: pre-wrap; word-break: break-word; max-height: 420px; overflow: auto; margin: 4px 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.badge.not-started { color: #37474f; }
.timeline { position: relative; }
.row { display: flex; align-items: center; height: 18px; margin: 2px 0; }
.row .name { width: 220px; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 12px; }
.row .track { position: relative; flex: 1; height: 12px; background: #eceff1; border-radius: 2px; }
.row .bar { position: absolute; top: 0; height: 12px; border-radius: 2px; background: #2e7d32; }
.row .bar.failed { background: #c62828; }
.error h3 { font-size: 14px; margin: 8px 0 2px; }
.muted { color: #78909c; }
svg text { font: 12px system-ui, sans-serif; }
</style>
</head>
<body>
<header>
<h1>{{ r.flow }} · execution <code>{{ r.execution }}</code></h1>
<div class="meta"><span class="badge" id="execution-status" style="background: {{ r.colour }}">{{ r.status }}</span>
started {{ r.started or "—" }} · ended {{ r.ended or "—" }} · took {{ r.duration or "—" }} · report written {{ r.generated }}</div>
{% if r.runs|length > 1 %}<ol class="runs meta" start="0">{% for run in r.runs %}<li>{{ "run" if loop.first else "resume" }}: {{ run }}</li>{% endfor %}</ol>{% endif %}
</header>
<main>
<section id="parameters">
<h2>Parameters</h2>
{% if r.parameters %}<table><tr><th>name</th><th>value</th></tr>
{% for name, value in r.parameters %}<tr><td><code>{{ name }}</code></td><td><code>{{ value }}</code></td></tr>
{% endfor %}</table>{% else %}<p class="muted">none</p>{% endif %}
</section>

<section id="dag">
<h2>Layers</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{ r.dag.width }}" height="{{ r.dag.height }}" viewBox="0 0 {{ r.dag.width }} {{ r.dag.height }}" role="img" aria-label="the flow's DAG">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="4" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#78909c"/></marker></defs>
{% for edge in r.dag.edges %}<path class="edge" d="{{ edge.path }}" fill="none" stroke="#90a4ae" stroke-width="1.5" marker-end="url(#arrow)"/>
{% endfor %}{% for node in r.dag.nodes %}<g class="node status-{{ node.status|replace(' ', '-') }}" data-layer="{{ node.name }}" data-status="{{ node.status }}">
<title>{{ node.name }}: {{ node.status }}</title>
<rect x="{{ node.x }}" y="{{ node.y }}" width="{{ W }}" height="{{ H }}" rx="{{ 12 if node.foreach else 4 }}" fill="{{ node.colour }}" stroke="{{ '#7f0000' if node.status == 'failed' else '#37474f' }}" stroke-width="{{ 3 if node.status == 'failed' else 1 }}"/>
<text x="{{ node.x + 10 }}" y="{{ node.y + 19 }}" fill="{{ '#263238' if node.status == 'not started' else '#fff' }}" font-weight="600">{{ node.label }}</text>
<text x="{{ node.x + 10 }}" y="{{ node.y + 36 }}" fill="{{ '#263238' if node.status == 'not started' else '#fff' }}">{{ node.status }}{{ " ✗" if node.status == "failed" else "" }}{{ " · foreach" if node.foreach else "" }}</text>
</g>
{% endfor %}</svg>
<table>
<tr><th>layer</th><th>status</th><th>splits</th><th>attempts</th><th>duration</th><th>error / reason</th></tr>
{% for layer in r.layers %}<tr class="layer status-{{ layer.status|replace(' ', '-') }}"><td><code>{{ layer.name }}</code></td>
<td><span class="badge {{ layer.status|replace(' ', '-') }}" style="background: {{ layer.colour }}">{{ layer.status }}</span></td>
<td>{{ layer.splits }}</td><td>{{ layer.attempts or "" }}</td><td>{{ layer.duration }}</td><td>{{ layer.error or layer.reason }}</td></tr>
{% endfor %}</table>
</section>

<section id="timeline">
<h2>Timeline</h2>
{% if r.bars %}<div class="timeline">
{% for bar in r.bars %}<div class="row"><div class="name" title="{{ bar.layer }}">{{ bar.layer }} #{{ bar.index }} · attempt {{ bar.attempt }}</div>
<div class="track"><div class="bar{{ ' failed' if bar.failed else '' }}" style="left: {{ '%.3f'|format(bar.left) }}%; width: {{ '%.3f'|format(bar.width) }}%" title="{{ bar.label }}"></div></div></div>
{% endfor %}</div>{% if r.bars_left_out %}<p class="muted">{{ r.bars_left_out }} more attempts not shown</p>{% endif %}
{% else %}<p class="muted">no attempts recorded</p>{% endif %}
</section>

<section id="errors">
<h2>Errors</h2>
{% for error in r.errors %}<div class="error"><h3>{{ error.where }}: <code>{{ error.type }}</code></h3>
<pre class="message">{{ error.message }}</pre>
{% if error.traceback %}<details><summary>traceback</summary><pre class="traceback">{{ error.traceback }}</pre></details>{% endif %}
</div>
{% else %}<p class="muted">none</p>{% endfor %}
</section>

<section id="artifacts">
<h2>Artifacts</h2>
{% if r.artifacts %}<table><tr><th>layer</th><th>artifact</th><th>splits</th><th>items</th><th>size</th><th>preview</th></tr>
{% for a in r.artifacts %}<tr><td><code>{{ a.layer }}</code></td><td><code>{{ a.name }}</code></td><td>{{ a.splits }}</td><td>{{ a.items }}</td><td>{{ size(a.size) }}</td><td><pre class="preview">{{ a.preview }}</pre></td></tr>
{% endfor %}</table>{% else %}<p class="muted">none</p>{% endif %}
</section>

<section id="logs">
<h2>Logs</h2>
{% for log in r.logs %}<h3><code>{{ log.where }}</code></h3>{% if log.cut %}<p class="muted">last {{ LOG_CHARS }} characters</p>{% endif %}
<pre class="log">{{ log.text }}</pre>
{% else %}<p class="muted">none</p>{% endfor %}
{% for note in r.notes %}<p class="muted">{{ note }}</p>{% endfor %}
</section>
</main>
</body>
</html>
"""

_environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def render(report: Report) -> str:
    """The report as one HTML page; every value in it is escaped by the template."""
    template = _environment.from_string(TEMPLATE)
    return template.render(r=report, W=NODE_WIDTH, H=NODE_HEIGHT, size=size_text, LOG_CHARS=LOG_CHARS)


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
