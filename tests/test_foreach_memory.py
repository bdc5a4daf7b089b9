"""A foreach of a million splits in bounded memory (issue 29): what each part holds, counted in bytes.

The shard of a million items is staged without a (name, item) pair per item and written a chunk of
its JSON at a time; the metadata cache's bound holds a fixed share of the memory budget. Each test
measures bytes allocated (``tracemalloc``), never time, and the stored bytes stay those written
before, so stores written by earlier code read as they did.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Batched, Items, Sum
from laminar._storage import cache, records, verification
from laminar._storage.records import Archive, Artifact, SplitBatch, SplitRecord, seal
from laminar.configurations import datastores, executors


def artifact(i: int) -> Artifact:
    """A tiny inline value's artifact, as a shard item or a trivial split stores it."""
    data = str(i * 2).encode()
    return Artifact(hashlib.sha256(data).hexdigest(), "none", "cloudpickle", len(data), inline=data)


def shard(n: int, *, sharded: bool = True) -> Archive:
    return Archive(tuple(artifact(i) for i in range(n)), sharded=sharded)


def peak_bytes(call: Callable[[], Any]) -> tuple[int, int, Any]:
    """What ``call`` allocated at its peak and still holds once it returned (with its result)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, held - before, result


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(records, "CHUNK", 3)
    yield


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(
    "splits",
    [
        pytest.param({0: SplitRecord({"item": shard(10)})}, id="one large shard"),
        pytest.param({0: SplitRecord({"item": shard(4)})}, id="one chunk and one item"),
        pytest.param({0: SplitRecord({"item": shard(6)})}, id="two whole chunks"),
        pytest.param(
            {
                7: SplitRecord(
                    {
                        "a": shard(7),
                        "empty": shard(0),
                        "one": shard(1, sharded=False),
                        "b": shard(5, sharded=False),
                    },
                    caught="ValueError: caught",
                ),
                2: SplitRecord({"z": shard(9)}),
                11: SplitRecord({}),
                3: SplitRecord({"small": shard(2)}),
            },
            id="several large archives among small ones, out of order",
        ),
    ],
)
def test_a_batch_written_in_chunks_is_byte_for_byte_the_batch_written_whole(
    splits: dict[int, SplitRecord],
) -> None:
    batch = SplitBatch(splits)
    data = batch.dumps()
    assert data == seal(batch._write(batch))  # what earlier code wrote and reads: the format is unchanged
    assert SplitBatch.loads(data) == batch


def test_writing_a_shard_of_many_items_holds_its_json_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CHUNK", 512)  # a chunk small beside the shard, as 4096 is beside a million
    batch = SplitBatch({0: SplitRecord({"item": shard(30_000)})})
    peak, _, data = peak_bytes(batch.dumps)
    # Written whole, the artifacts' JSON objects, the JSON text and its bytes twice over are held at
    # once: about 4x the batch's size. In chunks: the bytes, once, and one chunk.
    assert peak < 1.5 * len(data), (peak, len(data))


def test_staging_a_shard_holds_little_more_than_its_record(tmp_path: Path) -> None:
    store = Batched(datastore=datastores.Local(tmp_path)).configuration.store("Batched", "e1")
    n = 30_000
    peak, held, record = peak_bytes(lambda: store.stage_split({}, {"item": list(range(n))}))
    assert len(record.archives["item"].artifacts) == n
    # Beyond the record it returns, staging held the items' list and a slotted staged value per item
    # (112 bytes an item); no (name, item) pair per item (40 more) nor a __dict__ per value (60 more).
    assert (peak - held) / n < 140, ((peak - held) / n, held / n)


def test_the_cache_bound_holds_at_most_a_fifth_of_a_million_splits_memory_budget() -> None:
    # A batch of trivial splits' records, as a foreach's join reads them back into the cache.
    batch = SplitBatch({i: SplitRecord({"value": Archive((artifact(i),))}) for i in range(4096)})
    data = batch.dumps()
    _, held, parsed = peak_bytes(lambda: SplitBatch.loads(data))
    assert len(parsed.splits) == 4096
    per_split = held / 4096  # about 0.6 KB: record, archives, archive, artifact, digest, inline bytes
    budget = 0.75 * 2**30  # issue 29: a million splits in at most 0.75 GiB, the shard and grid included
    assert per_split * cache.CAPACITY < budget / 4, (per_split, cache.CAPACITY)


@pytest.mark.usefixtures("small_chunks")
def test_a_run_whose_shard_is_written_in_chunks_reads_verifies_and_resumes(tmp_path: Path) -> None:
    execution = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())(n=50)
    assert execution.layer(Sum).total == 50 * 49
    # Read afresh (a new datastore object, so no cache): the stored shard parses and checks.
    fresh = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    again = fresh.execution(execution.id)
    assert list(again.layer(Items).item) == list(range(50))
    assert again.layer(Sum).total == 50 * 49
    found = verification.verify(again.store, ["Items", "Double", "Sum"])
    assert found.intact and found.values >= 50 + 50 + 1, found
    resumed = again.resume()
    assert resumed.layer(Sum).total == 50 * 49
