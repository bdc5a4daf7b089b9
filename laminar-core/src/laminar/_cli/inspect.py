"""Reading executions: ``executions``, ``show``, ``artifacts``, ``get`` and ``logs``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from laminar import Execution, Flow
from laminar._cli import parameters, records
from laminar._cli.common import (
    check_layer,
    datastore_option,
    file_argument,
    find_execution,
    is_foreach,
    open_flow,
    where,
)
from laminar._cli.output import (
    duration_text,
    emit_json,
    error_text,
    json_option,
    preview,
    size_text,
    table,
    time_json,
    time_text,
)
from laminar._model.accessor import Accessor
from laminar._runtime.context import list_splits


@click.command()
@file_argument
@datastore_option
@json_option
def executions(file: str, datastore: str | None, as_json: bool) -> None:
    """List the flow's executions, newest first: id, status, first start, runs, latest run's duration.

    An execution keeps its place and its start when it is resumed: ``runs`` counts its run and
    resumes, and the duration is its latest run's.
    """
    flow = open_flow(file, datastore=datastore)
    found = flow.configuration.datastore.list_executions(flow=flow)
    statuses = sorted(
        ((execution.id, execution.status) for execution in found),
        key=lambda row: (row[1].created, row[0]),
        reverse=True,
    )
    rows = [
        (id, str(status), status.created, len(status.runs) or 1, status.duration) for id, status in statuses
    ]
    if as_json:
        emit_json(
            [
                {
                    "id": id,
                    "status": status,
                    "started": time_json(created),
                    "runs": runs,
                    "duration": duration,
                }
                for id, status, created, runs, duration in rows
            ]
        )
        return
    if not rows:
        click.echo(f"flow {flow.name} has no executions in {where(flow)}")
        return
    table(
        ("execution", "status", "started", "runs", "duration"),
        [
            (id, status, time_text(created), runs, duration_text(duration))
            for id, status, created, runs, duration in rows
        ],
    )


def _attempts_json(layer: records.LayerStatus) -> dict[str, list[dict[str, Any]]]:
    return {
        str(index): [
            {
                "attempt": attempt.attempt,
                "started": time_json(attempt.started),
                "ended": time_json(attempt.ended),
                "duration": attempt.duration,
                "error": dict(attempt.error) if attempt.error else None,
                "caught": dict(attempt.caught) if attempt.caught else None,
            }
            for attempt in attempts
        ]
        for index, attempts in layer.attempts.items()
    }


def attempt_count(layer: records.LayerStatus) -> int:
    return sum(len(attempts) for attempts in layer.attempts.values())


def show_json(execution: Execution, status: Any, layers: Sequence[records.LayerStatus]) -> dict[str, Any]:
    return {
        "flow": execution.flow.name,
        "id": execution.id,
        "status": str(status),
        "created": time_json(status.created),
        "started": time_json(status.started),
        "ended": time_json(status.ended),
        "duration": status.duration,
        "runs": [
            {
                "started": time_json(run.started),
                "ended": time_json(run.ended),
                "duration": run.duration,
                "status": run.status,
            }
            for run in status.runs
        ],
        **_parameters_json(execution, status.parameters),
        "error": dict(status.error) if status.error else None,
        "layers": [
            {
                "name": layer.name,
                "status": layer.status,
                "reason": layer.reason,
                "started": time_json(layer.started),
                "ended": time_json(layer.ended),
                "duration": layer.duration,
                "splits": layer.splits,
                "attempts": _attempts_json(layer),
                "caught": layer.caught,
                "error": dict(layer.error) if layer.error else None,
                "reused": layer.reused,
                "why": layer.why,
            }
            for layer in layers
        ],
    }


def _parameters_json(execution: Execution, values: dict[str, Any]) -> dict[str, Any]:
    """The parameters' values, their types, and the JSON Schema of the declared class (None when
    the flow declared none)."""
    declared = parameters.declaration(execution)
    return {
        "parameters": parameters.values_json(values, declared),
        "parameter_types": parameters.types(values, declared),
        "parameter_schema": declared.get("schema") if declared is not None else None,
    }


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@datastore_option
@json_option
def show(file: str, execution_id: str, datastore: str | None, as_json: bool) -> None:
    """Show EXECUTION: its status, parameters, and every layer's status, splits, attempts and errors."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    status = records.status_of(execution)
    layers = records.layers_of(execution, status)
    if as_json:
        emit_json(show_json(execution, status, layers))
        return
    click.echo(f"execution {execution.id} of flow {flow.name}: {status}")
    click.echo(
        f"  started {time_text(status.started)}, ended {time_text(status.ended)}, took {duration_text(status.duration)}"
    )
    if len(status.runs) > 1:  # the run history: when the execution first ran, and each resume
        click.echo(f"  runs ({len(status.runs)}, the first started {time_text(status.created)}):")
        for number, run in enumerate(status.runs):
            what = "run" if number == 0 else "resume"
            click.echo(
                f"    {what} {number}: {run.status}, started {time_text(run.started)}, "
                f"ended {time_text(run.ended)}, took {duration_text(run.duration)}"
            )
    values = status.parameters
    if values:
        typed = parameters.types(values, parameters.declaration(execution))
        click.echo(
            "  parameters: "
            + ", ".join(f"{name}={preview(value, 60)} ({typed[name]})" for name, value in values.items())
        )
    if status.error:
        click.echo(f"  error: {error_text(status.error)}")
    table(
        ("layer", "status", "splits", "attempts", "duration", "error / reason"),
        [
            (
                layer.name,
                layer.status,
                layer.splits,
                attempt_count(layer) or "",
                duration_text(layer.duration),
                error_text(layer.error) or layer.reason or records.caught_text(layer) or layer.why or "",
            )
            for layer in layers
        ],
    )
    for layer in layers:
        for index, attempts in layer.attempts.items():
            for attempt in attempts:
                where = f"  {layer.name} split {index} attempt {attempt.attempt}"
                if attempt.error:
                    click.echo(f"{where}: {error_text(attempt.error)}")
                if attempt.caught:
                    click.echo(f"{where}: caught {error_text(attempt.caught)} (Catch: it finished)")


