"""``laminar run`` and ``laminar resume``."""

from __future__ import annotations

import json
from typing import Any

import click

from laminar import Execution
from laminar._cli import loading, records
from laminar._cli.common import datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import duration_text, one_line
from laminar._ids import new_execution_id
from laminar.errors import Interrupted


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("n=3", "name=ada")`` -> ``{"n": 3, "name": "ada"}``: JSON values, else the text as a string."""
    found: dict[str, Any] = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        name = name.strip()
        if not separator or not name.isidentifier():
            raise click.BadParameter(
                f"{pair!r} is not NAME=VALUE (say --param n=3 or --param name=ada); NAME must be a Python "
                "identifier",
                param_hint="'--param'",
            )
        if name in found:
            raise click.BadParameter(f"parameter {name!r} is given twice", param_hint="'--param'")
        try:
            found[name] = json.loads(text)
        except ValueError:
            found[name] = text
    return found


def _report(execution: Execution, verb: str, file: str) -> None:
    status = records.status_of(execution)
    click.echo(
        f"execution {execution.id} of flow {execution.flow.name} {status} in {duration_text(status.duration)}"
    )
    click.echo(f"see it with: laminar show {file} {execution.id}")


def _interrupted(execution: Execution, error: Interrupted, file: str) -> Interrupted:
    """The scheduler's message, with the command that resumes the execution instead of the Python call."""
    stopped, said, _ = str(error).partition(" Resume it with ")
    stopped = stopped if said else f"execution {execution.id} of flow {execution.flow.name} was stopped."
    return Interrupted(f"{stopped} Resume it with `laminar resume {file} {execution.id}`")


def _failed(execution: Execution, error: Exception, file: str) -> click.ClickException:
    what = f"{type(error).__name__}: {one_line(str(error))}"
    try:
        ran = execution.status == "failed"
    except Exception:
        ran = False  # it never started (bad parameters, say): there is nothing to show or resume
    if not ran:
        return click.ClickException(
            f"execution {execution.id} of flow {execution.flow.name} did not run: {what}"
        )
    return click.ClickException(
        f"execution {execution.id} of flow {execution.flow.name} failed: {what} (see `laminar show {file} "
        f"{execution.id}`; resume it with `laminar resume {file} {execution.id}`)"
    )


@click.command()
@file_argument
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter (a JSON value, or text)."
)
@datastore_option
@click.option(
    "--executor",
    metavar="NAME",
    default=None,
    help="Executor name or URL (thread, process, dask://host:8786).",
)
@click.option("--execution", "execution_id", metavar="ID", default=None, help="Run with this execution id.")
@click.option("--reuse/--no-reuse", default=None, help="Reuse layers unchanged since an earlier execution.")
@click.option("--force", multiple=True, metavar="LAYER", help="With --reuse: run LAYER and its dependents.")
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    params: tuple[str, ...],
    datastore: str | None,
    executor: str | None,
    execution_id: str | None,
    reuse: bool | None = None,
    force: tuple[str, ...] = (),
) -> None:
    """Run the flow in FILE with the given parameters."""
    parameters = parse_parameters(params)
    loaded = loading.load(file)
    if loaded.run_at_import is not None:
        raise click.ClickException(loading.guard_missing(loaded))
    flow = loading.build(loaded, datastore=datastore, executor=executor)
    execution = flow.execution(execution_id if execution_id is not None else new_execution_id())
    try:
        if reuse is None and not force:
            flow(execution=execution.id, **parameters)
        else:
            execution.run(parameters=parameters, reuse=reuse if reuse is not None else True, force=force)
    except Interrupted as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _interrupted(execution, error, file) from None
    except Exception as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _failed(execution, error, file) from None
    _report(execution, "ran", file)


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@datastore_option
@click.option("--executor", metavar="NAME", default=None, help="Executor name or URL.")
@click.pass_context
def resume(
    ctx: click.Context, file: str, execution_id: str, datastore: str | None, executor: str | None
) -> None:
    """Run EXECUTION again, skipping the layers and splits that already finished."""
    flow = open_flow(file, datastore=datastore, executor=executor)
    execution = find_execution(flow, execution_id)
    try:
        execution.resume()
    except Interrupted as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _interrupted(execution, error, file) from None
    except Exception as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _failed(execution, error, file) from None
    _report(execution, "resumed", file)
