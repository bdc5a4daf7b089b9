"""A run's start on an object store makes its requests at once where their order allows: the
existence check of the execution and the listing of its lease together, and, with reuse on, the
reads that checking its first layers for reuse makes (their index entries, the records of the
execution they are reused from) while the lease, the Parameters record and the metadata are written.
What it writes keeps its order (the metadata last), and a run refused writes nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar._storage import layout
from laminar.configurations import executors
from laminar.errors import FlowDefinitionError

from tests.helpers import CountingLocal


class Begun(Flow): ...


@Begun.register
class First(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.start


@Begun.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


class ObjectLike(CountingLocal):
    """A Local datastore that behaves as an object store does for a run's start (its small writes
    made on threads, 32 requests at once); the request ``waits`` names (operation, key) waits until
    one of a key ``for_`` begins with was made (at most 10 s, then says so in ``waited_out``)."""

    small_writes_inline = False
    max_workers = 32

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.waits: tuple[str, str] | None = None
        self.for_: str | None = None
        self.made = threading.Event()
        self.waited_out = False
        self.order: list[str] = []

    def _request(self, operation: str, key: str) -> None:
        self.order.append(key)
        if self.for_ is not None and key.startswith(self.for_):
            self.made.set()
        if self.waits == (operation, key) and not self.made.wait(10):
            self.waited_out = True

    def exists(self, key: str) -> bool:
        self._request("exists", key)
        return super().exists(key)

    def list_prefix(self, prefix: str) -> list[str]:
        self._request("list_prefix", prefix)
        return super().list_prefix(prefix)

    def read_bytes(self, key: str) -> bytes:
        self._request("read_bytes", key)
        return super().read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._request("write_bytes", key)
        super().write_bytes(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self._request("create", key)
        return super().create(key, data)


def test_the_existence_check_and_the_lease_listing_are_made_at_once(tmp_path: Path) -> None:
    datastore = ObjectLike(tmp_path)
    datastore.waits = ("exists", layout.execution_metadata("Begun", "one"))  # answered once listed
    datastore.for_ = layout.leases("Begun", "one")
    execution = (
        Begun(datastore=datastore, executor=executors.Thread()).execution("one").run(parameters={"start": 1})
    )
    assert not datastore.waited_out
    assert execution.layer(Second).value == 2
    written = [key for key in datastore.writes if "/one/" in key]
    metadata = layout.execution_metadata("Begun", "one")
    parameters = layout.layer("Begun", "one", "Parameters") + "record.json"
    assert written.index(parameters) < written.index(metadata)  # the execution exists last


def test_a_rerun_reads_its_first_layers_entry_while_the_run_starts(tmp_path: Path) -> None:
    """The metadata's write (the start's last) waits until First's index entry is read: a rerun
    that read it only once started would wait it out."""
    flow = Begun(datastore=ObjectLike(tmp_path), executor=executors.Thread())
    first = flow.execution("first").run(parameters={"start": 1}, reuse=True)
    datastore = ObjectLike(tmp_path)
    datastore.waits = ("write_bytes", layout.execution_metadata("Begun", "again"))
    datastore.for_ = layout.reuse_entries("Begun", "First")
    again = Begun(datastore=datastore, executor=executors.Thread()).execution("again")
    again.run(parameters={"start": 1}, reuse=True)
    assert not datastore.waited_out
    assert [again.store.layer_status(n).reused for n in ("First", "Second")] == [first.id] * 2  # type: ignore[union-attr]
    entries = [key for key in datastore.order if key.startswith(layout.reuse_index("Begun"))]
    assert sorted(key.split("/")[3] for key in entries) == ["First", "Second"]  # each read once


def test_a_run_refused_writes_nothing_and_says_why(tmp_path: Path) -> None:
    flow = Begun(datastore=ObjectLike(tmp_path), executor=executors.Thread())
    flow.execution("taken").run(parameters={"start": 1}, reuse=True)
    datastore = ObjectLike(tmp_path)
    refused = Begun(datastore=datastore, executor=executors.Thread())
    with pytest.raises(FlowDefinitionError, match="already exists; resume it with"):
        refused.execution("taken").run(parameters={"start": 2}, reuse=True)
    with pytest.raises(FlowDefinitionError, match="cannot resume execution missing"):
        refused.execution("missing").resume()
    assert datastore.writes == []
    assert Begun(datastore=tmp_path.as_uri()).execution("taken").layer(First).value == 1
