"""The Thread and Process executors: where layers run, concurrency, timeouts (a timed-out process
split is killed), worker processes that die, the execution guard in a process started to run one
layer, and executors written against the plugin API (one process per split, a broken contract).
The contract every executor owes is in test_executor_conformance.py."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, Diamond, Join, run_script
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import ConfigurationError, ExecutorContractError, PluginNotFound, WorkerLost
from laminar.plugins import (
    Executor,
    SplitNotStarted,
    SplitOutcome,
    SplitTask,
    environment_for,
    recorded_outcome,
)

# ---- where layers run ----------------------------------------------------------------------------


def test_process_executor_runs_every_layer_outside_the_scheduler(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Process())(seed=1)
    pids = {name: execution.layer(name).pid for name in ("Start", "Left", "Right", "Join")}
    assert os.getpid() not in pids.values()


def test_thread_executor_runs_in_this_process(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())(seed=1)
    assert execution.layer(Join).pid == os.getpid()


# ---- concurrency ---------------------------------------------------------------------------------


def test_independent_layers_run_concurrently(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=30)

    class Together(Flow): ...

    @Together.register
    class P(Layer):
        def __call__(self) -> None:
            barrier.wait()  # breaks (and fails the flow) unless Q runs at the same time
            self.ok = True

    @Together.register
    class Q(Layer):
        def __call__(self) -> None:
            barrier.wait()
            self.ok = True

    execution = Together(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert execution.layer(P).ok and execution.layer(Q).ok


@pytest.mark.parametrize("executor", EXECUTORS)
def test_concurrency_limit_is_honoured(tmp_path: Path, executor: type[executors.Executor]) -> None:
    class Wide(Flow): ...

    marker = tmp_path / "running"
    marker.mkdir()

    def body(self: Layer) -> None:
        import time

        path = marker / self.name
        path.touch()
        self.seen = len(list(marker.iterdir()))
        time.sleep(0.2)
        path.unlink()

    layers = [type(f"W{i}", (Layer,), {"__call__": body}) for i in range(4)]
    for layer in layers:
        Wide.register(layer)
    execution = Wide(datastore=datastores.Local(tmp_path / "store"), executor=executor(concurrency=1))()
    assert [execution.layer(layer).seen for layer in layers] == [1, 1, 1, 1]


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_executor_concurrency_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency must be a whole number of at least 1"):
        executors.Thread(concurrency=bad)
    with pytest.raises(ConfigurationError, match="timeout must be a positive number"):
        executors.Process(timeout=0)


def test_unknown_executor_lists_what_is_installed() -> None:
    with pytest.raises(PluginNotFound) as error:
        Diamond(datastore="memory://", executor="warp-drive")
    assert (
        "'warp-drive'" in str(error.value) and "thread" in str(error.value) and "process" in str(error.value)
    )


# ---- timeouts ------------------------------------------------------------------------------------


class Slow(Flow): ...


@Slow.register
class Sleeper(Layer):
    """Records its pid, sleeps, then leaves a marker file: the marker appears only if it is not stopped."""

    def __call__(self, parameters: Parameters) -> None:
        Path(parameters.root, "pid").write_text(str(os.getpid()))
        time.sleep(parameters.sleep)
        Path(parameters.root, "finished").touch()


def test_process_executor_timeout_kills_the_split(tmp_path: Path) -> None:
    # Twice the timeout: the worker has time to start (its interpreter and imports count against the
    # timeout: on a loaded machine that took over 2 s), and the layer to begin its sleep.
    sleep = 8.0
    flow = Slow(datastore=datastores.Local(tmp_path / "store"), executor=executors.Process(timeout=4))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="ran longer than the executor's timeout of 4 s"):
        flow(root=str(tmp_path), sleep=sleep)
    assert (tmp_path / "pid").exists(), "the layer never started; the check below would prove nothing"
    # Wait past the moment the layer would have finished had its worker been left running.
    time.sleep(max(0.0, started + sleep + 1.5 - time.monotonic()))
    assert not (tmp_path / "finished").exists(), "the timed-out split went on running in its worker"
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)  # and its worker process is gone


def test_thread_executor_timeout_fails_the_flow(tmp_path: Path) -> None:
    class SlowThread(Flow): ...

    @SlowThread.register
    class Sleeper(Layer):
        def __call__(self) -> None:
            import time

            time.sleep(2)
            self.done = True

    flow = SlowThread(datastore=datastores.Local(tmp_path), executor=executors.Thread(timeout=0.2))
    with pytest.raises(TimeoutError, match=r"ran longer than the executor's timeout of 0\.2 s"):
        flow(execution="slow")
    assert not flow.execution("slow").layer(Sleeper).state.finished


# ---- a failed run starts nothing new -------------------------------------------------------------


class Queued(Flow): ...


@Queued.register
class Many(Layer):
    def __call__(self) -> None:
        self.shard(item=list(range(200)))


#: The items whose split started, in this process (the Thread executor's splits run here).
STARTED: list[int] = []


@Queued.register(foreach=ForEach(parameters=[Parameter(layer=Many, attribute="item")]))
class Each(Layer):
    def __call__(self, many: Many) -> None:
        STARTED.append(many.item)
        if many.item == 3:
            raise ValueError("item 3 is broken")
        time.sleep(0.02)
        self.value = many.item


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["no timeout", "timeout"])
def test_a_failed_run_starts_none_of_the_splits_the_thread_executor_still_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: float | None
) -> None:
    STARTED.clear()
    executor = executors.Thread(concurrency=2, timeout=timeout)
    assert executor.window >= 64, "with a shallow queue this would prove little"
    flow = Queued(datastore=datastores.Local(tmp_path), executor=executor)
    with pytest.raises(ValueError, match="item 3 is broken"):
        flow(execution="queued")
    # Splits 0-3, and at most a few more the two threads took while the error reached the loop;
    # every queued split would run without cancel_queued (at least the window of 64).
    assert 4 <= len(STARTED) <= 12, STARTED
    each = flow.execution("queued").status.layers["Each"]
    assert str(each) == "failed" and each.error is not None and each.error["message"] == "item 3 is broken"
    assert sorted(each.attempts) == sorted(STARTED)  # a split never started is not an attempt
    assert [i for i, attempts in each.attempts.items() if any(a.error for a in attempts)] == [3]
    told = capsys.readouterr().err
    assert told.count("failed on attempt") == 1, told  # and the progress display does not report it
    assert "1 failed" in told


RETRIED: list[int] = []


class Retrying(Flow): ...


@Retrying.register
class Broken(Layer):
    def __call__(self) -> None:
        time.sleep(0.3)  # Flaky's first attempt has failed by now, and it waits to retry
        raise KeyError("broken for good")


@Retrying.register(retry=Retry(attempts=3, delay=3600, jitter=0))
class Flaky(Layer):
    def __call__(self) -> None:
        RETRIED.append(self.attempt)
        raise ValueError("flaky")


@pytest.mark.timeout(60)  # far below the hour Flaky would wait: the failure ends the wait
def test_a_split_waiting_to_retry_when_the_run_fails_stops_waiting_and_does_not_retry(tmp_path: Path) -> None:
    RETRIED.clear()
    flow = Retrying(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))
    with pytest.raises(KeyError, match="broken for good"):
        flow(execution="retrying")
    assert RETRIED == [0]  # before, attempts 1 and 2 ran after the run had failed, each an hour later
    flaky = flow.execution("retrying").status.layers["Flaky"]
    assert str(flaky) == "cancelled", flaky
    assert [(a.attempt, a.error["message"] if a.error else None) for a in flaky.attempts[0]] == [(0, "flaky")]


def test_cancel_queued_settles_the_queued_splits_and_leaves_the_running_one(tmp_path: Path) -> None:
    """The Thread executor's own side: what it still queues raises SplitNotStarted; what runs ends."""
    holding, release = threading.Event(), threading.Event()

    class Held(Flow): ...

    @Held.register
    class Hold(Layer):
        def __call__(self) -> None:
            holding.set()
            release.wait(30)
            self.done = True

    flow = Held(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=1))
    tasks = [SplitTask(flow=flow, execution="held", layer="Hold") for _ in range(3)]
    executor = executors.Thread(concurrency=1)

    async def main() -> list[Any]:
        await executor.start()
        try:
            runs = [asyncio.ensure_future(executor.run(task)) for task in tasks]
            assert await asyncio.to_thread(holding.wait, 30)  # the first runs on the one thread
            executor.cancel_queued()  # the other two wait in its queue
            release.set()
            return await asyncio.gather(*runs, return_exceptions=True)
        finally:
            await executor.stop()

    first, second, third = asyncio.run(main())
    assert isinstance(first, SplitOutcome) and "done" in first.record.archives
    for queued in (second, third):
        assert isinstance(queued, SplitNotStarted)
        assert "was not started: the run had failed or was stopped" in str(queued)


