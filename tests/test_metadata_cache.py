"""The metadata cache: bounded by weight, and a pass over more than it holds keeps what was written.

A plain LRU misses every read of a join over a layer larger than the cache (each read evicts the
batch the same pass needs next); these tests count hits and reads to show that ours does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Batched, CountingLocal, Double, Sum
from laminar import Execution
from laminar._runtime import commit, layer_records
from laminar._storage import cache as cache_module
from laminar._storage.cache import MetadataCache
from laminar.configurations import executors


def test_the_cache_is_bounded_by_weight_and_drops_the_least_recently_used() -> None:
    cache = MetadataCache(capacity=10)
    cache.put("a", "batch a", weight=6)
    cache.put("b", "batch b", weight=3)
    assert cache.get("a") == "batch a"  # now the most recently used
    cache.put("c", "batch c", weight=4)  # over 10: the least recently used goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("batch a", None, "batch c")
    assert cache.weight == 10


def test_a_pass_over_more_than_the_cache_still_hits_what_was_written_last() -> None:
    cache = MetadataCache(capacity=8)
    for key in range(20):
        cache.put(str(key), key, written=True)  # a foreach's batches, oldest first
    hits = []
    for key in range(20):  # the join reads them in the same order
        if cache.get(str(key)) is None:
            cache.put(str(key), key)  # read from the store
        else:
            hits.append(key)
    assert hits == [13, 14, 15, 16, 17, 18, 19]  # 7 protected (7/8 of 8); a plain LRU hits none
    assert cache.weight <= 8


def test_what_was_just_read_is_kept_even_when_written_entries_fill_the_cache() -> None:
    cache = MetadataCache(capacity=8)
    for key in range(8):
        cache.put(f"written {key}", key, weight=2, written=True)
    cache.put("read", "a batch", weight=3)  # more than probation's share: a written entry makes room
    assert cache.get("read") == "a batch"
    assert cache.weight == 7


def test_a_weight_over_the_bound_still_keeps_that_one_entry() -> None:
    cache = MetadataCache(capacity=4)
    cache.put("small", 1, written=True)
    cache.put("huge", 2, weight=9, written=True)
    assert (cache.get("small"), cache.get("huge")) == (None, 2)
    assert cache.weight == 9


N = 1_500  # the foreach's splits


def batches_of(keys: list[str]) -> list[str]:
    """The keys of the foreach's split batches among ``keys``, in their order."""
    return [key for key in keys if "/layers/Double/splits/" in key]


def run_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> tuple[CountingLocal, Execution]:
    """Run ``Batched`` over ``N`` splits, committed ``limit`` at a time and kept in those batches."""
    monkeypatch.setattr(commit, "LIMIT", limit)
    monkeypatch.setattr(commit, "COMPACT_FROM", 10**9)  # kept so, not compacted into one
    monkeypatch.setenv("LAMINAR_BATCH_SECONDS", "0")  # splits handed over one by one, committed by LIMIT
    # Layer records written at once: one held in flight (grouped for up to INTERVAL) is in the cache
    # beside the batches, so what the join finds cached would depend on whether the run outlasts it.
    monkeypatch.setattr(layer_records, "INTERVAL", 0.0)
    store = CountingLocal(tmp_path)
    # One split at a time, so each batch holds a run of consecutive splits: with several threads, a
    # split that finishes late (a busy machine) lands in a batch whose range spans many of the join's
    # windows, which the join then reads again once the cache has let it go.
    return store, Batched(datastore=store, executor=executors.Thread(concurrency=1))(n=N)


def test_a_join_over_more_splits_than_the_cache_reads_only_what_it_could_not_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "CAPACITY", 300)  # archives: a fifth of the foreach's splits
    store, execution = run_in_batches(tmp_path, monkeypatch, limit=50)  # batches of about 50 splits
    assert execution.layer(Sum).total == N * (N - 1)
    written, read = batches_of(store.writes), batches_of(store.reads)
    assert len(written) >= 15, written  # enough batches for the cache to hold only some of them
    # The batches written last were still cached when the join reached them; the rest were read
    # once each. A plain LRU would have read every batch.
    assert len(set(read)) == len(read) and 0 < len(read) < len(written), (len(read), len(written))
    unread = sorted(set(written) - set(read))
    assert unread == written[-len(unread) :]


def test_a_pass_reads_the_batch_that_runs_on_into_its_next_window_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room on probation for one batch and no more, a second pass over a foreach's values reads
    each batch it does not find once: the one a window reads last, which the next window begins with,
    is still there. What the store derives from the layer's record to find its batches is kept on the
    store, not put back in the cache at each window, where it pushed that batch out
    (``ExecutionStore._index``)."""
    store, execution = run_in_batches(tmp_path, monkeypatch, limit=70)  # ~96 splits: across windows of 64
    written = batches_of(store.writes)
    assert len(written) >= 8, written  # enough batches for windows to end inside them
    cache = cache_module.cache_for(store)
    for key in [*cache.probation, *written[:-3]]:  # all but the last three batches: read again
        cache.forget(key)
    heaviest = max(weight for key, (_, weight) in cache.protected.items() if "/splits/" in key)
    # What is still cached, and one batch read, the most a pass can count on (as when what this
    # process wrote fills the protected share of the bound): room for nothing else.
    cache.capacity = cache.protected_weight + heaviest
    assert cache.protected_weight <= cache.capacity * cache_module.PROTECTED
    store.reads.clear()
    assert sum(execution.layer(Double).value) == N * (N - 1)
    read = batches_of(store.reads)
    assert read, "every batch was found in the cache: the test no longer tests anything"
    assert len(set(read)) == len(read), sorted(read)
