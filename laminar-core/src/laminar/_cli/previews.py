"""Artifact previews by type, shared by the HTML report and ``laminar ui`` so the two cannot drift.

A preview is data, not markup: the templates (``_cli/templates/``) draw it, escaping every string. A
DataFrame becomes a table with its dtypes and shape, an array its shape, dtype and a histogram, an
image or a matplotlib figure a PNG (a ``data:`` URI), a Plotly figure its JSON (which ``laminar ui``
draws with the installed plotly's own plotly.js) with what the static report shows instead: its
static image when kaleido can make one, else its title and traces as text; anything else its repr
as text. A foreach
artifact is previewed as all its items (up to :data:`ITEMS`), with a chart when they are numbers.

Only values stored in at most :data:`PREVIEW_BYTES` bytes are loaded; larger ones say their size. An
untrusted datastore (``trust = "none"``) loads only safe protocols, so a pickled value there is
named, never run.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from laminar._cli.output import one_line, preview, size_text

PREVIEW_BYTES = 256 * 1024
PREVIEW_CHARS = 300
TABLE_ROWS = 20
TABLE_COLUMNS = 30
BINS = 20
ITEMS = 200
CHART_WIDTH, CHART_HEIGHT = 360.0, 90.0


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in chart coordinates, with what hovering over it says."""

    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Preview:
    """What a value looks like. ``kind`` says which fields the templates draw."""

    kind: str  # "text", "table", "array", "image", "plotly", "note"
    text: str = ""
    shape: str = ""
    columns: tuple[tuple[str, str], ...] = ()  # (name, dtype)
    rows: tuple[tuple[str, ...], ...] = ()
    image: str = ""  # a data: URI
    chart: tuple[Bar, ...] = ()
    figure: str = ""  # a Plotly figure as JSON, for plotly.js to draw


@dataclass(frozen=True)
class Items:
    """A foreach artifact's items: each one's preview, and a chart of them when they are numbers."""

    previews: tuple[Preview, ...]
    total: int
    chart: tuple[Bar, ...] = field(default=())


def _bars(values: Sequence[float], labels: Sequence[str]) -> tuple[Bar, ...]:
    """Vertical bars scaled into the chart box; the baseline is zero or the smallest value."""
    if not values:
        return ()
    low, high = min(0.0, min(values)), max(0.0, max(values))
    span = (high - low) or 1.0
    width = CHART_WIDTH / len(values)
    bars = []
    for position, (value, label) in enumerate(zip(values, labels, strict=True)):
        top = CHART_HEIGHT * (high - max(value, 0.0)) / span
        bottom = CHART_HEIGHT * (high - min(value, 0.0)) / span
        bars.append(Bar(position * width, top, max(width - 1, 0.5), max(bottom - top, 0.5), label))
    return tuple(bars)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy

            if isinstance(value, numpy.number) and not isinstance(value, numpy.complexfloating):
                value = float(value)
            else:
                return None
        except ImportError:
            return None
    number = float(value)
    return number if math.isfinite(number) else None


