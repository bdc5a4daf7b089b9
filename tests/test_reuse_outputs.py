"""A finished layer's outputs summary (``reuse.outputs``), part of every reader's reuse key, is the
same digest whichever way it is computed: a change to it would make every rerun after an upgrade
recompute what earlier releases stored. Pinned here against its definition, one hash fed split by
split, on a foreach with a Catch (an error absorbed) and a sharded artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

from laminar import Flow, Layer, Parameters
from laminar._runtime import reuse
from laminar._storage.store import ExecutionStore
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter


class Summary(Flow): ...


@Summary.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.count)))
        self.note = "x" * 5000  # stored under artifacts/, not inline


@Summary.register(
    foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]), catch=Catch(ValueError)
)
class Square(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.values**2
        if items.values % 3 == 0:
            self.odd = False
            raise ValueError(f"absorbed at {items.values}")


def defined(store: ExecutionStore, layer: str) -> dict[str, str]:
    """The summary as it was first defined: one hash per artifact, fed split by split."""
    by_name: dict[str, hashlib._Hash] = {}
    caught = hashlib.sha256()
    for index, split in sorted(store.finished_splits(layer).items()):
        for name, archive in split.archives.items():
            digest = by_name.setdefault(name, hashlib.sha256())
            items = ",".join(f"{a.hash}:{a.hexdigest}:{a.protocol}" for a in archive.artifacts)
            digest.update(f"{index}:{archive.sharded}:{items};".encode())
        if split.caught is not None:
            caught.update(f"{index}:{split.caught};".encode())
    found = {name: digest.hexdigest() for name, digest in sorted(by_name.items())}
    if caught.digest() != hashlib.sha256().digest():
        found["(caught)"] = caught.hexdigest()
    return found


def test_the_outputs_summary_is_the_digest_it_was_defined_as(tmp_path: Path) -> None:
    execution = Summary(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=12)
    store = ExecutionStore(
        execution.flow.configuration.datastore,
        "Summary",
        execution.id,
        execution.flow.configuration.protocols,
    )
    for layer in ("Items", "Square"):
        assert reuse.outputs(store, layer) == defined(store, layer)
    square = reuse.outputs(store, "Square")
    assert set(square) == {"value", "odd", "(caught)"}  # every artifact, and the errors absorbed
    assert reuse.outputs(store, "Items")["values"] != reuse.outputs(store, "Items")["note"]