def _artifact_rows(flow: Flow, execution: Execution, layer: str) -> list[dict[str, Any]]:
    store = execution.store
    splits = store.finished_splits(layer)
    rows: dict[str, dict[str, Any]] = {}
    for index in sorted(splits):
        for name, archive in splits[index].archives.items():
            row = rows.setdefault(
                name, {"name": name, "splits": 0, "items": 0, "size": 0, "sharded": False, "digests": set()}
            )
            row["splits"] += 1
            row["items"] += len(archive.artifacts)
            row["size"] += sum(artifact.size for artifact in archive.artifacts)
            row["sharded"] = row["sharded"] or archive.sharded
            row["digests"].update((artifact.hash, artifact.hexdigest) for artifact in archive.artifacts)
    for row in rows.values():  # the content address of an artifact that is one item, and its hash
        digests = sorted(row.pop("digests"))
        row["hash"], row["hexdigest"] = digests[0] if len(digests) == 1 else (None, None)
    return [rows[name] for name in sorted(rows)]


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@click.argument("layer")
@datastore_option
@json_option
def artifacts(file: str, execution_id: str, layer: str, datastore: str | None, as_json: bool) -> None:
    """List the artifacts LAYER stored in EXECUTION, with their sizes (nothing is loaded)."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    check_layer(flow, layer)
    rows = _artifact_rows(flow, execution, layer)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"layer {layer} stored no artifacts in execution {execution.id}")
        return
    table(
        ("artifact", "splits", "items", "size", "content address"),
        [
            (
                row["name"],
                row["splits"],
                row["items"],
                size_text(row["size"]),
                f"{row['hash']} {row['hexdigest'][:16]}" if row["hexdigest"] else "(several)",
            )
            for row in rows
        ],
    )


def read_artifact(
    flow: Flow, execution: Execution, layer: str, name: str, index: int | None = None, missing: str = "raise"
) -> Any:
    """The value of artifact ``name`` of ``layer``; a one-line error naming what it stored if unknown.

    ``missing`` (``raise``, ``skip`` or ``none``): what a foreach layer's artifact that some splits
    have no value of gives; ``raise`` names them in the error, the others say on stderr which they were.
    """
    check_layer(flow, layer)
    stored = flow.configuration.datastore.list_artifacts(layer=execution.layer(layer))
    if name not in stored:
        raise click.ClickException(
            f"layer {layer} of execution {execution.id} has no artifact {name!r}; it stored: "
            f"{', '.join(stored) or 'nothing'}"
        )
    value = getattr(execution.layer(layer), name)
    absent = value.missing if isinstance(value, Accessor) else ()
    if absent:
        lacking = f"{'split' if len(absent) == 1 else 'splits'} {list_splits(absent)} of its {len(value)}"
        they = "it" if len(absent) == 1 else "they"
        if index is None and missing != "raise":
            shown = "left out" if missing == "skip" else "printed as None"
            click.echo(
                f"artifact {name!r} of layer {layer} has no value in {lacking} ({they} finished without "
                f"assigning it): {shown}",
                err=True,
            )
            return value.skip_missing() if missing == "skip" else value.fill_missing(None)
        if index is None:
            raise click.ClickException(
                f"artifact {name!r} of layer {layer} in execution {execution.id} has no value in {lacking}: "
                f"{they} finished without assigning it; print the {len(value) - len(absent)} values it has with "
                "--missing skip, or None in their place with --missing none"
            )
        if (index + len(value) if index < 0 else index) in absent:
            if missing == "none":
                return None
            raise click.ClickException(
                f"split {index} of layer {layer} in execution {execution.id} finished without assigning "
                f"{name!r} ({lacking} have no value); print None for it with --missing none"
            )
    if index is not None:
        try:
            return value[index]
        except (IndexError, TypeError):
            size = len(value) if hasattr(value, "__len__") else None
            raise click.ClickException(
                f"artifact {name!r} of layer {layer} has no item {index}"
                + (f" (it has {size}: 0 to {size - 1})" if size else " (it is not a sequence of splits)")
            ) from None
    return value


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@click.argument("layer")
@click.argument("artifact")
@click.option(
    "--index", type=int, default=None, help="One split's (or shard's) item of a foreach layer's artifact."
)
@click.option(
    "--missing",
    type=click.Choice(["raise", "skip", "none"]),
    default="raise",
    show_default=True,
    help="A foreach layer's artifact that some splits have no value of (Catch ended them before they "
    "assigned it): fail naming those splits, print the values that exist, or None in their place.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the value to PATH (bytes as they are, text as UTF-8) instead of printing its repr.",
)
@datastore_option
def get(
    file: str,
    execution_id: str,
    layer: str,
    artifact: str,
    index: int | None,
    missing: str,
    output: Path | None,
    datastore: str | None,
) -> None:
    """Print the repr of ARTIFACT of LAYER in EXECUTION, or write its raw value with --output."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    value = read_artifact(flow, execution, layer, artifact, index, missing)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray, list, tuple)):
        value = list(value)  # an Accessor over splits or shards
    if output is None:
        click.echo(repr(value))
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        data = value.encode()
    else:
        raise click.ClickException(
            f"artifact {artifact!r} is a {type(value).__name__}, not bytes or str, so it has no raw form to "
            "write; leave out --output to print its repr"
        )
    output.write_bytes(data)
    click.echo(f"wrote {size_text(len(data))} to {output}", err=True)


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@click.argument("layer", required=False)
@click.option("--index", type=int, default=None, help="The split of a foreach layer (default: every split).")
@click.option(
    "--attempt",
    type=int,
    default=None,
    help="The attempt, 0 first, numbered on across resumes (default: the last one run).",
)
@datastore_option
def logs(
    file: str,
    execution_id: str,
    layer: str | None,
    index: int | None,
    attempt: int | None,
    datastore: str | None,
) -> None:
    """Print what LAYER (every layer, without it) wrote to stdout, stderr and logging in EXECUTION."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    if layer is not None:
        check_layer(flow, layer)
        if index is not None:
            click.echo(records.logs(execution, layer, index=index, attempt=attempt), nl=False)
            return
    status = records.status_of(execution)
    chosen = [found for found in records.layers_of(execution, status) if layer is None or found.name == layer]
    for found in chosen:
        indices = sorted(found.attempts) or ([0] if found.status == "finished" else [])
        for split in indices:
            text = records.logs(execution, found.name, index=split, attempt=attempt)
            if layer is not None and len(indices) == 1:
                click.echo(text, nl=False)
                continue
            if not text:
                continue
            where = found.name + (f" split {split}" if is_foreach(flow, found.name) else "")
            click.echo(f"==> {where} <==")
            click.echo(text, nl=not text.endswith("\n"))