# ---- worker loss ---------------------------------------------------------------------------------


class Dying(Flow): ...


class DyingOnce(Flow): ...


@Dying.register(retry=Retry(attempts=2, delay=0))
@DyingOnce.register
class Dies(Layer):
    """Its worker process dies on the first attempt."""

    def __call__(self, parameters: Parameters) -> None:
        if self.attempt == 0:
            Path(parameters.root, "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)
        self.pid = os.getpid()
        self.attempt_seen = self.attempt


def test_a_worker_that_dies_mid_split_is_replaced_and_the_split_retried(tmp_path: Path) -> None:
    flow = Dying(datastore=datastores.Local(tmp_path / "store"), executor=executors.Process())
    execution = flow(root=str(tmp_path))
    killed = int((tmp_path / "killed").read_text())
    assert execution.layer(Dies).attempt_seen == 1 and execution.layer(Dies).pid != killed


def test_a_worker_that_dies_without_a_retry_fails_with_worker_lost(tmp_path: Path) -> None:
    flow = DyingOnce(datastore=datastores.Local(tmp_path / "store"), executor=executors.Process())
    with pytest.raises(WorkerLost) as raised:
        flow(execution="lost", root=str(tmp_path))
    killed = int((tmp_path / "killed").read_text())
    assert f"the worker process (pid {killed}) running layer Dies" in str(raised.value)
    assert "exited with code -9 before it finished" in str(raised.value)
    assert not flow.execution("lost").layer(Dies).state.finished


# ---- worker start-up -----------------------------------------------------------------------------

#: A flow whose module takes seconds to import in a worker, as one importing pandas or torch does.
SLOW_IMPORT = """
import os
import time

from laminar import Flow, Layer
from laminar.configurations.layers import ForEach, Parameter

if os.environ.get("LAMINAR_WORKER") == "1":
    time.sleep(2)
    open(os.path.join(os.environ["SLOW_IMPORT_MARKS"], f"imported-{os.getpid()}"), "w").close()


class SlowImport(Flow): ...


@SlowImport.register
class First(Layer):
    def __call__(self) -> None:
        self.pid = os.getpid()
        self.shard(item=list(range(6)))


@SlowImport.register(foreach=ForEach(parameters=[Parameter(layer=First, attribute="item")]))
class Quick(Layer):
    def __call__(self, first: First) -> None:
        self.pid = os.getpid()
"""


def test_a_split_goes_to_a_ready_worker_rather_than_wait_for_a_new_ones_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quick's splits are handed over while a second worker is still importing the flow's module:
    the first worker, ready and free again within milliseconds, runs them all, and the execution
    ends without waiting for the second's imports (it is killed before it finishes them). Workers
    started as new interpreters (``spawn``): forked ones import nothing (tests/test_process_template.py)."""
    (tmp_path / "slow_import_flow.py").write_text(SLOW_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers are given this process's path
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("SLOW_IMPORT_MARKS", str(marks))
    import slow_import_flow

    flow = slow_import_flow.SlowImport(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(concurrency=2, start_method="spawn"),
    )
    execution = flow()
    first = execution.layer("First").pid
    assert set(execution.layer("Quick").pid) == {first} and first != os.getpid()
    imported = {path.name.split("-")[1] for path in marks.glob("imported-*")}
    assert imported == {str(first)}  # the second worker, if it began importing, never finished


def test_a_worker_that_cannot_start_fails_its_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned workers (a forked one needs no interpreter: it is a copy of the template)."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    executor = executors.Process(start_method="spawn")
    flow = Diamond(datastore=datastores.Local(tmp_path / "store"), executor=executor)
    with pytest.raises(FileNotFoundError, match="no-python-here"):
        flow(seed=1)


# ---- the execution guard in a process that runs one layer --------------------------------------------


def test_environment_protocol_runs_one_layer_and_the_guard_is_false(tmp_path: Path) -> None:
    """What an executor that starts the script in a container does: LAMINAR_* say which split."""
    script = textwrap.dedent(
        """
        import os
        from laminar import Flow, Layer

        class ResultFlow(Flow): ...

        @ResultFlow.register
        class A(Layer):
            def __call__(self) -> None:
                self.foo = "bar"

        @ResultFlow.register
        class B(Layer):
            def __call__(self, a: A) -> None:
                self.foo = a.foo + "!"
                self.attempt_seen = self.attempt

        if flow := ResultFlow():
            print("RAN", flow().id)
        elif os.environ.get("LAMINAR_LAYER_NAME"):
            print("GUARD FALSE")
        """
    )
    (tmp_path / "main.py").write_text(script)
    execution_id = run_script(tmp_path, "main.py").split()[1]
    # Re-run layer B of that execution as a fresh process, as a container executor would.
    environment = {
        "LAMINAR_EXECUTION_ID": execution_id,
        "LAMINAR_EXECUTION_RETRY": "0",
        "LAMINAR_FLOW_NAME": "ResultFlow",
        "LAMINAR_LAYER_NAME": "B",
        "LAMINAR_LAYER_INDEX": "",
        "LAMINAR_LAYER_SPLITS": "",
        "LAMINAR_LAYER_ATTEMPT": "1",
    }
    output = run_script(tmp_path, "main.py", env=environment)
    assert "GUARD FALSE" in output and "RAN" not in output
    (tmp_path / "read.py").write_text(
        "import sys\nfrom main import B, flow\nprint(flow.execution(sys.argv[1]).layer(B).foo)\n"
    )
    assert run_script(tmp_path, "read.py", execution_id).strip() == "bar!"
    # What the process recorded, where the executor's recorded_outcome reads it (the scheduler then
    # writes it into B's record; this execution's record still holds the first run's attempt 0).
    (tmp_path / "attempt.py").write_text(
        "import sys\nfrom main import flow\nstore = flow.execution(sys.argv[1]).store\n"
        "split = store.read_batch('B', '0-0.json').splits[0]\n"
        "print(store.load(split.archives['attempt_seen'].artifacts[0]))\n"
    )
    assert run_script(tmp_path, "attempt.py", execution_id).strip() == "1"


# ---- executors written against the plugin API ----------------------------------------------------------


class Careless(executors.Thread):
    """An executor that forgets to hand back the split's outcome."""

    names = ("careless",)

    async def run(self, task: SplitTask) -> SplitOutcome:
        await super().run(task)
        return None  # type: ignore[return-value]


def test_an_executor_that_does_not_return_the_outcome_is_named_and_not_retried(tmp_path: Path) -> None:
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

    never = SplitTask(flow=flow, execution="scripted", layer="Square", index=7, splits=8)
    with pytest.raises(RuntimeError, match=r"split 7 of 8, attempt 0.* exited without recording its result"):
        recorded_outcome(never)


def test_executions_running_at_once_on_one_thread_executor_each_get_their_own_pool(tmp_path: Path) -> None:
    """Threads of a notebook running one flow object, and a layer that runs another execution of it."""

    class Shared(Flow): ...

    @Shared.register
    class Work(Layer):
        def __call__(self, parameters: Parameters) -> None:
            time.sleep(0.01)
            self.value = parameters.n * 2
            if parameters.nest:  # an execution run from inside a layer, on the same executor object
                self.nested = flow(n=parameters.n + 100, nest=False).layer(Work).value

    flow = Shared(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))
    found: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            execution = flow(n=n, nest=True)
            found[n] = (execution.layer(Work).value, execution.layer(Work).nested)
        except BaseException as error:
            errors.append(error)

    for _ in range(5):
        threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "an execution hung"
    assert not errors, errors
    assert found == {n: (n * 2, (n + 100) * 2) for n in range(4)}


class FailsToStart(executors.Thread):
    async def start(self) -> None:
        raise OSError("no workers today")


def test_an_executor_that_fails_to_start_ends_the_run_as_failed(tmp_path: Path) -> None:
    class Unstarted(Flow): ...

    @Unstarted.register
    class Never(Layer):
        def __call__(self) -> None:
            self.x = 1

    flow = Unstarted(datastore=datastores.Local(tmp_path), executor=FailsToStart())
    with pytest.raises(OSError, match="no workers today"):
        flow(execution="unstarted")
    status = flow.execution("unstarted").status
    assert status == "failed" and status.error is not None and status.error["message"] == "no workers today"


def test_the_collector_runs_less_often_during_a_run_and_as_before_after_it(tmp_path: Path) -> None:
    import gc

    class Collected(Flow): ...

    @Collected.register
    class Seen(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.threshold = gc.get_threshold()[0]
            if parameters.fail:
                raise ValueError("fails")

    before = gc.get_threshold()
    flow = Collected(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow(fail=False).layer(Seen).threshold == 50_000
    assert gc.get_threshold() == before
    with pytest.raises(ValueError):
        flow(fail=True)
    assert gc.get_threshold() == before
