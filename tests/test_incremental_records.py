"""A reused layer stores one record that points at the execution holding its splits (#27).

Its splits are read in place from that execution's batches by every reader (the results API,
``laminar show/get/report/verify``, resume, downstream layers); ``laminar gc`` copies the split
records a kept execution borrows into it before it deletes the execution that holds them, and the
values reached only through a pointer are live. Each test runs on real stores (a local folder, and
S3's emulator where the store matters).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._storage import gc, layout
from laminar._storage.records import Record
from laminar._storage.verification import verify
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import IntegrityError

from tests.helpers import stored_record

RAN: list[str] = []  # the layers that ran in this process (the thread executor runs them here)
BIG = 3_000_000  # bytes of Big's value: far more than a record


class Stored(Flow): ...


@Stored.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        RAN.append("Items")
        self.shard(values=list(range(parameters.count)))


@Stored.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        RAN.append("Square")
        self.value = items.values**2


@Stored.register
class Big(Layer):
    def __call__(self, parameters: Parameters) -> None:
        RAN.append("Big")
        self.blob = random.Random(parameters.seed).randbytes(BIG)


@Stored.register
class Total(Layer):
    def __call__(self, square: Square, big: Big) -> None:
        RAN.append("Total")
        self.total = sum(square.value) + len(big.blob)


LAYERS = ("Items", "Square", "Big", "Total")


def stored_bytes(datastore: Any, prefix: str) -> int:
    """The bytes of every key below ``prefix``, as the datastore holds them."""
    return sum(gc.stored_size(datastore, key) for key in gc._keys_below(datastore, prefix))


def record_of(datastore: Any, execution: str, layer: str) -> Record:
    return Record.loads(stored_record(datastore, "Stored", execution, layer))


def total(count: int) -> int:
    return sum(i * i for i in range(count)) + BIG


def _check_reuse_stores_records_only(datastore: Any, count: int) -> None:
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=count, seed=1, reuse=True)
    blobs = sorted(gc.blobs(datastore))
    RAN.clear()
    second = flow(count=count, seed=1, reuse=True)
    assert RAN == []
    assert sorted(gc.blobs(datastore)) == blobs  # no value stored again
    grown = {layer: stored_bytes(datastore, layout.layer("Stored", second.id, layer)) for layer in LAYERS}
    assert all(size < 3 * 1024 for size in grown.values()), grown  # a few KiB, whatever the layer holds
    assert stored_bytes(datastore, layout.layer("Stored", first.id, "Square")) > 100 * grown["Square"]
    whole = stored_bytes(datastore, layout.execution("Stored", second.id))
    assert whole < 16 * 1024, whole  # the reused layers and the execution's own records, Parameters'
    assert record_of(datastore, second.id, "Square").borrowed == {first.id: ((0, count - 1, 0),)}
    assert record_of(datastore, second.id, "Square").batches == {}
    # ... and reads exactly the values the first execution stored.
    assert list(second.layer(Square).value) == [i * i for i in range(count)]
    assert second.layer(Big).blob == first.layer(Big).blob
    assert second.layer(Total).total == total(count)
    assert verify(second.store, LAYERS).intact


def test_a_reused_layer_stores_one_record_whatever_its_size(tmp_path: Path) -> None:
    _check_reuse_stores_records_only(datastores.Local(str(tmp_path)), 10_000)


def test_a_reused_layer_stores_one_record_on_s3(s3_datastore: Any) -> None:
    _check_reuse_stores_records_only(s3_datastore, 10_000)


def test_splits_reused_one_by_one_point_at_where_they_are_stored(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=100, seed=1, reuse=True)
    RAN.clear()
    grown = flow(count=103, seed=1, reuse=True)
    assert RAN.count("Square") == 3
    square = record_of(datastore, grown.id, "Square")
    assert square.borrowed == {first.id: ((0, 99, 0),)}
    assert sorted(
        i for runs in square.batches.values() for first_, last in runs for i in range(first_, last + 1)
    ) == [
        100,
        101,
        102,
    ]
    RAN.clear()
    third = flow(count=103, seed=1, reuse=True)  # reused whole from `grown`, which borrows from `first`
    assert RAN == []
    # A pointer names where the splits are stored, never an execution that borrowed them.
    assert record_of(datastore, third.id, "Square").borrowed == {
        first.id: ((0, 99, 0),),
        grown.id: ((100, 102, 100),),
    }
    assert record_of(datastore, third.id, "Big").borrowed == {grown.id: ((0, 0, 0),)}  # count changed: it ran
    assert list(third.layer(Square).value) == [i * i for i in range(103)]
    assert third.layer(Total).total == total(103)
    # A record written without reuse is written as before reuse existed.
    assert b'"borrowed"' not in stored_record(datastore, "Stored", first.id, "Square")


def test_gc_copies_the_borrowed_records_in_and_keeps_the_values_only_a_pointer_reaches(
    tmp_path: Path,
) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=100, seed=1, reuse=True)
    second = flow(count=103, seed=1, reuse=True)
    third = flow(count=103, seed=1, reuse=True)  # borrows every layer: Big's value only through `second`
    (big,) = [a.hexdigest for a in first.store.split_record("Big", 0).archives["blob"].artifacts]  # type: ignore[union-attr]
    before = {layer: record_of(datastore, third.id, layer) for layer in LAYERS}
    blobs = gc.blobs(datastore)

    planned = gc.collect(datastore, keep_last=1, dry_run=True)
    assert big not in planned.deleted_blobs and big in planned.kept.sizes
    assert {(loan.execution, loan.layer) for loan in planned.copied} == {
        (third.id, layer) for layer in LAYERS
    }
    assert {
        layer: record_of(datastore, third.id, layer) for layer in LAYERS
    } == before  # a dry run writes nothing

    done = gc.collect(datastore, keep_last=1)
    assert {e.id for e in done.deleted_executions} == {first.id, second.id}
    assert not (tmp_path / layout.execution("Stored", first.id)).exists()
    assert (tmp_path / layout.artifact(big)).exists()
    for layer in LAYERS:
        record = record_of(datastore, third.id, layer)
        assert record.borrowed == {} and record.splits == before[layer].splits
    assert list(third.layer(Square).value) == [i * i for i in range(103)]
    assert third.layer(Big).blob == random.Random(1).randbytes(BIG)
    assert third.layer(Total).total == total(103)
    assert verify(third.store, LAYERS).intact
    assert set(gc.blobs(datastore)) == set(blobs) - set(done.deleted_blobs)  # records copied, never a value
    RAN.clear()
    again = flow(count=103, seed=1, reuse=True)  # what gc copied in is reused as it was
    assert RAN == [] and again.layer(Total).total == total(103)


def test_gc_deleting_an_execution_whose_layer_a_kept_one_borrows_on_s3(s3_datastore: Any) -> None:
    flow = Stored(datastore=s3_datastore, executor=executors.Thread())
    flow(count=20, seed=2, reuse=True)
    second = flow(count=20, seed=2, reuse=True)
    gc.collect(s3_datastore, keep_last=1)
    assert record_of(s3_datastore, second.id, "Square").borrowed == {}
    assert list(second.layer(Square).value) == [i * i for i in range(20)]
    assert second.layer(Big).blob == random.Random(2).randbytes(BIG)


def test_a_reader_that_read_the_record_before_gc_copied_the_splits_in_reads_them(tmp_path: Path) -> None:
    writer = datastores.Local(str(tmp_path))
    flow = Stored(datastore=writer, executor=executors.Thread())
    flow(count=10, seed=1, reuse=True)
    second = flow(count=10, seed=1, reuse=True)
    reader = Stored(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    assert reader.execution(second.id).store.record("Square").borrowed  # type: ignore[union-attr]
    gc.collect(datastores.Local(str(tmp_path)), keep_last=1)  # as another process would
    assert list(reader.execution(second.id).layer(Square).value) == [i * i for i in range(10)]


def test_verify_reads_the_borrowed_splits_where_they_are_and_repair_leaves_them_there(tmp_path: Path) -> None:
    from laminar._storage.verification import BATCH, DAMAGED, repair

    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=10, seed=1, reuse=True)
    second = flow(count=10, seed=1, reuse=True)
    (name,) = record_of(datastore, first.id, "Square").batches
    batch = tmp_path / layout.split_batch("Stored", first.id, "Square", name)
    batch.write_bytes(batch.read_bytes().replace(b'"codec"', b'"codeC"', 1))
    found = verify(flow.execution(second.id).store, LAYERS)
    assert [(f.layer, f.problem, f.kind, f.execution) for f in found.findings] == [
        ("Square", DAMAGED, BATCH, first.id)
    ]
    assert f"split batch {name} of execution {first.id}" == found.findings[0].what
    damaged = batch.read_bytes()
    done = repair(flow.execution(second.id).store, found, flow.plan.order, flow.plan.dependencies)
    assert done.marked == ["Square", "Total"]
    assert batch.read_bytes() == damaged  # another execution's batch is not this repair's to move
    assert not (tmp_path / layout.record("Stored", second.id, "Square")).exists()
    batch.write_bytes(damaged.replace(b'"codeC"', b'"codec"', 1))
    RAN.clear()
    fresh = Stored(
        datastore=datastores.Local(str(tmp_path)), executor=executors.Thread()
    )  # as laminar resume
    fresh.execution(second.id).resume()
    assert RAN.count("Square") == 10 and RAN.count("Total") == 1
    assert list(fresh.execution(second.id).layer(Square).value) == [i * i for i in range(10)]


def test_a_record_borrowing_from_an_execution_deleted_by_hand_says_so(tmp_path: Path) -> None:
    from laminar._storage.verification import MISSING, RECORD

    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=10, seed=1, reuse=True)
    second = flow(count=10, seed=1, reuse=True)
    gc.delete_execution(datastore, "Stored", first.id)  # not by gc: nothing copied in
    fresh = Stored(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    with pytest.raises(
        IntegrityError,
        match=rf"the record of layer Square of execution {second.id} .* it reuses splits of execution "
        rf"{first.id}, which has no record of layer Square any more",
    ):
        list(fresh.execution(second.id).layer(Square).value)
    found = verify(fresh.execution(second.id).store, ["Square"])
    assert [(f.problem, f.kind, f.what) for f in found.findings] == [
        (MISSING, RECORD, f"the splits it reuses from execution {first.id}")
    ]


@pytest.mark.parametrize(
    ("borrowed", "reason"),
    [
        ({"E1": [[0, 5, 0]], "E2": [[5, 9, 0]]}, "borrowed runs overlap at split 5"),
        ({"E1": [[0, 10, 0]]}, "borrowed run 0-10 of E1 is outside splits 0-9"),
        ({"../E1": [[0, 9, 0]]}, "borrowed names '../E1', not an execution id"),
    ],
)
def test_a_borrowing_record_that_is_not_what_laminar_writes_is_refused(
    tmp_path: Path, borrowed: dict[str, Any], reason: str
) -> None:
    from laminar._storage.records import seal, unseal

    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    flow(count=10, seed=1, reuse=True)
    second = flow(count=10, seed=1, reuse=True)
    key = layout.record("Stored", second.id, "Square")
    payload = unseal(datastore.read_bytes(key))
    payload.pop("sha256")
    datastore.write_bytes(key, seal({**payload, "borrowed": borrowed}))
    fresh = Stored(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    with pytest.raises(IntegrityError, match=rf"record of layer Square .* is corrupt: .*{reason}"):
        list(fresh.execution(second.id).layer(Square).value)


def test_a_borrowing_record_changed_without_its_checksum_is_refused(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Stored(datastore=datastore, executor=executors.Thread())
    first = flow(count=10, seed=1, reuse=True)
    other = flow(count=10, seed=3, reuse=True)  # Big differs: a second execution holding Big
    second = flow(count=10, seed=1, reuse=True)
    path = tmp_path / layout.record("Stored", second.id, "Big")
    path.write_bytes(path.read_bytes().replace(first.id.encode(), other.id.encode()))
    fresh = Stored(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    with pytest.raises(IntegrityError, match="do not match its checksum"):
        fresh.execution(second.id).layer(Big).blob  # noqa: B018


SCRIPT = textwrap.dedent(
    """
    import random
    import sys

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter


    class Script(Flow):
        reuse = True


    @Script.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(values=list(range(parameters.count)))


    @Script.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
    class Square(Layer):
        def __call__(self, items: Items) -> None:
            self.value = items.values**2


    @Script.register
    class Big(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.blob = random.Random(0).randbytes(300_000)


    if __name__ == "__main__":
        flow = Script(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())
        flow(execution=sys.argv[2], count=5)
    """
)


def test_the_commands_read_a_reused_layer_where_its_splits_are(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    store = tmp_path / "store"

    def laminar(*args: str, ok: bool = True) -> str:
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "LAMINAR_PROGRESS": "0"}
        done = subprocess.run(
            [str(Path(sys.executable).with_name("laminar")), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert (done.returncode == 0) == ok, done.stderr
        return done.stdout

    for execution in ("one", "two"):
        ran = subprocess.run(
            [sys.executable, "script.py", str(store), execution],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
    where = ("--datastore", store.as_uri())
    assert Record.loads((store / layout.record("Script", "two", "Square")).read_bytes()).borrowed
    assert laminar("get", "script.py", "two", "Square", "value", "--index", "4", *where).strip() == "16"
    shown = json.loads(laminar("show", "script.py", "two", "--json", *where))
    assert json.dumps(shown).count("reused from execution one") == 3
    intact = "is intact: 12 value(s) (1 stored, 293.0 KiB read) in 4 layer(s)"  # Big's, from execution one
    assert intact in laminar("verify", "script.py", "two", *where)
    laminar("report", "script.py", "two", "-o", str(tmp_path / "report.html"), *where)
    page = (tmp_path / "report.html").read_text()
    assert page.count("reused from execution one") == 3 and "293.0 KiB" in page
    assert "copied the records of the 5 split(s) layer Square of execution two reuses from one" in laminar(
        "gc", store.as_uri(), "--keep-last", "1"
    )
    assert laminar("get", "script.py", "two", "Square", "value", "--index", "4", *where).strip() == "16"
    assert intact in laminar("verify", "script.py", "two", *where)


# ---- a foreach's split index keeps every execution's splits ----------------------------------------


class Picks(Flow): ...


@Picks.register
class Chosen(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(parameters.items))


@Picks.register(foreach=ForEach(parameters=[Parameter(layer=Chosen, attribute="values")]))
class Cube(Layer):
    def __call__(self, chosen: Chosen) -> None:
        RAN.append(f"Cube {chosen.values}")
        self.value = chosen.values**3


def cubes(flow: Flow, items: list[int]) -> tuple[Any, list[str]]:
    RAN.clear()
    execution = flow(items=items, reuse=True)
    assert list(execution.layer(Cube).value) == [i**3 for i in items]
    return execution, sorted(RAN)


def test_items_an_older_execution_computed_are_reused_when_they_come_back(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Picks(datastore=datastore, executor=executors.Thread())
    first, _ = cubes(flow, list(range(1, 11)))
    second, _ = cubes(flow, list(range(11, 21)))
    third, ran = cubes(flow, [1, 2, 3, 11, 12, 99])
    assert ran == ["Cube 99"]  # 1-3 from the first execution, 11-12 from the second
    assert Record.loads(stored_record(datastore, "Picks", third.id, "Cube")).borrowed == {
        first.id: ((0, 2, 0),),
        second.id: ((3, 4, 0),),
    }
    (index,) = tmp_path.glob("flows/Picks/reuse/Cube/splits/*.json")
    assert json.loads(index.read_text())["executions"] == [first.id, second.id, third.id]


def test_gc_drops_from_the_split_index_only_the_splits_of_what_it_deletes(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Picks(datastore=datastore, executor=executors.Thread())
    cubes(flow, list(range(1, 11)))
    second, _ = cubes(flow, list(range(11, 21)))
    gc.collect(datastore, keep_last=1)
    (index,) = tmp_path.glob("flows/Picks/reuse/Cube/splits/*.json")
    named = {where.split("/")[0] for where in json.loads(index.read_text())["splits"].values()}
    assert named == {second.id} and json.loads(index.read_text())["executions"] == [second.id]
    _, ran = cubes(flow, [1, 11, 12])
    assert ran == ["Cube 1"]


def test_gc_hands_a_layer_reused_whole_its_split_index_entries(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Picks(datastore=datastore, executor=executors.Thread())
    cubes(flow, list(range(1, 11)))
    second, ran = cubes(flow, list(range(1, 11)))  # reused whole: it published no split entries
    assert ran == []
    gc.collect(datastore, keep_last=1)
    (index,) = tmp_path.glob("flows/Picks/reuse/Cube/splits/*.json")
    assert {where.split("/")[0] for where in json.loads(index.read_text())["splits"].values()} == {second.id}
    third, ran = cubes(flow, [4, 5, 42])
    assert ran == ["Cube 42"]
    assert Record.loads(stored_record(datastore, "Picks", third.id, "Cube")).borrowed == {
        second.id: ((0, 1, 3),)
    }


def test_the_split_index_drops_its_oldest_executions_first_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from laminar._storage import reuse_index
    from laminar._storage.reuse_index import SplitEntries

    monkeypatch.setattr(reuse_index, "KEPT_AT_LEAST", 0)
    monkeypatch.setattr(reuse_index, "KEPT_FACTOR", 3)
    earlier = SplitEntries(
        "F",
        "L",
        "b",
        {"k1": "e1/0", "k2": "e1/1", "k3": "e1/2", "k4": "e2/0", "k5": "e2/1", "k6": "e2/2"},
        ("e1", "e2"),
    )
    newest = SplitEntries("F", "L", "b", {"k1": "e3/0", "k7": "e3/1"})
    # 7 entries, over 3 x 2: e1 goes (its k1 is e3's now), and the 5 left fit.
    assert reuse_index.merged(earlier, newest) == SplitEntries(
        "F", "L", "b", {"k1": "e3/0", "k4": "e2/0", "k5": "e2/1", "k6": "e2/2", "k7": "e3/1"}, ("e2", "e3")
    )
    monkeypatch.setattr(reuse_index, "KEPT_FACTOR", 4)  # 7 fit in 8: nothing goes
    assert reuse_index.merged(earlier, newest).executions == ("e1", "e2", "e3")
    # An index written before it listed its executions: they count as older than any listed.
    unlisted = SplitEntries("F", "L", "b", {"k1": "e0/0", "k2": "e1/0"}, ("e1",))
    monkeypatch.setattr(reuse_index, "KEPT_FACTOR", 1)
    monkeypatch.setattr(reuse_index, "KEPT_AT_LEAST", 3)  # 4 entries: the unlisted e0 goes first
    assert reuse_index.merged(
        unlisted, SplitEntries("F", "L", "b", {"k3": "e3/0", "k4": "e3/1"})
    ).executions == (
        "e1",
        "e3",
    )
