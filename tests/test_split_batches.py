"""Group commit of split records: the scheduler writes finished splits' records in batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, CountingLocal
from laminar import Flow, Layer, Parameters
from laminar._runtime import commit
from laminar._runtime.context import store_for
from laminar._runtime.executor import Executor
from laminar._runtime.task import SplitOutcome, SplitTask
from laminar._storage import layout
from laminar._storage.store import _Locator
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.types import unwrap


class Batched(Flow): ...


@Batched.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Batched.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Double(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.item * 2
        if items.item % 100 == 0:
            self.marker = items.item


@Batched.register
class Sum(Layer):
    def __call__(self, double: Double) -> None:
        self.total = sum(double.value)


def batch_files(root: Path, execution: str, layer: str) -> list[str]:
    directory = root / layout.splits("Batched", execution, layer)
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_wide_foreach_costs_a_few_writes_not_one_per_split(
    tmp_path: Path, executor: type[Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "INTERVAL", 30.0)  # one batch per layer, however slow the machine
    n = 1000
    store = CountingLocal(tmp_path)
    execution = Batched(datastore=store, executor=executor(concurrency=2))(execution="wide", n=n)
    assert execution.layer(Sum).total == n * (n - 1)
    assert batch_files(tmp_path, "wide", "Double") == ["0-999.json"]
    # Small values are inline: nothing was written under artifacts/, and a handful of writes in all.
    assert [key for key in store.writes if key.startswith("artifacts/")] == []
    assert len(store.writes) < 15, store.writes
    record = store_for(execution).record("Double")
    assert record is not None and record.splits == n
    assert record.batches == {"0-999.json": ((0, n - 1),)} and record.artifacts == ("marker", "value")
    assert execution.layer(Double).marker[0] == 0 and execution.layer(Double).marker[100] == 100
    with pytest.raises(AttributeError, match="finished without assigning it"):
        execution.layer(Double).marker[1]


def test_batches_cover_every_split_exactly_once_at_the_default_interval(tmp_path: Path) -> None:
    n = 3000
    execution = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())(
        execution="default", n=n
    )
    assert execution.layer(Sum).total == n * (n - 1)
    finished = store_for(execution).finished_splits("Double")
    assert sorted(finished) == list(range(n))
    names = batch_files(tmp_path, "default", "Double")
    assert 1 <= len(names) < n
    bounds = [unwrap(layout.parse_split_batch(name)) for name in names]
    assert min(first for first, _ in bounds) == 0 and max(last for _, last in bounds) == n - 1


class FailingBatches(datastores.Local):
    """A Local datastore whose writes of one layer's split batches fail, as a full disk would."""

    def write_bytes(self, key: str, data: bytes) -> None:
        if "/layers/Double/splits/" in key:
            raise OSError(28, "No space left on device")
        super().write_bytes(key, data)


def test_a_failed_batch_write_fails_the_run_and_resume_runs_those_splits_again(tmp_path: Path) -> None:
    flow = Batched(datastore=FailingBatches(tmp_path), executor=executors.Thread())
    with pytest.raises(OSError, match="No space left on device") as raised:
        flow(execution="full", n=50)
    assert "while writing the records of finished splits of layer Double" in "\n".join(
        getattr(raised.value, "__notes__", [])
    )
    assert not flow.execution("full").layer(Double).state.finished
    assert not flow.execution("full").layer(Sum).state.finished
    assert batch_files(tmp_path, "full", "Double") == []  # nothing claims a split finished

    healthy = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    resumed = healthy.execution("full").resume()
    assert resumed.layer(Sum).total == 50 * 49


class Careless(executors.Thread):
    """An executor that forgets to hand back the split's outcome."""

    names = ("careless",)

    async def run(self, task: SplitTask) -> SplitOutcome:
        await super().run(task)
        return None  # type: ignore[return-value]


