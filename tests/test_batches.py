"""Splits in batches (laminar._runtime.batching): who is handed batches, how big, and what a lost
batch or a wrong answer does. The records a batch leaves are checked on every executor by the
conformance kit (laminar.testing.ExecutorConformance)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import batching, process
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import ConfigurationError, ExecutorContractError
from laminar.plugins import Executor, SplitOutcome, SplitTask, run_split


class Many(Flow): ...


@Many.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.count))


@Many.register(
    foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]),
    retry=Retry(attempts=2, delay=0, jitter=0),
)
class Each(Layer):
    """Notes each start in ``marks``; the split ``dies`` kills its worker process on its first attempt."""

    def __call__(self, parameters: Parameters, items: Items) -> None:
        item = items.item
        if parameters.marks:
            with open(Path(parameters.marks, str(item)), "a") as file:
                file.write(f"{self.attempt}\n")
        if item == parameters.dies and self.attempt == 0:
            os._exit(3)
        self.value = item * 2


class Submitted(Flow): ...


@Submitted.register
class Listed(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.count))


@Submitted.register(foreach=ForEach(parameters=[Parameter(layer=Listed, attribute="item")]))
class Hooked(Layer):
    @hooks.submission
    def before(self) -> None:
        pass

    def __call__(self, listed: Listed) -> None:
        self.value = listed.item


def _counting(executor: Executor) -> list[int]:
    """The sizes of the batches ``executor`` is handed (wrapped in place)."""
    sizes: list[int] = []
    run_batch = executor.run_batch

    async def counted(tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        sizes.append(len(tasks))
        return await run_batch(tasks)

    executor.run_batch = counted  # type: ignore[method-assign]
    return sizes


def _run(executor: Executor, root: Path, count: int, **parameters: Any) -> Any:
    flow = Many(datastore=datastores.Local(root / "store"), executor=executor)
    return flow(count=count, marks=parameters.pop("marks", ""), dies=parameters.pop("dies", -1), **parameters)


# ---- sizing ----------------------------------------------------------------------------------------


def test_a_batch_starts_at_one_split_and_at_most_doubles_while_splits_are_short() -> None:
    size = batching.BatchSize(0.02)
    grown = []
    for _ in range(12):
        size.measured(size.size, size.size * 0.0001)  # 0.1 ms a split: 200 fit in 0.02 s
        grown.append(size.size)
    assert grown == [2, 4, 8, 16, 32, 64, 128, 200, 200, 200, 200, 200]


def test_long_splits_bring_the_batch_back_to_what_fits_and_a_lost_batch_to_one() -> None:
    size = batching.BatchSize(0.02)
    for _ in range(20):
        size.measured(size.size, 0.0)  # unmeasurably short: grows to the limit
    assert size.size == batching.LIMIT
    size.measured(10, 0.05)  # 5 ms a split: 4 fit
    assert size.size == 4
    size.measured(1, 1.0)  # a long split goes on its own
    assert size.size == 1
    size.size = 50
    size.lost()
    assert size.size == 1


def test_many_runners_share_the_splits_in_flight() -> None:
    size = batching.BatchSize(10.0, runners=1024)  # a Dask executor's 1,024 batches in flight
    for _ in range(20):
        size.measured(size.size, 0.0)
    assert size.size == batching.IN_FLIGHT // 1024


# ---- who is handed batches ---------------------------------------------------------------------------


def test_the_thread_executor_is_handed_batches_that_grow(tmp_path: Path) -> None:
    executor = executors.Thread(concurrency=1)
    sizes = _counting(executor)
    execution = _run(executor, tmp_path, 2000)
    assert list(execution.layer(Each).value) == [item * 2 for item in range(2000)]
    assert sizes and max(sizes) >= 64, sizes  # trivial splits: batches grow well past one split


def test_laminar_batch_seconds_0_hands_every_split_over_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(batching.BATCH_SECONDS, "0")
    executor = executors.Thread(concurrency=1)
    sizes = _counting(executor)
    assert list(_run(executor, tmp_path, 300).layer(Each).value)[-1] == 598
    assert sizes == []


def test_a_bad_laminar_batch_seconds_says_what_to_set_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(batching.BATCH_SECONDS, "fast")
    flow = Many(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with pytest.raises(ConfigurationError, match=r"LAMINAR_BATCH_SECONDS='fast' is not a number of seconds"):
        flow(execution="bad", count=3, marks="", dies=-1)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))


def test_no_batches_with_a_timeout_or_submission_hooks(tmp_path: Path) -> None:
    timed = executors.Thread(concurrency=1, timeout=60)
    sizes = _counting(timed)
    _run(timed, tmp_path / "timed", 300)
    hooked = executors.Thread(concurrency=1)
    hooked_sizes = _counting(hooked)
    flow = Submitted(datastore=datastores.Local(tmp_path / "hooked"), executor=hooked)
    assert list(flow(count=300).layer(Hooked).value)[-1] == 299
    assert sizes == [] and hooked_sizes == []


class OneAtATime(Executor):
    """A third-party executor that knows nothing of batches: only ``run``."""

    in_process = True

    def __init__(self) -> None:
        super().__init__(concurrency=2)
        self.runs = 0

    async def run(self, task: SplitTask) -> SplitOutcome:
        self.runs += 1
        return run_split(task)


def test_an_executor_that_knows_nothing_of_batches_is_handed_splits_one_at_a_time(tmp_path: Path) -> None:
    executor = OneAtATime()
    sizes = _counting(executor)
    execution = _run(executor, tmp_path, 300)
    assert list(execution.layer(Each).value) == [item * 2 for item in range(300)]
    assert sizes == [] and executor.runs == 1 + 300  # Items, then each split


class Forgetful(executors.Thread):
    """Answers a batch with one result too few."""

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        return (await super().run_batch(tasks))[1:]


def test_a_batch_answered_with_too_few_results_fails_the_run_naming_the_executor(tmp_path: Path) -> None:
    with pytest.raises(ExecutorContractError, match=r"run_batch\(\) must return one SplitOutcome"):
        _run(Forgetful(concurrency=1), tmp_path, 300)


# ---- a worker lost in a batch ------------------------------------------------------------------------


def test_a_worker_dying_in_a_batch_fails_its_split_and_the_rest_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One runner, batches of 1, 2, 4... 128: split 150 is in the batch of 127 to 254. Its worker dies
    there: split 150's attempt 0 is lost (WorkerLost, then retried), those after it in the batch had
    not started and run once, as the same attempt."""
    monkeypatch.setenv(batching.BATCH_SECONDS, "30")
    marks = tmp_path / "marks"
    marks.mkdir()
    executor = executors.Process(concurrency=1)
    sizes = _counting(executor)
    execution = _run(executor, tmp_path, 300, marks=str(marks), dies=150)
    assert list(execution.layer(Each).value) == [item * 2 for item in range(300)]
    assert any(size > 100 for size in sizes), sizes
    started = {int(mark.name): mark.read_text().split() for mark in marks.iterdir()}
    assert started == {item: ["0", "1"] if item == 150 else ["0"] for item in range(300)}
    attempts = execution.status.layers["Each"].attempts
    assert [attempt.attempt for attempt in attempts[150]] == [0, 1]
    error = attempts[150][0].error
    assert error is not None and error["type"] == "WorkerLost" and "exited with code 3" in error["message"]
    assert [attempt.attempt for attempt in attempts[151]] == [0] and attempts[151][0].error is None


