"""A resume that runs again a layer of one split whose record held its split (``Record.held``) keeps
that split and writes the layer's record holding it again: no file has it but the record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import stored_splits
from helpers import unpack_records
from laminar import Flow, Layer, Parameters
from laminar._storage import layout, records
from laminar.configurations import datastores, executors


class Pair(Flow): ...


@Pair.register
class Upstream(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.start


@Pair.register
class Downstream(Layer):
    def __call__(self, upstream: Upstream) -> None:
        self.value = upstream.value + 1
        self.ran = uuid.uuid4().hex  # which run computed it


def test_a_held_split_kept_by_a_resume_is_held_again_by_the_record_written(tmp_path: Path) -> None:
    first = Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="e", start=1)
    ran = first.layer(Downstream).ran
    unpack_records(tmp_path)  # each layer's record a file of its own (not a line of a record pack)
    (tmp_path / layout.record("Pair", "e", "Upstream")).unlink()  # Upstream runs again on resume

    Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("e").resume()

    (stored,) = stored_splits.of_layer(tmp_path, "Pair", "e", "Downstream")
    assert stored.path == tmp_path / layout.record("Pair", "e", "Downstream") and stored.member == "held"
    assert json.loads(stored.path.read_bytes())["layout"] == records.HELD_LAYOUT
    again = Pair(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("e")
    assert again.layer(Downstream).ran == ran  # kept, not computed again
    assert again.layer(Downstream).value == 2