def test_an_executor_that_does_not_return_the_outcome_is_named_and_not_retried(tmp_path: Path) -> None:
    from laminar.errors import ExecutorContractError

    class Retried(Flow): ...

    attempts = []

    @Retried.register(retry=Retry(attempts=3))
    class Once(Layer):
        def __call__(self) -> None:
            attempts.append(self.attempt)

    flow = Retried(datastore=datastores.Local(tmp_path), executor=Careless())
    with pytest.raises(
        ExecutorContractError, match=r"executor Careless\(.*\) returned None for layer Once"
    ) as raised:
        flow(execution="careless")
    assert "must return the SplitOutcome that laminar._runtime.split.run_split returned" in str(raised.value)
    assert attempts == [0]  # a broken executor is a bug: retrying cannot help
    assert not flow.execution("careless").layer(Once).state.finished


def test_the_locator_finds_splits_in_overlapping_batches() -> None:
    # Splits finish out of order, so consecutive batches' index ranges may overlap.
    names = ["0-9.json", "5-20.json", "21-21.json", "30-40.json", "nonsense.json", "9-3.json"]
    locator = _Locator.from_names(names)
    found: dict[int, Any] = {i: locator.candidates(i) for i in (0, 4, 5, 9, 10, 21, 25, 40, 41)}
    assert found == {
        0: ["0-9.json"],
        4: ["0-9.json"],
        5: ["5-20.json", "0-9.json"],
        9: ["5-20.json", "0-9.json"],
        10: ["5-20.json"],
        21: ["21-21.json"],
        25: [],
        40: ["30-40.json"],
        41: [],
    }


SCRIPT = """
from laminar import Flow, Layer, Parameters
from laminar.configurations.layers import ForEach, Parameter, Retry


class Scripted(Flow): ...


@Scripted.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(n=range(parameters.count))


@Scripted.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="n")]))
class Square(Layer):
    def __call__(self, numbers: Numbers) -> None:
        import os

        self.value = numbers.n**2
        self.pid = os.getpid()


@Scripted.register
class Total(Layer):
    def __call__(self, square: Square) -> None:
        self.total = sum(square.value)


if flow := Scripted():
    flow()
"""


class Script(Executor):
    """Runs every split as ``python script.py`` with the LAMINAR_* variables, as a container executor would."""

    names = ("script",)

    def __init__(self, script: Path, **options: Any) -> None:
        super().__init__(**options)
        self.script = script

    async def run(self, task: SplitTask) -> SplitOutcome:
        import asyncio
        import sys

        from laminar._runtime.environment import environment_for
        from laminar._runtime.split import recorded_outcome

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(self.script),
            cwd=self.script.parent,
            env={**os.environ, **environment_for(task)},
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await process.communicate()
        except asyncio.CancelledError:
            process.kill()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"{task.describe()} failed:\n{stderr.decode()}")
        return await asyncio.to_thread(recorded_outcome, task)


