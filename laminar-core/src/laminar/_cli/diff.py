"""``laminar diff``: which parameters and artifacts two executions hold differently.

Compared by content hash, from the split records alone: no artifact's value is loaded.
"""

from __future__ import annotations

from typing import Any

import click

from laminar import Execution, Flow
from laminar._cli.common import datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import emit_json, json_option, table

#: One artifact's content in one execution: per split, the content hashes of its items.
Content = tuple[tuple[int, tuple[str, ...]], ...]


def contents(flow: Flow, execution: Execution) -> dict[tuple[str, str], Content]:
    """(layer, artifact) -> its content hashes, for every layer (Parameters included) that stored any."""
    store = flow.configuration.store(flow.name, execution.id)
    found: dict[tuple[str, str], list[tuple[int, tuple[str, ...]]]] = {}
    for layer in flow.layer_names():
        for index, record in sorted(store.finished_splits(layer).items()):
            for name, archive in record.archives.items():
                found.setdefault((layer, name), []).append(
                    (index, tuple(artifact.hexdigest for artifact in archive.artifacts))
                )
    return {key: tuple(value) for key, value in found.items()}


def _summary(content: Content | None) -> str:
    if content is None:
        return "(absent)"
    digests = [d for _, items in content for d in items]
    if len(content) == 1 and len(digests) == 1:
        return digests[0][:12]
    return f"{len(content)} split(s), {len(digests)} item(s)"


def differences(flow: Flow, a: Execution, b: Execution) -> list[dict[str, Any]]:
    left, right = contents(flow, a), contents(flow, b)
    order = {name: position for position, name in enumerate(flow.layer_names())}
    rows = []
    for key in sorted(set(left) | set(right), key=lambda k: (order.get(k[0], 0), k[1])):
        x, y = left.get(key), right.get(key)
        if x == y:
            continue
        if x is not None and y is not None:
            dx, dy = dict(x), dict(y)
            changed = sorted(i for i in set(dx) | set(dy) if dx.get(i) != dy.get(i))
            what = "changed"
        else:
            changed, what = [], "only in " + ("A" if y is None else "B")
        rows.append(
            {
                "kind": "parameter" if key[0] == "Parameters" else "artifact",
                "layer": key[0],
                "name": key[1],
                "difference": what,
                "splits": changed,
                "a": _summary(x),
                "b": _summary(y),
            }
        )
    return rows


@click.command()
@file_argument
@click.argument("execution_a", metavar="EXECUTION_A")
@click.argument("execution_b", metavar="EXECUTION_B")
@datastore_option
@json_option
def diff(file: str, execution_a: str, execution_b: str, datastore: str | None, as_json: bool) -> None:
    """Show the parameters and artifacts EXECUTION_A and EXECUTION_B hold differently (by content hash)."""
    flow = open_flow(file, datastore=datastore)
    a, b = find_execution(flow, execution_a), find_execution(flow, execution_b)
    rows = differences(flow, a, b)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"executions {a.id} and {b.id} hold the same parameters and artifacts")
        return
    table(
        ("kind", "layer", "name", "difference", "A", "B"),
        [(r["kind"], r["layer"], r["name"], r["difference"], r["a"], r["b"]) for r in rows],
        title=f"A = {a.id}, B = {b.id}",
    )
