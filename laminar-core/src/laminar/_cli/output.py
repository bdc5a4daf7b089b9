"""How the command prints: rich tables for people, ``--json`` for programs, and the units both use."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

#: How many characters of a value's repr a listing or preview shows.
PREVIEW = 200


def json_option(function: F) -> F:
    """``--json``: print the listing as JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


def console() -> Console:
    """A console on the current stdout; wide when it is not a terminal, so piped tables do not fold."""
    from rich.console import Console  # when a command prints a table, not when the group is built

    terminal = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if terminal else 250, soft_wrap=not terminal, highlight=False)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich.table import Table

    found = Table(*columns, title=title, title_justify="left", show_edge=False, pad_edge=False)
    for row in rows:
        found.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(found)


def time_text(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def time_json(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def size_text(count: int | None) -> str:
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def preview(value: Any, limit: int = PREVIEW) -> str:
    """A short repr of ``value``, cut at ``limit`` characters."""
    try:
        text = repr(value)
    except Exception as error:  # a user's __repr__ may fail; say so instead of failing
        text = f"<repr failed: {type(error).__name__}: {error}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: Mapping[str, Any] | None) -> str:
    """``Type: message`` of a stored error, on one line."""
    if not error:
        return ""
    message = " ".join(str(error.get("message", "")).split())
    return f"{error.get('type', 'Error')}: {message}" if message else str(error.get("type", "Error"))


def json_value(value: Any) -> Any:
    """``value`` itself when it is plain JSON data, else its (capped) repr."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return preview(value)
    return value


def one_line(text: str) -> str:
    return " ".join(text.split())
