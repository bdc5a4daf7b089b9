"""``laminar diff``: which parameters and artifacts two executions hold differently.

Compared by content hash, from the split records alone. Artifacts addressed by different hashes (an
execution written before BLAKE3 against one after) are compared by hashing the older one's stored
bytes with the newer one's hash. A single small value (kept inline in its record, so read without a
request: a parameter, a score) is shown as its value when its repr is short; others by their hash.
"""

from __future__ import annotations

from typing import Any

import click

from laminar import Execution, Flow
from laminar._cli import parameters
from laminar._cli.common import datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import emit_json, json_option, preview, table
from laminar._serialization.hashing import WRITE_HASH
from laminar._storage.loading import content_hexdigest
from laminar._storage.records import Artifact
from laminar._storage.store import ExecutionStore
from laminar._transport.datastore import Datastore

#: One artifact's content in one execution: per split, its items.
Content = tuple[tuple[int, tuple[Artifact, ...]], ...]


def contents(flow: Flow, execution: Execution) -> dict[tuple[str, str], Content]:
    """(layer, artifact) -> its items per split, for every layer (Parameters included) that stored any."""
    store = execution.store
    found: dict[tuple[str, str], list[tuple[int, tuple[Artifact, ...]]]] = {}
    for layer in flow.layer_names():
        for index, record in sorted(store.finished_splits(layer).items()):
            for name, archive in record.archives.items():
                found.setdefault((layer, name), []).append((index, archive.artifacts))
    return {key: tuple(value) for key, value in found.items()}


class _Addresses:
    """Tells whether two items hold the same serialized bytes: by address when both are addressed by
    one hash, else by re-hashing the older one's bytes with BLAKE3 (read once, remembered)."""

    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore
        self.rehashed: dict[tuple[str, str], str] = {}

    def address(self, artifact: Artifact) -> str:
        key = (artifact.hash, artifact.hexdigest)
        if key not in self.rehashed:
            self.rehashed[key] = content_hexdigest(self.datastore, artifact, WRITE_HASH)
        return self.rehashed[key]

    def same(self, x: tuple[Artifact, ...] | None, y: tuple[Artifact, ...] | None) -> bool:
        if x is None or y is None or len(x) != len(y):
            return x is y
        return all(
            a.hexdigest == b.hexdigest if a.hash == b.hash else self.address(a) == self.address(b)
            for a, b in zip(x, y, strict=True)
        )


#: The longest repr ``diff`` shows as a value; a longer one is shown by its hash.
VALUE_LIMIT = 40


def _summary(content: Content | None, store: ExecutionStore | None) -> str:
    """How one side shows: ``(absent)``, a small value, a hash, or a count of splits and items."""
    if content is None:
        return "(absent)"
    items = [item for _, found in content for item in found]
    if len(content) == 1 and len(items) == 1:
        shown = _small_value(items[0], store) if store is not None else None
        return shown or items[0].hexdigest[:12]
    return f"{len(content)} split(s), {len(items)} item(s)"


def _small_value(artifact: Artifact, store: ExecutionStore) -> str | None:
    """The repr of a value kept inline in its record, if it is short; None for any other."""
    if artifact.inline is None:
        return None
    try:  # an untrusted store, an unknown protocol, a damaged value: shown by its hash instead
        text = preview(store.load(artifact), VALUE_LIMIT + 1)
    except Exception:
        return None
    return text if len(text) <= VALUE_LIMIT else None


def differences(flow: Flow, a: Execution, b: Execution) -> list[dict[str, Any]]:
    left, right = contents(flow, a), contents(flow, b)
    store_a = a.store
    store_b = b.store
    addresses = _Addresses(flow.configuration.datastore)
    order = {name: position for position, name in enumerate(flow.layer_names())}
    declared = [parameters.declaration(a), parameters.declaration(b)]
    typed = [found.get("types", {}) if found is not None else {} for found in declared]
    rows = []
    for key in sorted(set(left) | set(right), key=lambda k: (order.get(k[0], 0), k[1])):
        x, y = left.get(key), right.get(key)
        if x is not None and y is not None:
            dx, dy = dict(x), dict(y)
            changed = sorted(i for i in set(dx) | set(dy) if not addresses.same(dx.get(i), dy.get(i)))
            if not changed:
                continue
            what = "changed"
        else:
            changed, what = [], "only in " + ("A" if y is None else "B")
        shown_a, shown_b = _summary(x, store_a), _summary(y, store_b)
        if shown_a == shown_b and x is not None and y is not None:  # equal reprs of unequal values
            shown_a, shown_b = _summary(x, None), _summary(y, None)
        rows.append(
            {
                "kind": "parameter" if key[0] == "Parameters" else "artifact",
                "layer": key[0],
                "name": key[1],
                "difference": what,
                "splits": changed,
                "a": shown_a,
                "b": shown_b,
                "type": _declared_type(key, typed),
            }
        )
    return rows


def _declared_type(key: tuple[str, str], typed: list[dict[str, str]]) -> str | None:
    """A declared parameter's type (``float``; ``float / int`` when the two executions declared it
    differently); None for an artifact or a parameter of a flow that declared none."""
    if key[0] != "Parameters":
        return None
    found = list(dict.fromkeys(types[key[1]] for types in typed if key[1] in types))
    return " / ".join(found) or None


@click.command()
@file_argument
@click.argument("execution_a", metavar="EXECUTION_A")
@click.argument("execution_b", metavar="EXECUTION_B")
@datastore_option
@json_option
def diff(file: str, execution_a: str, execution_b: str, datastore: str | None, as_json: bool) -> None:
    """Show the parameters and artifacts EXECUTION_A and EXECUTION_B hold differently (by content hash;
    small values as themselves)."""
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
        [
            (
                r["kind"],
                r["layer"],
                r["name"] + (f" ({r['type']})" if r["type"] else ""),
                r["difference"],
                r["a"],
                r["b"],
            )
            for r in rows
        ],
        title=f"A = {a.id}, B = {b.id}",
    )