def test_the_answers_a_worker_sent_before_it_died_are_read_however_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy scheduler may read a batch's answers only after the worker has died in a later split of
    it (here: not before the worker running split 150 has exited). The splits it answered finished:
    none is blamed for the death or run again; split 150 alone is lost and retried."""
    monkeypatch.setenv(batching.BATCH_SECONDS, "30")
    run_batch = process._Worker.run_batch

    async def read_late(
        worker: Any, flow: Any, tasks: Sequence[SplitTask]
    ) -> list[SplitOutcome | BaseException | None]:
        if any(task.index == 150 for task in tasks):
            reply = worker._reply

            async def after_its_exit() -> Any:
                await worker.process.wait()
                worker._reply = reply
                return await reply()

            worker._reply = after_its_exit
        return await run_batch(worker, flow, tasks)

    monkeypatch.setattr(process._Worker, "run_batch", read_late)
    marks = tmp_path / "marks"
    marks.mkdir()
    execution = _run(executors.Process(concurrency=1), tmp_path, 300, marks=str(marks), dies=150)
    assert list(execution.layer(Each).value) == [item * 2 for item in range(300)]
    started = {int(mark.name): mark.read_text().split() for mark in marks.iterdir()}
    assert started == {item: ["0", "1"] if item == 150 else ["0"] for item in range(300)}
    attempts = execution.status.layers["Each"].attempts
    assert [attempt.attempt for attempt in attempts[150]] == [0, 1]
    assert all(len(attempts[item]) == 1 for item in range(300) if item != 150)


class Wrapped(executors.Thread):
    """A Thread executor whose own ``run`` does more: it must see every split."""

    def __init__(self) -> None:
        super().__init__(concurrency=1)
        self.runs = 0

    async def run(self, task: SplitTask) -> SplitOutcome:
        self.runs += 1
        return await super().run(task)


def test_a_subclass_that_overrides_run_but_not_run_batch_runs_every_split_through_its_run(
    tmp_path: Path,
) -> None:
    executor = Wrapped()
    sizes = _counting(executor)
    assert list(_run(executor, tmp_path, 300).layer(Each).value)[-1] == 598
    assert sizes == [] and executor.runs == 1 + 300
