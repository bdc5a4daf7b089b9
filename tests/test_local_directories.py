"""A local datastore remembers the directories it made or found (issue 29, item 3: a chain's records
on a local disk).

A key in a directory it has not seen costs a ``mkdir`` before the rename, not a rename that fails
first: a new layer's record is a file, a ``mkdir`` and one rename. A directory removed behind its
back (``laminar gc`` in another process, someone's ``rm``) still gets its write; so does a file in
its staging directory removed behind its back (``.staging``: the one object keeps working). System
calls are counted here (the real ones, wrapped), never timed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from laminar import Flow, Layer
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar._serialization.protocols import Pickle
from laminar._storage import layout, staging, verification
from laminar._transport import local
from laminar.configurations import datastores, executors, serde


class Calls:
    """The calls to ``os.replace``, ``os.mkdir`` and ``os.link`` made while it counts, and which failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, bool]] = []  # (call, whether it succeeded)
        self.directories: list[str] = []  # the directories a mkdir made
        for name in ("replace", "mkdir", "link"):
            real = getattr(os, name)

            def counted(
                *arguments: object, _name: str = name, _real: object = real, **options: object
            ) -> object:
                try:
                    result = _real(*arguments, **options)  # type: ignore[operator]
                except OSError:
                    self.made.append((_name, False))
                    raise
                self.made.append((_name, True))
                if _name == "mkdir":
                    self.directories.append(str(arguments[0]))
                return result

            monkeypatch.setattr(os, name, counted)

    def count(self, name: str, *, failed: bool | None = None) -> int:
        return sum(1 for call, ok in self.made if call == name and (failed is None or ok is not failed))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    counting = Calls(monkeypatch)
    yield counting
    monkeypatch.undo()


def test_a_key_in_a_new_directory_costs_a_mkdir_and_one_rename_none_failing(
    tmp_path: Path, calls: Calls
) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("flows/x/layers/A/record.json", b"a")  # flows/x/layers exists from now on
    calls.made.clear()
    store.write_bytes("flows/x/layers/B/record.json", b"b")  # a new layer's record
    assert calls.made == [("mkdir", True), ("replace", True)]
    calls.made.clear()
    store.write_bytes("flows/x/layers/B/status.json", b"s")  # its directory is known: the rename alone
    assert calls.made == [("replace", True)]
    assert store.read_bytes("flows/x/layers/B/record.json") == b"b"
    assert store.read_bytes("flows/x/layers/B/status.json") == b"s"


def test_a_fresh_execution_s_directories_are_made_with_no_call_failing_but_one_mkdir_a_missing_level(
    tmp_path: Path, calls: Calls
) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("flows/F/executions/old/execution.json", b"0")  # the flow's directory exists
    calls.made.clear()
    assert store.create("flows/F/executions/new/leases/0000000001.json", b"lease") is True
    # leases (missing: its parent is), the execution's (made), leases (made), then the link at once
    assert calls.made == [("mkdir", False), ("mkdir", True), ("mkdir", True), ("link", True)]
    calls.made.clear()
    store.write_bytes("flows/F/executions/new/layers/Parameters/record.json", b"p")
    assert calls.made == [("mkdir", False), ("mkdir", True), ("mkdir", True), ("replace", True)]
    calls.made.clear()
    store.write_bytes("flows/F/executions/new/execution.json", b"e")
    assert store.create("flows/F/executions/new/leases/0000000002.json", b"lease") is True
    assert calls.made == [("replace", True), ("link", True)]
    assert store.read_bytes("flows/F/executions/new/leases/0000000001.json") == b"lease"


def test_a_directory_removed_behind_its_back_still_gets_its_write(tmp_path: Path, calls: Calls) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("flows/x/layers/A/record.json", b"a")
    assert store.create("flows/x/leases/1.json", b"1") is True
    shutil.rmtree(tmp_path / "flows")  # as laminar gc in another process, or a user, would
    calls.made.clear()
    store.write_bytes("flows/x/layers/A/record.json", b"again")
    assert store.create("flows/x/leases/1.json", b"one") is True
    assert store.read_bytes("flows/x/layers/A/record.json") == b"again"
    assert store.read_bytes("flows/x/leases/1.json") == b"one"
    # each tried where it was, found it gone, made it (and its parents) again and tried once more
    assert calls.count("replace", failed=True) == calls.count("link", failed=True) == 1
    assert calls.count("replace") == calls.count("link") == 2


def test_what_delete_removes_is_forgotten_and_made_again_without_a_failing_rename(
    tmp_path: Path, calls: Calls
) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("flows/x/layers/A/record.json", b"a")
    store.delete("flows/x/layers/A/record.json")  # its empty directories go too, as on an object store
    assert not (tmp_path / "flows").exists()
    calls.made.clear()
    store.write_bytes("flows/x/layers/A/record.json", b"again")
    assert calls.count("replace") == 1 and calls.count("replace", failed=True) == 0
    assert store.read_bytes("flows/x/layers/A/record.json") == b"again"


def test_what_it_remembers_is_bounded_and_not_shipped_to_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_KNOWN", 3)
    store = datastores.Local(tmp_path)
    for number in range(10):
        store.write_bytes(f"d{number}/key", b"x")
        assert len(store._known) <= 3
    assert store._known  # it does remember
    shipped = pickle.dumps(store)
    assert os.path.join(store.root, "d9").encode() not in shipped  # what it saw stays here
    copy = pickle.loads(shipped)
    assert copy._known == set() and copy.root == store.root
    copy.write_bytes("d9/other", b"y")  # a copy finds them for itself
    assert copy.read_bytes("d9/other") == b"y"


