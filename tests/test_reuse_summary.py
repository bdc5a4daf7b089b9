"""A layer's record holds the summary of its values that the keys of the layers reading it take
(``Record.outputs``): a rerun keys the layers after a foreach from it, without waiting for the
foreach's split batch, and trusts it only once the splits read back match it."""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import reuse, reusing
from laminar._storage import layout, reuse_index
from laminar._storage.records import Record, SplitBatch
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter

from tests.helpers import CountingLocal
from tests.test_incremental_requests import LAYERS, Chain, Last

TOTAL = sum(n * n for n in range(30)) + 2


def _rewrite(root: Path, execution: str, layer: str, **changes: object) -> None:
    """Rewrite the record of ``layer`` of ``execution`` with ``changes``, sealed as Laminar seals it."""
    path = root / layout.record("Chain", execution, layer)
    path.write_bytes(dataclasses.replace(Record.loads(path.read_bytes()), **changes).dumps())


def test_a_record_holds_the_summary_its_readers_keys_take(tmp_path: Path) -> None:
    flow = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(count=30, reuse=True)
    second = flow(count=30, reuse=True)
    for execution in (first, second):  # computed, then reused (its record carries it on)
        for layer in LAYERS[1:]:
            record = execution.store.record(layer)
            assert record is not None and record.outputs == reuse.outputs(first.store, layer)


class BatchWaits(CountingLocal):
    """Reading Square's split batch of the execution ``source`` waits until Total's index entry has
    been read (at most 10 s, then says so in ``waited_out``)."""

    def __init__(self, root: Path, source: str) -> None:
        super().__init__(root)
        self.source = source
        self.total_read = threading.Event()
        self.waited_out = False

    def read_bytes(self, key: str) -> bytes:
        if key.startswith(layout.reuse_entries("Chain", "Total")):
            self.total_read.set()
        if f"/{self.source}/layers/Square/splits/" in key and not self.total_read.wait(10):
            self.waited_out = True
        return super().read_bytes(key)


def test_the_layer_after_a_foreach_is_keyed_before_its_batch_is_read(tmp_path: Path) -> None:
    """Total reads the foreach Square: its key takes Square's summary from Square's record, so its
    entry is read while Square's split batch is still on its way (read to check that summary)."""
    first = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    datastore = BatchWaits(tmp_path, first.id)
    rerun = Chain(datastore=datastore, executor=executors.Thread())(count=30, reuse=True)
    assert not datastore.waited_out
    assert [rerun.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    assert rerun.layer(Last).total == TOTAL


def test_a_record_whose_summary_is_wrong_is_not_trusted(tmp_path: Path) -> None:
    """Square's record in the first execution says its values are others (forged, or stale): Square
    runs again, and every value read is right."""
    flow = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(count=30, reuse=True)
    _rewrite(tmp_path, first.id, "Square", outputs={"value": "0" * 64})
    rerun = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    square = rerun.store.layer_status("Square")
    assert square is not None and square.reused is None
    assert "does not summarise the values it holds" in (square.why or "")
    assert rerun.layer(Last).total == TOTAL


def test_records_written_without_the_summary_are_still_reused(tmp_path: Path) -> None:
    """Records written before they held a summary: the layers reading them are keyed from their
    batches, as before, and every layer is reused."""
    flow = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(count=30, reuse=True)
    for layer in LAYERS[1:]:
        _rewrite(tmp_path, first.id, layer, outputs={})
    rerun = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    assert [rerun.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    assert rerun.layer(Last).total == TOTAL


def test_a_chain_of_reused_layers_is_checked_on_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once Items is found reused, the layers after it are checked on the same thread, each once
    its upstream layer is found reused there: not each on a thread of its own, a hop after the
    loop learned of its upstream's."""
    flow = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(count=30, reuse=True)
    calls: list[str] = []
    checked: list[str] = []
    onward, check = reusing.Reusing.reuse_onward, reusing.Reusing.reuse

    def counted_onward(self: reusing.Reusing, name: str) -> dict[str, tuple[int, str] | None]:
        calls.append(name)
        return onward(self, name)

    def counted_check(self: reusing.Reusing, name: str) -> tuple[int, str] | None:
        checked.append(name)
        return check(self, name)

    monkeypatch.setattr(reusing.Reusing, "reuse_onward", counted_onward)
    monkeypatch.setattr(reusing.Reusing, "reuse", counted_check)
    rerun = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    assert [rerun.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    assert calls == ["Items"]
    assert checked == list(LAYERS[1:])  # each once, in order
    assert rerun.layer(Last).total == TOTAL


class Caught(Flow): ...


@Caught.register
class Pages(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(url=["ab", "bad", "cd", "worse"])


@Caught.register(
    foreach=ForEach(parameters=[Parameter(layer=Pages, attribute="url")]), catch=Catch(ValueError)
)
class Fetch(Layer):
    def __call__(self, pages: Pages) -> None:
        self.url = pages.url
        if "bad" in pages.url or "worse" in pages.url:
            raise ValueError(f"cannot parse {pages.url}")
        self.words = len(pages.url)
        self.shard(letters=list(pages.url))  # a sharded archive of several artifacts
        self.noise = random.Random(pages.url).randbytes(8192)  # under artifacts/, not inline


def test_batches_checked_from_their_json_summarise_as_their_records_do(tmp_path: Path) -> None:
    """``reuse_index.checked`` summarises a layer's batches without building their split records:
    the summary ``summarise`` gives of the records (shards, values outside the records, errors
    Catch absorbed), the same splits and values stored outside."""
    execution = Caught(datastore=datastores.Local(tmp_path), executor=executors.Thread())(reuse=True)
    record = execution.store.record("Fetch")
    assert record is not None and set(record.outputs) == {"(caught)", "letters", "noise", "url", "words"}
    found = reuse_index.checked(execution.store, "Fetch", record)
    splits = execution.store.finished_splits("Fetch")
    assert found is not None and found.summary == reuse_index.summarise(splits) == record.outputs
    assert found.indices == set(splits) == {0, 1, 2, 3}
    outside = {
        a.hexdigest
        for s in splits.values()
        for r in s.archives.values()
        for a in r.artifacts
        if a.inline is None
    }
    assert len(outside) == 2 and found.stored == tuple(sorted(layout.artifact(digest) for digest in outside))
    pages = execution.store.record("Pages")  # one split, held in its record: read with it, not checked so
    assert pages is not None and pages.held and reuse_index.checked(execution.store, "Pages", pages) is None


def test_a_rerun_builds_no_split_record_of_the_batches_it_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged rerun checks Square's 30 splits from its batch's JSON: no split batch is
    parsed into records (half the time of a 10,000-split batch's parse)."""
    first = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    parsed: list[str] = []
    loads = SplitBatch.loads.__func__  # type: ignore[attr-defined]

    def counted(cls: type[SplitBatch], data: bytes, origin: object = None) -> SplitBatch:
        parsed.append(getattr(origin, "key", "?"))
        return loads(cls, data, origin)  # type: ignore[no-any-return]

    monkeypatch.setattr(SplitBatch, "loads", classmethod(counted))
    rerun = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(count=30, reuse=True)
    assert [rerun.store.layer_status(n).reused for n in LAYERS[1:]] == [first.id] * 5  # type: ignore[union-attr]
    assert parsed == []
    assert rerun.layer(Last).total == TOTAL
