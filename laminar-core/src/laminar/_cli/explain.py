"""``laminar explain``: for each layer of an execution, where it was reused from or why it ran."""

from __future__ import annotations

import click

from laminar._cli import records
from laminar._cli.common import check_layer, datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import emit_json, json_option


@click.command()
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@click.argument("layer", required=False)
@datastore_option
@json_option
def explain(file: str, execution_id: str, layer: str | None, datastore: str | None, as_json: bool) -> None:
    """Say, for each layer of EXECUTION (or LAYER), whether it was reused and from where, or why it ran."""
    flow = open_flow(file, datastore=datastore)
    execution = find_execution(flow, execution_id)
    if layer is not None:
        check_layer(flow, layer)
    status = records.status_of(execution)
    found = [one for one in records.layers_of(execution, status) if layer is None or one.name == layer]
    rows = [(one.name, one.reused, _said(one.status, one.reason, one.why)) for one in found]
    if as_json:
        emit_json([{"layer": name, "reused": reused, "why": why} for name, reused, why in rows])
        return
    for name, _, why in rows:
        click.echo(f"{name}: {why}")


def _said(status: str, reason: str | None, why: str | None) -> str:
    """The layer's explanation; a run without reuse on says only how it ended."""
    if why is not None:
        return why
    if status == "skipped":
        return f"skipped: {reason}"
    return f"{status} (the run did not have reuse on: nothing was compared)"
