"""A forged or stale reuse index entry costs a recomputation, never a wrong value (#27).

Someone who can write only under ``flows/<Flow>/reuse/`` writes, with Laminar's own code, a sealed
entry under this run's key naming an execution whose layer read the same inputs but was computed by
other code. The named execution's record of the layer says which key computed it (``Record.key``,
``Record.base`` for a foreach's splits), so the layer runs, with this code. Each test runs a small
project in a fresh interpreter, as a user edits a file and runs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from laminar._storage import gc, layout
from laminar._storage.records import seal, unseal
from laminar._storage.reuse_index import ReuseEntry, SplitEntries
from laminar.configurations import datastores

from tests.helpers import run_script, unpack_records

FLOW = """
import helpers
from laminar import Flow, Layer, Parameters
from laminar.configurations.layers import ForEach, Parameter

class Numbers(Flow): ...

@Numbers.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(1, parameters.count + 1)))

@Numbers.register
class Scaled(Layer):
    def __call__(self, items: Items) -> None:
        self.values = [helpers.scale(v) for v in items.values]

@Numbers.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        self.value = helpers.square(items.values)

@Numbers.register
class Total(Layer):
    def __call__(self, square: Square, scaled: Scaled) -> None:
        self.squares = list(square.value)
        self.scaled = scaled.values
"""

HELPERS = """
def scale(value):
    return value * 10

def square(value):
    return value * value
"""

DRIVER = """
import json, os, sys
import flow
from laminar.configurations import datastores, executors

numbers = flow.Numbers(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())
execution = numbers.execution(sys.argv[2])
execution.run(parameters={"count": int(os.environ.get("COUNT", "3"))}, reuse=True)
found = {}
for name in ("Items", "Scaled", "Square", "Total"):
    status = execution.store.layer_status(name)
    found[name] = {"reused": status.reused, "why": status.why}
total = execution.layer(flow.Total)
found["squares"] = total.squares
found["scaled"] = total.scaled
print(json.dumps(found))
"""


def record_file(store: Path, execution: str, layer: str) -> Path:
    """The record file of ``layer`` (records of layers finishing together, such as Scaled and Square,
    are written as one record pack: each is first written as a file of its own)."""
    unpack_records(store)
    return store / layout.record("Numbers", execution, layer)


class Project:
    """A user's project on disk and the datastore its runs share."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root
        self.store = store
        self.runs = 0
        root.mkdir(parents=True)
        (root / "pyproject.toml").write_text("[project]\nname = 'numbers'\n")
        (root / "flow.py").write_text(FLOW)
        (root / "helpers.py").write_text(HELPERS)
        (root / "driver.py").write_text(DRIVER)

    def edit(self, old: str, new: str) -> None:
        path = self.root / "helpers.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    def run(self, count: int = 3) -> dict[str, Any]:
        self.runs += 1
        out = run_script(
            self.root, "driver.py", str(self.store), f"run{self.runs}", env={"COUNT": str(count)}
        )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def entry_of(self, layer: str, execution: str) -> Path:
        """The index entry of ``layer`` naming ``execution``."""
        (found,) = (
            path
            for path in (self.store / layout.reuse_entries("Numbers", layer)).glob("*.json")
            if ReuseEntry.loads(path.read_bytes()).execution == execution
        )
        return found


@pytest.fixture
def project(tmp_path: Path) -> Project:
    made = Project(tmp_path / "checkout", tmp_path / "store")
    first = made.run()
    assert first["squares"] == [1, 4, 9] and first["scaled"] == [10, 20, 30]
    return made


def test_an_entry_forged_to_name_other_code_s_layer_makes_it_run(project: Project) -> None:
    """run2 computes Scaled with other code from the same inputs; an entry under run1's key is
    rewritten to name run2: run3, with run1's code, must compute Scaled again, not take run2's."""
    project.edit("value * 10", "value * 7")
    other = project.run()
    assert other["Scaled"]["reused"] is None and other["scaled"] == [7, 14, 21]
    project.edit("value * 7", "value * 10")
    ours = project.entry_of("Scaled", "run1")
    honest = ReuseEntry.loads(ours.read_bytes())
    ours.write_bytes(
        ReuseEntry(honest.flow, honest.layer, honest.key, "run2", honest.created, honest.components).dumps()
    )
    again = project.run()
    assert again["Scaled"]["reused"] is None
    assert again["Scaled"]["why"] == (
        "ran because the entry's execution run2 does not record this key (its record of the layer was "
        "written before records held keys, or the entry is stale or forged)"
    )
    assert again["scaled"] == [10, 20, 30]
    assert again["Items"]["reused"] == "run1"  # what no entry was forged for is still reused


