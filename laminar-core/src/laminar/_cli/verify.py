"""``laminar verify``: check every value an execution's records point to, and mark damage to recompute."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from laminar._cli.common import datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import emit_json, json_option, size_text, table
from laminar._storage import verification
from laminar._storage.verification import Repair, Verification


@contextmanager
def _progress(shown: bool) -> Iterator[verification.Progress | None]:
    """A progress bar on stderr while values are checked, when stderr is a terminal."""
    if not shown or not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("checking values"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[read]} read"),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("verify", total=None, read="0 B")

    def update(done: int, total: int, read: int) -> None:
        bar.update(task, completed=done, total=total, read=size_text(read))

    with bar:
        yield update


def _json(result: Verification, repaired: Repair | None) -> dict[str, Any]:
    return {
        "flow": result.flow,
        "id": result.execution,
        "intact": result.intact,
        "layers": result.layers,
        "unfinished": result.unfinished,
        "values": result.values,
        "blobs": result.blobs,
        "bytes": result.bytes,
        "unchecked": result.unchecked,
        "findings": [
            {
                "layer": finding.layer,
                "problem": finding.problem,
                "kind": finding.kind,
                "what": finding.what,
                "url": finding.url,
                "reason": finding.reason,
            }
            for finding in result.findings
        ],
        "repair": None
        if repaired is None
        else {
            "marked": repaired.marked,
            "dependents": repaired.dependents,
            "moved": repaired.moved,
            "folder": repaired.folder,
        },
    }


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@datastore_option
@click.option(
    "--repair",
    is_flag=True,
    help="Mark the layers whose values are damaged or missing, and those that depend on them, as not "
    "finished, so `laminar resume` computes them again. Moves what it takes away aside; deletes nothing.",
)
@json_option
def verify(file: str, execution_id: str, datastore: str | None, repair: bool, as_json: bool) -> None:
    """Check every value EXECUTION's records point to against its address; list what is damaged or missing.

    Each stored value is streamed through its hash (several at once on object stores), nothing is
    deserialized. The exit status is 1 if anything is damaged or missing, with or without --repair.
    """
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    store = execution.store
    layers, deps = list(flow.plan.order), flow.plan.dependencies
    with _progress(not as_json) as progress:
        result = verification.verify(store, layers, progress=progress)
    if as_json:
        repaired = verification.repair(store, result, layers, deps) if repair and not result.intact else None
        emit_json(_json(result, repaired))
    else:
        _print_findings(result)
        if not result.intact and not repair:
            click.echo(
                f"mark the damaged layers to compute them again with: laminar verify {file} "
                f"{result.execution} --repair"
            )
        elif not result.intact:  # after the listing, so a refused repair leaves it on screen
            _print_repair(verification.repair(store, result, layers, deps), file, result.execution)
    if not result.intact:
        raise click.exceptions.Exit(1)


def _print_findings(result: Verification) -> None:
    checked = (
        f"{result.values} value(s) ({result.blobs} stored, {size_text(result.bytes)} read) in "
        f"{len(result.layers)} layer(s)"
    )
    unchecked = (
        f"; {result.unchecked} value(s) written before stored digests only their protocol can check"
        if result.unchecked
        else ""
    )
    where = f"execution {result.execution} of flow {result.flow}"
    if result.unfinished:
        unchecked += f"; not finished (a resume computes them): {', '.join(result.unfinished)}"
    if result.intact:
        click.echo(f"{where} is intact: {checked} match their addresses{unchecked}")
        return
    click.echo(f"{where}: {len(result.findings)} problem(s) among {checked}{unchecked}")
    table(
        ("layer", "problem", "what", "where", "reason"),
        [(f.layer, f.problem, f.what, f.url, f.reason) for f in result.findings],
    )


def _print_repair(repaired: Repair, file: str, execution: str) -> None:
    dependents = set(repaired.dependents)
    click.echo(
        "marked not finished: "
        + ", ".join(
            f"{name} (depends on a damaged layer)" if name in dependents else name for name in repaired.marked
        )
    )
    click.echo(f"moved {len(repaired.moved)} file(s) aside to {repaired.folder}")
    click.echo(f"compute them again with: laminar resume {file} {execution}")