class Short(Flow): ...


@Short.register
class One(Layer):
    def __call__(self) -> None:
        self.value = 1


@Short.register
class Two(Layer):
    def __call__(self, one: One) -> None:
        self.value = one.value + 1


@Short.register
class Three(Layer):
    def __call__(self, two: Two) -> None:
        self.value = two.value + 1


def test_a_run_on_a_local_disk_makes_no_rename_or_link_that_fails(
    tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chain's records written when the run ends, never on their timer nor for a layer's status
    # (no "running" one is written: no layer here runs that long): queued together however slow the
    # machine is, they are one record pack (the directories counted below depend on it).
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 60.0)
    store = datastores.Local(tmp_path)
    Short(datastore=store, executor=executors.Thread())(execution="first")
    Short(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="second")
    assert calls.count("replace", failed=True) == calls.count("link", failed=True) == 0
    # A directory for the Parameters layer's record and one for the chain's record pack, each made
    # once by a mkdir before its file's rename: the records of a chain of three layers are one file
    # in one new directory, not a file and a directory a layer.
    made = [os.path.relpath(directory, tmp_path) for directory in calls.directories]
    for execution in ("first", "second"):
        records = os.path.normpath(layout.record_packs("Short", execution))
        parameters = os.path.dirname(layout.record("Short", execution, "Parameters"))
        assert made.count(records) == made.count(parameters) == 1
        for name in ("One", "Two", "Three"):
            assert not (tmp_path / layout.layer("Short", execution, name)).exists()
        assert sorted(path.name for path in (tmp_path / records).iterdir()) == ["One.3.jsonl"]
    assert Short(datastore=datastores.Local(tmp_path)).execution("second").layer(Three).value == 3


# ---- its staging directory removed behind its back ----------------------------------------------
def test_a_write_and_a_create_after_staging_was_removed_make_it_again(tmp_path: Path, calls: Calls) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("a/key", b"1")
    assert store.create("a/lease", b"1") is True
    shutil.rmtree(tmp_path / ".staging")  # a user's rm -rf .laminar/.staging, a cleanup job
    store.write_bytes("a/key", b"2")
    assert store.read_bytes("a/key") == b"2"
    shutil.rmtree(tmp_path / ".staging")
    assert store.create("a/other", b"o") is True
    assert store.create("a/other", b"again") is False  # still refused where the key exists
    assert store.read_bytes("a/other") == b"o"
    assert not os.listdir(tmp_path / ".staging")  # no staging file left behind
    calls.made.clear()
    store.write_bytes("a/key", b"3")  # made again once; a write then costs the rename alone again
    assert calls.made == [("replace", True)]


def test_a_file_set_aside_by_repair_is_staged_after_staging_was_removed(tmp_path: Path) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("a/key", b"x" * 100)
    shutil.rmtree(tmp_path / ".staging")
    assert verification._move(store, "a/key", "aside/key") is True  # copied through a staging file
    assert store.read_bytes("aside/key") == b"x" * 100 and not store.exists("a/key")


class Table(list[int]):
    """Stored by ``TableFile``, a protocol in the earlier laminar's form (it writes to a path)."""


class TableFile(serde.Protocol[Table]):
    def read(self, uri: str) -> Table:
        return Table(json.loads(Path(uri).read_text()))

    def write(self, value: Table, uri: str) -> None:
        Path(uri).write_text(json.dumps(value))


def test_values_are_staged_in_files_after_staging_was_removed(tmp_path: Path) -> None:
    store = datastores.Local(tmp_path)
    store.write_bytes("a/key", b"1")  # the staging directory made and remembered
    # past Local.staged_in_memory, and through a protocol writing to a path
    for value, protocol in [(os.urandom(3 << 20), Pickle()), (Table(range(300)), TableFile())]:
        shutil.rmtree(tmp_path / ".staging")
        staged = staging.stage(value, datastore=store, protocol=protocol)
        assert staged.path is not None and os.path.dirname(staged.path) == str(tmp_path / ".staging")
        assert os.path.getsize(staged.path) == staged.artifact.size
        staged.discard()


class Kept(Flow): ...


@Kept.register
class Large(Layer):
    def __call__(self) -> None:
        self.blob = os.urandom(3 << 20)  # past Local.staged_in_memory: serialized into a staging file
        self.table = Table(range(300))  # through a protocol taking a uri: a staging file each way


@Kept.register
class Sum(Layer):
    def __call__(self, large: Large) -> None:
        self.total = len(large.blob) + sum(large.table)


def test_a_flow_runs_with_the_same_datastore_after_staging_was_removed(tmp_path: Path) -> None:
    store = datastores.Local(tmp_path)
    store.protocol(Table)(TableFile)
    Kept(datastore=store, executor=executors.Thread())(execution="first")
    shutil.rmtree(tmp_path / ".staging")  # between two runs (not during one: a file in it would go)
    Kept(datastore=store, executor=executors.Thread())(execution="second")
    shutil.rmtree(tmp_path / ".staging")
    second = Kept(datastore=store).execution("second")
    assert second.layer(Sum).total == (3 << 20) + sum(range(300))
    assert second.layer(Large).table == list(range(300))  # read back through a staging file
    assert len(second.layer(Large).blob) == 3 << 20
