"""ExecutorConformance: the behaviour every executor plugin owes Laminar, as reusable pytest tests.

Subclass it in your plugin's tests and provide ``make_executor``, a fixture returning a callable
that builds a fresh executor from ``concurrency`` and ``timeout``::

    from laminar.testing import ExecutorConformance

    class TestMyExecutor(ExecutorConformance):
        @pytest.fixture
        def make_executor(self):
            return lambda **options: MyExecutor(**options)

Override the ``datastore`` fixture when layers run where the test's temporary directory is not
reachable. The flows live at module level so any executor can import them where layers run.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from laminar import Flow, Layer, Parameters
from laminar.configurations import hooks
from laminar.configurations.datastores import Local
from laminar.configurations.layers import Catch, ForEach, Parameter, Retry
from laminar.plugins import Datastore, Executor
from laminar.testing.reuse import (
    check_a_changed_input_runs_what_reads_it,
    check_a_rerun_after_gc_computes_again,
    check_an_unchanged_rerun_runs_nothing,
    check_two_executions_computing_a_layer_at_once_both_succeed,
)

MakeExecutor = Callable[..., Executor]


class Conformance(Flow):
    """The flow the conformance tests run; ``marks`` is a directory layers may write to."""


@Conformance.register
class Source(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(items=range(parameters.count))
        self.pid = os.getpid()


@Conformance.register(foreach=ForEach(parameters=[Parameter(layer=Source, attribute="items")]))
class Double(Layer):
    def __call__(self, source: Source) -> None:
        self.value = source.items * 2


@Conformance.register
class Sum(Layer):
    def __call__(self, double: Double, source: Source) -> None:
        self.total = sum(double.value)


class Failing(Flow): ...


@Failing.register
class Fine(Layer):
    def __call__(self) -> None:
        self.kept = "kept"


@Failing.register
class Broken(Layer):
    def __call__(self, fine: Fine) -> None:
        raise ValueError(f"broken after {fine.kept}")


class Recovering(Flow): ...


@Recovering.register(catch=Catch(KeyError))
class Caught(Layer):
    def __call__(self) -> None:
        self.before = "saved"
        raise KeyError("absorbed")


@Recovering.register(retry=Retry(attempts=3, delay=0, jitter=0))
class Flaky(Layer):
    def __call__(self, caught: Caught) -> None:
        if self.attempt < 2:
            raise RuntimeError(f"attempt {self.attempt} fails")
        self.succeeded_on = self.attempt


class Exclusive(Flow): ...


@Exclusive.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(marks=[parameters.marks] * 4)


@Exclusive.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="marks")]))
class Alone(Layer):
    def __call__(self, items: Items) -> None:
        lock = Path(items.marks) / "lock"
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another split holds it
        time.sleep(0.05)
        os.close(fd)
        lock.unlink()
        self.ok = True


class Together(Flow): ...


def _meet(marks: str, me: str, other: str) -> None:
    Path(marks, me).touch()
    deadline = time.monotonic() + 60
    while not Path(marks, other).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{me} ran alone: independent layers did not run concurrently")
        time.sleep(0.01)


@Together.register
class Left(Layer):
    def __call__(self, parameters: Parameters) -> None:
        _meet(parameters.marks, "left", "right")
        self.ok = True


@Together.register
class Right(Layer):
    def __call__(self, parameters: Parameters) -> None:
        _meet(parameters.marks, "right", "left")
        self.ok = True


class Slow(Flow): ...


@Slow.register
class Sleeper(Layer):
    def __call__(self) -> None:
        time.sleep(5)
        self.woke = True


class Hooked(Flow): ...


@Hooked.register
class Wrapped(Layer):
    @hooks.execution
    def around(self) -> Any:
        self.hook_pid = os.getpid()
        yield
        self.after = True

    def __call__(self) -> None:
        self.call_pid = os.getpid()


class Stopping(Flow): ...


@Stopping.register
class Many(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(40)))


@Stopping.register(foreach=ForEach(parameters=[Parameter(layer=Many, attribute="item")]))
class Marked(Layer):
    """Leaves a mark as it starts; the first fails at once, the others take a while."""

    def __call__(self, parameters: Parameters, many: Many) -> None:
        Path(parameters.marks, str(many.item)).touch()
        if many.item == 0:
            raise ValueError("item 0 is broken")
        time.sleep(1.0)  # longer than an executor takes to report the failure (Dask: about 0.4 s)
        self.value = many.item


class Interruptible(Flow):
    """Six splits that each wait for the test to let them finish: Ctrl-C comes while two run."""


@Interruptible.register
class Waits(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=list(range(6)))


@Interruptible.register(foreach=ForEach(parameters=[Parameter(layer=Waits, attribute="item")]))
class Waiting(Layer):
    def __call__(self, parameters: Parameters, waits: Waits) -> None:
        marks = Path(parameters.marks)
        (marks / f"started-{waits.item}").touch()
        ends = time.monotonic() + 60
        while not (marks / "release").exists() and time.monotonic() < ends:
            time.sleep(0.01)
        self.value = waits.item


@Interruptible.register
class Waited(Layer):
    def __call__(self, waiting: Waiting) -> None:
        self.total = sum(waiting.value)


class Batched(Flow):
    """Many short splits, handed over in batches where the executor takes them: each prints and
    logs; some fail their first attempt and are retried; ``Catch`` absorbs the error of others."""


@Batched.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.count))


@Batched.register(
    foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="item")]),
    retry=Retry(attempts=2, delay=0, jitter=0),
    catch=Catch(KeyError),
)
class Short(Layer):
    def __call__(self, numbers: Numbers) -> None:
        item = numbers.item
        print(f"split {item} attempt {self.attempt}")
        logging.getLogger("laminar.conformance").warning("logged by split %s", item)
        self.value = item * 3
        if item % 7 == 3 and self.attempt == 0:
            raise RuntimeError(f"item {item} fails its first attempt")
        if item % 11 == 5:
            raise KeyError(f"item {item} is caught")


class BatchedFailing(Flow):
    """Many short splits; one fails for good while ``broken`` exists. Each split notes each start."""


@BatchedFailing.register
class Counted(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.count))


@BatchedFailing.register(foreach=ForEach(parameters=[Parameter(layer=Counted, attribute="item")]))
class Noted(Layer):
    def __call__(self, parameters: Parameters, counted: Counted) -> None:
        with open(Path(parameters.marks, str(counted.item)), "a") as file:
            file.write("started\n")
        if counted.item == parameters.breaks and Path(parameters.marks, "broken").exists():
            raise ValueError(f"item {counted.item} is broken")
        self.value = counted.item


def _attempts(execution: Any, layer: type[Layer]) -> dict[int, list[tuple[int, Any, Any]]]:
    """Each split's attempts as the run records keep them, without their times."""
    return {
        index: [(attempt.attempt, attempt.error, attempt.caught) for attempt in attempts]
        for index, attempts in execution.status.layers[layer.__name__].attempts.items()
    }


