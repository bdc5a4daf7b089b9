"""A large record is read and written with Python's garbage collector paused (``_storage.collector``):
its thousands of dicts and records form no cycle, and the passes they would trigger walk every
object the process holds. Counted with ``gc.callbacks``, never timed."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from laminar._storage import collector
from laminar._storage.records import Archive, Artifact, SplitBatch, SplitRecord


def _batch(splits: int) -> SplitBatch:
    return SplitBatch(
        {
            index: SplitRecord(
                {"value": Archive((Artifact(f"{index:064x}", inline=index.to_bytes(4, "big")),), False)}
            )
            for index in range(splits)
        }
    )


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The generation of each collection pass that starts while the test runs."""
    started: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)


def test_a_large_batch_is_read_and_written_without_a_collection_pass(passes: list[int]) -> None:
    batch = _batch(5_000)
    data = batch.dumps()
    assert len(data) >= 1 << 16
    # At most the one pass the resumed collector makes for what was built while it was paused;
    # without the pause, a pass every 700 allocations: 60-70 passes each way for this batch.
    passes.clear()
    read = SplitBatch.loads(data)
    assert len(passes) <= 1, passes
    assert read == batch
    passes.clear()
    read.dumps()
    assert len(passes) <= 1, passes
    assert gc.isenabled()


def test_a_small_record_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = collector.paused

    def spying() -> object:
        seen.append(True)
        return original()

    monkeypatch.setattr(collector, "paused", spying)
    small = _batch(3)
    SplitBatch.loads(small.dumps())
    assert seen == []
    SplitBatch.loads(_batch(5_000).dumps())
    assert seen == [True, True]


def test_the_collector_resumes_after_the_last_of_several_threads_and_stays_off_if_it_was() -> None:
    inside = threading.Barrier(2)
    leave = threading.Event()
    results: list[bool] = []

    def hold() -> None:
        with collector.paused():
            inside.wait()
            leave.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    with collector.paused():
        inside.wait()
    results.append(gc.isenabled())  # the holder is still inside
    leave.set()
    holder.join()
    results.append(gc.isenabled())
    assert results == [False, True]

    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_inside_resumes_the_collector() -> None:
    with pytest.raises(ValueError, match="damaged"):
        SplitBatch.loads(b"{" + b" " * (1 << 16) + b"damaged")
    assert gc.isenabled()