def _png(write: Callable[[io.BytesIO], object]) -> str:
    buffer = io.BytesIO()
    write(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _dataframe(value: Any) -> Preview:
    shown = value.iloc[:TABLE_ROWS, :TABLE_COLUMNS]
    columns = tuple((str(name), str(dtype)) for name, dtype in shown.dtypes.items())
    rows = tuple(tuple(preview(cell, 80) for cell in row) for row in shown.itertuples(index=False, name=None))
    rows_, columns_ = value.shape
    return Preview("table", shape=f"{rows_} rows x {columns_} columns", columns=columns, rows=rows)


def _array(value: Any) -> Preview:
    import numpy

    shape = " x ".join(map(str, value.shape)) or "scalar"
    chart: tuple[Bar, ...] = ()
    if value.size and numpy.issubdtype(value.dtype, numpy.number) and not numpy.iscomplexobj(value):
        finite = value[numpy.isfinite(value)] if numpy.issubdtype(value.dtype, numpy.floating) else value
        if finite.size:
            counts, edges = numpy.histogram(finite, bins=BINS)
            chart = _bars(
                [float(count) for count in counts],
                [f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {int(counts[i])}" for i in range(len(counts))],
            )
    return Preview("array", text=preview(value, PREVIEW_CHARS), shape=f"{shape} · {value.dtype}", chart=chart)


def of_value(value: Any) -> Preview:
    """The preview of a loaded value, by its type (found by package and class name: nothing is
    imported for it)."""
    names = {(c.__module__.partition(".")[0], c.__name__) for c in type(value).__mro__}
    try:
        if ("pandas", "DataFrame") in names:
            return _dataframe(value)
        if ("numpy", "ndarray") in names:
            return _array(value)
        if ("matplotlib", "Figure") in names:
            return Preview("image", image=_png(lambda out: value.savefig(out, format="png", dpi=80)))
        if ("PIL", "Image") in names:
            return Preview("image", image=_png(lambda out: value.save(out, format="PNG")))
        if ("plotly", "Figure") in names:
            return _plotly(value)
    except Exception as error:  # a value that cannot draw itself still shows as text
        return Preview("text", text=f"{preview(value, PREVIEW_CHARS)}  (not drawn: {type(error).__name__})")
    return Preview("text", text=preview(value, PREVIEW_CHARS))


def _plotly(value: Any) -> Preview:
    """A Plotly figure: its JSON, its static image when kaleido makes one, and its title and traces."""
    try:
        image = _png(lambda out: out.write(value.to_image(format="png")))
    except Exception:  # no kaleido (or no browser for it): the text says what the figure holds
        image = ""
    traces = []
    for trace in value.data:
        points = next((len(axis) for axis in (trace["y"], trace["x"]) if axis is not None), None)
        name = f" {trace.name!r}" if trace.name else ""
        traces.append(f"{trace.type}{name}" + (f" ({points} points)" if points is not None else ""))
    title = value.layout.title.text
    text = (
        f"Plotly figure{f' {title!r}' if title else ''}: {len(traces)} trace{'s' if len(traces) != 1 else ''}"
    )
    return Preview(
        "plotly",
        text=preview(text + (": " + ", ".join(traces) if traces else ""), PREVIEW_CHARS),
        image=image,
        figure=value.to_json(),
    )


#: Elements of a large array read for its histogram.
SAMPLE = 100_000


def _head(artifact: Any, stored: BinaryIO) -> Preview | None:
    """A large value of a safe, uncompressed protocol previewed from the start of its stored bytes:
    an ``.npy`` array's shape and dtype from its header and a histogram of its first values, text's
    first characters. None for any other."""
    if artifact.codec != "none":
        return None
    if artifact.protocol in ("laminar.str", "laminar.bytes"):
        start = stored.read(PREVIEW_CHARS * 4)
        text = start.decode("utf-8", errors="replace") if artifact.protocol == "laminar.str" else repr(start)
        return Preview("text", text=f"{text[:PREVIEW_CHARS]}… (the start of {size_text(artifact.size)})")
    if artifact.protocol == "laminar.npy":
        import numpy
        from numpy.lib import format as npy

        version = npy.read_magic(stored)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(stored)
        if dtype.hasobject:
            return None
        count = min(math.prod(shape), SAMPLE)
        sample = numpy.frombuffer(stored.read(count * dtype.itemsize), dtype=dtype)
        found = _array(sample)
        shown = " x ".join(map(str, shape)) or "scalar"
        return Preview(
            "array",
            text=f"(not loaded whole: {size_text(artifact.size)}; the histogram is of its first {len(sample)} values)",
            shape=f"{shown} · {dtype}",
            chart=found.chart,
        )
    return None


def of_artifact(
    load: Callable[[Any], Any], artifact: Any, open_stored: Callable[[Any], BinaryIO] | None = None
) -> Preview:
    """The preview of one stored artifact (``load`` reads it), or a note saying why it is not shown. A
    large one is previewed from the start of its stored bytes (``open_stored``) when its protocol
    allows (:func:`_head`), else named with its size."""
    if artifact.size > PREVIEW_BYTES:
        if open_stored is not None and artifact.inline is None:
            try:
                with open_stored(artifact) as stored:
                    found = _head(artifact, stored)
            except Exception:  # a damaged header: say the size, as for any other
                found = None
            if found is not None:
                return found
        return Preview("note", text=f"(not loaded: {size_text(artifact.size)})")
    try:
        value = load(artifact)
    except Exception as error:
        return Preview(
            "note", text=f"(not previewed: {type(error).__name__}: {one_line(str(error))[:PREVIEW_CHARS]})"
        )
    return of_value(value)


def of_items(load: Callable[[Any], Any], artifacts: Sequence[Any]) -> Items:
    """Every item of a foreach artifact (up to :data:`ITEMS`), charted when each is a number."""
    shown = list(artifacts[:ITEMS])
    previews: list[Preview] = []
    numbers: list[float | None] = []
    for artifact in shown:
        if artifact.size > PREVIEW_BYTES:
            previews.append(Preview("note", text=f"(not loaded: {size_text(artifact.size)})"))
            numbers.append(None)
            continue
        try:
            value = load(artifact)
        except Exception as error:
            previews.append(Preview("note", text=f"(not previewed: {type(error).__name__})"))
            numbers.append(None)
            continue
        previews.append(of_value(value))
        numbers.append(_number(value))
    chart: tuple[Bar, ...] = ()
    if len(numbers) > 1 and all(number is not None for number in numbers):
        values = [number for number in numbers if number is not None]
        chart = _bars(values, [f"split {i}: {v:.6g}" for i, v in enumerate(values)])
    return Items(tuple(previews), len(artifacts), chart)