def _counting_batches(executor: Executor) -> list[int]:
    """The sizes of the batches ``executor`` is handed from now on (it is wrapped in place)."""
    sizes: list[int] = []
    run_batch = executor.run_batch

    async def counted(tasks: Any) -> Any:
        sizes.append(len(tasks))
        return await run_batch(tasks)

    executor.run_batch = counted  # type: ignore[method-assign]
    return sizes


#: The script of the process the Ctrl-C check starts: ``Interruptible`` on the pickled executor and store.
INTERRUPTIBLE = """
import sys
import cloudpickle
from laminar.testing.executor import Interruptible
with open(sys.argv[1], "rb") as file:
    executor, datastore, marks = cloudpickle.load(file)
if flow := Interruptible(datastore=datastore, executor=executor):
    flow(execution="interrupted", marks=marks)
"""


def _started(marks: Path) -> list[int]:
    return sorted(int(mark.name.removeprefix("started-")) for mark in marks.glob("started-*"))


class ExecutorConformance:
    """Reusable tests of the Executor contract (see :class:`laminar.plugins.Executor`)."""

    @pytest.fixture
    def make_executor(self) -> MakeExecutor:
        raise NotImplementedError("provide a make_executor fixture returning lambda **options: Executor(...)")

    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Datastore:
        return Local(tmp_path / "store")

    def test_runs_the_dag_with_fan_out_and_join(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        execution = Conformance(datastore=datastore, executor=make_executor())(count=6)
        assert execution.layer(Sum).total == 30
        assert list(execution.layer(Double).value) == [0, 2, 4, 6, 8, 10]

    def test_a_layer_error_keeps_its_type_and_names_the_layer(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        flow = Failing(datastore=datastore, executor=make_executor())
        with pytest.raises(ValueError, match="broken after kept") as error:
            flow(execution="failing")
        assert "layer Broken of flow Failing" in "\n".join(getattr(error.value, "__notes__", []))
        assert flow.execution("failing").layer(Fine).kept == "kept"
        assert not flow.execution("failing").layer(Broken).state.finished

    def test_catch_and_retry(self, make_executor: MakeExecutor, datastore: Datastore) -> None:
        execution = Recovering(datastore=datastore, executor=make_executor())()
        assert execution.layer(Caught).before == "saved" and execution.layer(Caught).state.finished
        assert execution.layer(Flaky).succeeded_on == 2

    def test_concurrency_one_runs_one_split_at_a_time(
        self, make_executor: MakeExecutor, datastore: Datastore, tmp_path: Path
    ) -> None:
        marks = tmp_path / "marks"
        marks.mkdir()
        execution = Exclusive(datastore=datastore, executor=make_executor(concurrency=1))(marks=str(marks))
        assert list(execution.layer(Alone).ok) == [True] * 4

    def test_independent_layers_run_concurrently(
        self, make_executor: MakeExecutor, datastore: Datastore, tmp_path: Path
    ) -> None:
        marks = tmp_path / "meet"
        marks.mkdir()
        execution = Together(datastore=datastore, executor=make_executor(concurrency=2))(marks=str(marks))
        assert execution.layer(Left).ok and execution.layer(Right).ok

    def test_a_failed_run_starts_no_split_it_had_not_started(
        self, make_executor: MakeExecutor, datastore: Datastore, tmp_path: Path
    ) -> None:
        """An executor that queues splits (``window`` above ``concurrency``) must ``cancel_queued``."""
        marks = tmp_path / "started"
        marks.mkdir()
        flow = Stopping(datastore=datastore, executor=make_executor(concurrency=2))
        with pytest.raises(ValueError, match="item 0 is broken"):
            flow(marks=str(marks))
        started = sorted(int(mark.name) for mark in marks.iterdir())
        assert 1 <= len(started) <= 4, f"splits {started} of 40 started after split 0 failed at once"

    def test_timeout_fails_the_split(self, make_executor: MakeExecutor, datastore: Datastore) -> None:
        flow = Slow(datastore=datastore, executor=make_executor(timeout=0.5))
        with pytest.raises(TimeoutError, match=r"timeout of 0\.5 s"):
            flow(execution="slow")
        assert not flow.execution("slow").layer(Sleeper).state.finished

    def test_execution_hooks_run_where_the_layer_runs(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        layer = Hooked(datastore=datastore, executor=make_executor())().layer(Wrapped)
        assert layer.hook_pid == layer.call_pid and layer.after is True

    def test_batched_splits_keep_each_splits_records_retries_and_logs(
        self, make_executor: MakeExecutor, datastore: Datastore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Splits handed over in batches (``Executor.run_batch``, for an executor that sets
        ``batch_seconds``) leave the same values, attempts (retried, caught) and logs as splits
        handed over one at a time."""
        seen = {}
        for mode, seconds in (("single", "0"), ("batched", "30")):
            monkeypatch.setenv("LAMINAR_BATCH_SECONDS", seconds)
            executor = make_executor(concurrency=2)
            sizes = _counting_batches(executor)
            execution = Batched(datastore=datastore, executor=executor)(execution=mode, count=300)
            state = execution.layer(Short).state
            logs = {
                (index, attempt): state.logs(index=index, attempt=attempt).replace(mode, "EXECUTION")
                for index, attempts in _attempts(execution, Short).items()
                for attempt, _, _ in attempts
            }
            seen[mode] = (list(execution.layer(Short).value), _attempts(execution, Short), logs)
            if mode == "single":
                assert sizes == [], "LAMINAR_BATCH_SECONDS=0 still handed splits over in batches"
            elif executor.batch_seconds is not None:
                assert max(sizes, default=1) > 1, f"an executor that takes batches was handed {sizes}"
        single, batched = seen["single"], seen["batched"]
        assert batched[0] == single[0] == [item * 3 for item in range(300)]
        assert batched[1] == single[1]
        assert [attempt for attempt, _, _ in single[1][3]] == [0, 1] and single[1][5][0][2] is not None
        differ = {
            key: (text, batched[2].get(key)) for key, text in single[2].items() if batched[2].get(key) != text
        }
        assert batched[2].keys() == single[2].keys() and not differ, differ
        assert "split 3 attempt 1" in single[2][(3, 1)] and "logged by split 3" in single[2][(3, 1)]

    def test_a_failure_among_batched_splits_keeps_what_finished(
        self,
        make_executor: MakeExecutor,
        datastore: Datastore,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A split failing for good in a batch fails the run with its own error; splits not started
        by then are not started (``cancel_queued``), what finished is kept: a resume runs each
        split that did not finish, and none twice."""
        monkeypatch.setenv("LAMINAR_BATCH_SECONDS", "30")
        marks = tmp_path / "noted"
        marks.mkdir()
        (marks / "broken").touch()
        # Batches double while splits are short: those in flight when split 40 fails may hold
        # several hundred splits (1,026 were seen started once, of 2,000), so there are 4,000 of them.
        count = 4000
        flow = BatchedFailing(datastore=datastore, executor=make_executor(concurrency=2))
        with pytest.raises(ValueError, match="item 40 is broken") as error:
            flow(execution="failing", count=count, marks=str(marks), breaks=40)
        assert f"split 40 of {count}" in "\n".join(getattr(error.value, "__notes__", []))
        started = {int(mark.name) for mark in marks.iterdir() if mark.name != "broken"}
        assert 40 in started and len(started) < count // 2, (
            f"{len(started)} of {count} splits started after split 40 failed"
        )
        attempts = _attempts(flow.execution("failing"), Noted)
        assert attempts[40][0][1]["message"] == "item 40 is broken"
        (marks / "broken").unlink()
        execution = flow.execution("failing").resume()
        assert list(execution.layer(Noted).value) == list(range(count))
        runs = {int(mark.name): mark.read_text().count("started") for mark in marks.iterdir()}
        assert runs == {item: 2 if item == 40 else 1 for item in range(count)}

    # ---- incremental runs (laminar.testing.reuse) -----------------------------------------------
    def test_reuse_an_unchanged_rerun_runs_nothing(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        check_an_unchanged_rerun_runs_nothing(datastore, make_executor)

    def test_reuse_a_changed_input_runs_what_reads_it(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        check_a_changed_input_runs_what_reads_it(datastore, make_executor)

    def test_reuse_a_rerun_after_gc_computes_again(
        self, make_executor: MakeExecutor, datastore: Datastore
    ) -> None:
        check_a_rerun_after_gc_computes_again(datastore, make_executor)

    def test_reuse_two_executions_computing_a_layer_at_once_both_succeed(
        self, make_executor: MakeExecutor, datastore: Datastore, tmp_path: Path
    ) -> None:
        check_two_executions_computing_a_layer_at_once_both_succeed(
            datastore, make_executor, tmp_path / "marks"
        )

    def test_the_executor_survives_pickling(self, make_executor: MakeExecutor) -> None:
        executor = make_executor(concurrency=3, timeout=7)
        copy = pickle.loads(pickle.dumps(executor))
        assert type(copy) is type(executor) and (copy.concurrency, copy.timeout) == (3, 7)

    def test_ctrl_c_reaches_the_scheduler_only_and_running_splits_finish(
        self, make_executor: MakeExecutor, datastore: Datastore, tmp_path: Path
    ) -> None:
        """Ctrl-C sends SIGINT to every process of the terminal's foreground job: the scheduler's
        and any the executor started on this machine. The scheduler alone acts on it (nothing new
        starts, running splits finish and are kept); no split is recorded as interrupted."""
        marks = tmp_path / "interruptible"
        marks.mkdir()
        setup = tmp_path / "interruptible.pickle"
        setup.write_bytes(cloudpickle.dumps((make_executor(concurrency=2), datastore, str(marks))))
        running = subprocess.Popen(
            [sys.executable, "-c", INTERRUPTIBLE, str(setup)],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a shell's foreground job
        )
        shown: list[str] = []
        try:
            ends = time.monotonic() + 120
            while len(_started(marks)) < 2:
                if running.poll() is not None or time.monotonic() > ends:
                    pytest.fail(f"two splits did not start: {running.communicate(timeout=60)[1]}")
                time.sleep(0.02)
            os.killpg(running.pid, signal.SIGINT)
            assert running.stderr is not None
            for line in running.stderr:  # the scheduler took the signal: now let the splits finish
                shown.append(line)
                if "starts nothing new" in line:
                    break
            (marks / "release").touch()
            shown.append(running.communicate(timeout=120)[1])
        finally:
            if running.poll() is None:
                os.killpg(running.pid, signal.SIGKILL)
                running.wait()
        text = "".join(shown)
        assert running.returncode != 0 and "stopped by SIGINT" in text, text
        before = _started(marks)
        flow = Interruptible(datastore=datastore, executor=make_executor(concurrency=2))
        attempts = flow.execution("interrupted").status.layers["Waiting"].attempts
        errors = {index: [attempt.error for attempt in each] for index, each in attempts.items()}
        assert errors == {index: [None] for index in before}, f"the splits running at Ctrl-C: {errors}"
        assert flow.execution("interrupted").resume().layer(Waited).total == 15
        assert _started(marks) == list(range(6))  # the splits kept did not run again
        assert len(list(marks.glob("started-*"))) == 6