def test_an_executor_that_starts_a_process_per_split_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    script = tmp_path / "scripted.py"
    script.write_text(SCRIPT)
    store = tmp_path / "store"
    monkeypatch.setenv("LAMINAR_DATASTORE", store.as_uri())
    spec = importlib.util.spec_from_file_location("scripted", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: the guard is false, nothing runs
    flow = module.Scripted(executor=Script(script, concurrency=2))
    execution = flow(execution="scripted", count=4)
    assert execution.layer(module.Total).total == 0 + 1 + 4 + 9
    pids = set(execution.layer(module.Square).pid)
    assert len(pids) == 4 and os.getpid() not in pids  # each split ran in a process of its own

    from laminar._runtime.split import recorded_outcome

    never = SplitTask(flow=flow, execution="scripted", layer="Square", index=7, splits=8)
    with pytest.raises(RuntimeError, match=r"split 7 of 8, attempt 0.* exited without recording its result"):
        recorded_outcome(never)


def test_a_finished_layer_finds_each_split_in_one_batch_even_after_a_straggler() -> None:
    # A straggler's batch spans from its own index to the end; the record's exact runs keep every
    # other lookup to the one batch that holds the split.
    from laminar._storage.records import Record

    record = Record(
        "F",
        "L",
        20_000,
        {"0-4.json": ((0, 4),), "5-19999.json": ((5, 5), (400, 19_999)), "6-399.json": ((6, 399),)},
    )
    locator = _Locator.from_record(record)
    assert [locator.candidates(i) for i in (0, 5, 6, 399, 400, 19_999, 20_000)] == [
        ["0-4.json"],
        ["5-19999.json"],
        ["6-399.json"],
        ["6-399.json"],
        ["5-19999.json"],
        ["5-19999.json"],
        [],
    ]


def test_records_of_another_storage_layout_are_refused_with_a_message(tmp_path: Path) -> None:
    from laminar.errors import DatastoreError

    flow = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow(execution="old", n=3)
    record = tmp_path / layout.record("Batched", "old", "Sum")
    record.write_text('{"flow": "Batched", "layer": "Sum", "splits": 1}')  # as layout 1 wrote it
    with pytest.raises(
        DatastoreError, match="written in Laminar storage layout 1, and this Laminar reads layout 2"
    ):
        Batched(datastore=datastores.Local(tmp_path)).execution("old").layer(Sum).total  # noqa: B018


def test_the_metadata_cache_is_bounded_by_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar._storage import store

    monkeypatch.setattr(store, "_CACHE_WEIGHT", 10)
    cache = store._Cache()
    cache.put("a", "batch a", weight=6)
    cache.put("b", "batch b", weight=3)
    assert cache.get("a") == "batch a"  # now the most recently used
    cache.put("c", "batch c", weight=4)  # over 10: the least recently used goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("batch a", None, "batch c")
    assert cache.weight == 10


KILLABLE = """
import os
import sys
import time

from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter


class Killable(Flow): ...


@Killable.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Killable.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Slow(Layer):
    def __call__(self, items: Items) -> None:
        time.sleep(0.01)
        self.value = items.item * 3
        with open(os.environ["RUNS"], "a") as runs:
            runs.write(f"{items.item}\\n")


@Killable.register
class Total(Layer):
    def __call__(self, slow: Slow) -> None:
        self.total = sum(slow.value)


flow = Killable(datastore=datastores.Local(os.environ["STORE"]), executor=executors.Thread(concurrency=4))
if __name__ == "__main__":
    if sys.argv[1] == "run":
        flow(execution="killed", n=int(sys.argv[2]))
    else:
        print(flow.execution("killed").resume().layer(Total).total)
"""


def test_a_killed_scheduler_loses_only_unrecorded_splits_and_resume_finishes_the_rest(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    n = 400
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    runs = tmp_path / "runs"
    env = {**os.environ, "RUNS": str(runs), "STORE": str(tmp_path / "store")}
    process = subprocess.Popen([sys.executable, str(script), "run", str(n)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not runs.exists() or len(runs.read_text().split()) < n // 4):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # no chance to flush anything
    process.wait()
    ran_before = {int(line) for line in runs.read_text().split()}
    assert n // 4 <= len(ran_before) < n, "the run was not killed half way; make the splits slower"

    from laminar._serialization.registry import Protocols
    from laminar._storage.store import ExecutionStore

    store = ExecutionStore(datastores.Local(tmp_path / "store"), "Killable", "killed", Protocols())
    recorded = set(store.finished_splits("Slow"))
    assert recorded and recorded <= ran_before  # batches name only splits that really finished
    runs.unlink()
    resumed = subprocess.run(
        [sys.executable, str(script), "resume"], env=env, check=True, capture_output=True, text=True
    )
    assert int(resumed.stdout.split()[-1]) == 3 * n * (n - 1) // 2
    rerun = [int(line) for line in runs.read_text().split()]
    assert sorted(rerun) == sorted(set(range(n)) - recorded)  # each unrecorded split once, no other