def test_a_split_entry_forged_to_name_other_code_s_splits_makes_them_run(project: Project) -> None:
    """The same for the per-split index of a foreach: run2 squares with other code; the split index
    of run1's code is rewritten to name run2's splits. run3 (one item more, so the layer is not reused
    whole, and run1's code) must square every item again with its own code."""
    project.edit("value * value", "value * value + 100")
    other = project.run()
    assert other["squares"] == [101, 104, 109]
    project.edit("value * value + 100", "value * value")
    base = unseal(record_file(project.store, "run1", "Square").read_bytes())["base"]
    index = project.store / layout.reuse_splits("Numbers", "Square", base)
    honest = SplitEntries.loads(index.read_bytes())
    forged = {key: where.replace("run1/", "run2/") for key, where in honest.splits.items()}
    index.write_bytes(SplitEntries(honest.flow, honest.layer, honest.base, forged).dumps())
    again = project.run(count=4)
    assert again["squares"] == [1, 4, 9, 16]
    assert again["Square"]["reused"] is None
    assert "splits reused" not in again["Square"]["why"]


def test_a_split_entry_forged_to_name_another_split_of_the_same_code_makes_it_run(project: Project) -> None:
    """The split index of run1's code is rewritten to swap its first and last items' splits: their
    base matches, but run1 gave those splits other items, so they run; the one left alone is reused."""
    base = unseal(record_file(project.store, "run1", "Square").read_bytes())["base"]
    index = project.store / layout.reuse_splits("Numbers", "Square", base)
    honest = SplitEntries.loads(index.read_bytes())
    swap = {"run1/0": "run1/2", "run1/2": "run1/0"}
    forged = {key: swap.get(where, where) for key, where in honest.splits.items()}
    assert forged != honest.splits
    index.write_bytes(SplitEntries(honest.flow, honest.layer, honest.base, forged).dumps())
    again = project.run(count=4)
    assert again["squares"] == [1, 4, 9, 16]
    assert again["Square"]["why"].endswith("; 1 of 4 splits reused")


def test_the_split_index_is_still_used_when_honest(project: Project) -> None:
    """With one item more and nothing forged, the three earlier splits are reused (the check passes
    a record written with the key)."""
    again = project.run(count=4)
    assert again["squares"] == [1, 4, 9, 16]
    assert again["Square"]["why"].endswith("; 3 of 4 splits reused")


def test_an_execution_written_before_records_held_keys_is_not_reused(project: Project) -> None:
    """A valid entry naming a layer whose record holds no key (written before keys were recorded):
    the layer runs, and says why."""
    path = record_file(project.store, "run1", "Scaled")
    payload = unseal(path.read_bytes())
    assert "key" in payload  # written with its key...
    del payload["key"], payload["sha256"]
    path.write_bytes(seal(payload))  # ... and as a run before keys were recorded wrote it
    again = project.run()
    assert again["Scaled"]["reused"] is None
    assert again["Scaled"]["why"] == (
        "ran because the entry's execution run1 does not record this key (its record of the layer was "
        "written before records held keys, or the entry is stale or forged)"
    )
    assert again["scaled"] == [10, 20, 30]
    assert again["Items"]["reused"] == "run1"
    assert project.run()["Scaled"]["reused"] == "run2"  # run2's record holds its key: reused from then on


def test_a_reused_layer_s_record_carries_the_key_it_was_reused_for(project: Project) -> None:
    """A rerun's pointer records carry the key (and base) of what they point at, so an entry naming
    the rerun (gc re-points entries at it) is reused too."""
    project.run()
    first = unseal(record_file(project.store, "run1", "Square").read_bytes())
    second = unseal(record_file(project.store, "run2", "Square").read_bytes())
    assert second["borrowed"]
    assert (second["key"], second["base"]) == (first["key"], first["base"])
    assert len(first["key"]) == len(first["base"]) == 64


def test_gc_copying_borrowed_splits_in_keeps_the_key(project: Project) -> None:
    """gc deletes run1, which run2 borrows from: it copies the splits into run2 and writes run2's
    records again, with their keys, so the entries it re-points at run2 are reused after."""
    assert project.run()["Square"]["reused"] == "run1"
    gc.collect(datastores.Local(str(project.store)), keep_last=1)
    assert not (project.store / layout.execution("Numbers", "run1")).exists()
    record = unseal(record_file(project.store, "run2", "Square").read_bytes())
    assert "borrowed" not in record and len(record["key"]) == 64
    again = project.run()
    assert {again[name]["reused"] for name in ("Items", "Scaled", "Square", "Total")} == {"run2"}
    assert again["squares"] == [1, 4, 9]
