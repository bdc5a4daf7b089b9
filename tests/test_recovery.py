"""Recovering from failures: a failing layer fails the run and keeps what finished before it;
``Catch`` ends a layer finished with what it assigned; ``Retry`` runs a split again with its attempt
number and a back-off; ``resume()`` runs only the splits without a record, after a failed layer, a
failed write of split records, or a scheduler killed mid-run.

Every flow test runs on the Thread and on the Process executor against a Local datastore. How often
a split ran is logged to a file below ``tmp_path``, whose path reaches the layers as a flow parameter.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import (
    EXECUTORS,
    Batched,
    Double,
    Sum,
    append,
    batch_files,
    executions_in,
    files,
    lines,
    records_one_a_file,
)
from laminar import Flow, Layer, Parameters

# Internal on purpose: which splits have a stored record (the ones resume() skips) is not shown by
# any public API.
from laminar._runtime.context import store_for
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter, Retry
from laminar.errors import FlowDefinitionError

# ---- a failing layer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_failing_layer_raises_its_error_naming_the_layer_and_keeps_what_finished(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Fails(Flow): ...

    @Fails.register
    class Good(Layer):
        def __call__(self) -> None:
            self.kept = "yes"

    @Fails.register
    class Bad(Layer):
        def __call__(self, good: Good) -> None:
            self.partial = 1
            raise ValueError("broken input")

    @Fails.register
    class After(Layer):
        def __call__(self, bad: Bad) -> None:
            self.never = True

    flow = Fails(datastore=datastores.Local(tmp_path), executor=executor())
    with pytest.raises(ValueError, match="broken input") as error:
        flow(execution="failed")
    notes = "\n".join(getattr(error.value, "__notes__", []))
    assert "layer Bad of flow Fails" in notes
    execution = flow.execution("failed")
    assert execution.layer(Good).kept == "yes"
    assert not execution.layer(Bad).state.finished and not execution.layer(After).state.finished
    listed = flow.configuration.datastore.list_layers(execution=execution)
    assert [layer.name for layer in listed] == ["Good"]  # the layers that stored artifacts
    # nothing half-written for the failed split: only its run records (status and logs) exist
    written = [f for f in files(tmp_path) if "Bad" in f]
    assert written and all(f.endswith("layers/Bad/status.json") or "layers/Bad/logs/" in f for f in written)


# ---- Catch ----------------------------------------------------------------------------------------


class Recovering(Flow): ...


@Recovering.register(catch=Catch(TypeError, IOError))
class Partial(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.before = "kept"
        if parameters.error == "io":
            raise FileNotFoundError("no such file")  # a subclass of IOError (OSError)
        if parameters.error == "type":
            raise TypeError("bad type")
        if parameters.error == "value":
            raise ValueError("not caught")
        self.after = "also kept"


@Recovering.register
class UsesPartial(Layer):
    def __call__(self, partial: Partial) -> None:
        self.seen = partial.before
        self.finished = partial.state.finished


@pytest.mark.parametrize("executor", EXECUTORS)
def test_catch_ends_the_layer_finished_with_what_it_assigned(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    flow = Recovering(datastore=datastores.Local(tmp_path), executor=executor())
    caught = flow(execution="caught", error="io")
    assert caught.layer(Partial).state.finished
    assert caught.layer(Partial).before == "kept"
    assert (caught.layer(UsesPartial).seen, caught.layer(UsesPartial).finished) == ("kept", True)
    with pytest.raises(AttributeError, match=r"finished without assigning it \(it stored: before\)"):
        caught.layer(Partial).after  # noqa: B018

    typed = flow(execution="typed", error="type")
    assert typed.layer(Partial).state.finished and typed.layer(UsesPartial).seen == "kept"

    clean = flow(execution="clean", error=None)
    assert clean.layer(Partial).after == "also kept"

    with pytest.raises(ValueError, match="not caught"):
        flow(execution="uncaught", error="value")
    assert not flow.execution("uncaught").layer(Partial).state.finished


class CaughtSplits(Flow): ...


@CaughtSplits.register
class Divisors(Layer):
    def __call__(self) -> None:
        self.shard(divisor=[4, 0, 2])


@CaughtSplits.register(
    foreach=ForEach(parameters=[Parameter(layer=Divisors, attribute="divisor")]), catch=Catch(ArithmeticError)
)
class Divide(Layer):
    def __call__(self, divisors: Divisors) -> None:
        self.divisor = divisors.divisor
        self.quotient = 8 // divisors.divisor  # ZeroDivisionError (an ArithmeticError) in split 1


@CaughtSplits.register
class Quotients(Layer):
    def __call__(self, divide: Divide) -> None:
        self.divisors = list(divide.divisor)
        self.first = divide.quotient[0]
        try:
            divide.quotient[1]
        except AttributeError as error:
            self.missing = str(error)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_catch_in_a_foreach_keeps_each_splits_artifacts(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    execution = CaughtSplits(datastore=datastores.Local(tmp_path), executor=executor())()
    quotients = execution.layer(Quotients)
    assert (quotients.divisors, quotients.first) == ([4, 0, 2], 2)
    assert "Divide has no artifact 'quotient'" in quotients.missing
    assert "finished without assigning it (it stored: divisor)" in quotients.missing
    assert execution.layer(Divide).quotient[2] == 4


# ---- Retry ----------------------------------------------------------------------------------------


class Retrying(Flow): ...


@Retrying.register(retry=Retry(attempts=3, delay=0.01, backoff=2, jitter=0.1))
class Flaky(Layer):
    def __call__(self, parameters: Parameters) -> None:
        append(parameters.log, f"call attempt {self.attempt}")
        if self.attempt < parameters.failures:
            raise RuntimeError(f"flaky on attempt {self.attempt}")
        self.attempt_seen = self.attempt


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retry_runs_again_with_the_attempt_number(tmp_path: Path, executor: type[executors.Executor]) -> None:
    log = tmp_path / "log"
    flow = Retrying(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    execution = flow(execution="twice", failures=2, log=str(log))
    assert execution.layer(Flaky).attempt_seen == 2
    assert lines(log) == [f"call attempt {i}" for i in range(3)]  # retry hooks: see test_hooks.py

    log.unlink()
    with pytest.raises(RuntimeError, match="flaky on attempt 2") as error:
        flow(execution="exhausted", failures=5, log=str(log))
    assert "attempt 2" in "\n".join(getattr(error.value, "__notes__", []))
    assert [line for line in lines(log) if line.startswith("call")] == [f"call attempt {i}" for i in range(3)]
    assert not flow.execution("exhausted").layer(Flaky).state.finished


def test_retry_back_off_follows_delay_backoff_and_jitter() -> None:
    retry = Retry(attempts=5, delay=0.5, backoff=3, jitter=0.1)
    for attempt, base in [(1, 0.5), (2, 1.5), (3, 4.5)]:
        waits = [retry.wait(attempt) for _ in range(200)]
        assert all(base <= wait <= base * 1.1 for wait in waits)
        assert len(set(waits)) > 1  # the jitter is random
    assert Retry(delay=0.2, backoff=2, jitter=0).wait(3) == pytest.approx(0.8)
    spec = Retry(attempts=3, delay=0.1, backoff=2, jitter=0.1)  # SPEC's example: 0.1 s, then 0.2 s
    assert all(0.1 <= spec.wait(1) <= 0.11 and 0.2 <= spec.wait(2) <= 0.22 for _ in range(100))


# ---- resume ---------------------------------------------------------------------------------------


class Resumable(Flow): ...


@Resumable.register
class Numbers1k(Layer):
    def __call__(self, parameters: Parameters) -> None:
        append(parameters.root + "/runs", "Numbers1k")
        self.shard(n=range(parameters.n))


@Resumable.register(foreach=ForEach(parameters=[Parameter(layer=Numbers1k, attribute="n")]))
class MaybeFails(Layer):
    def __call__(self, numbers: Numbers1k, parameters: Parameters) -> None:
        append(parameters.root + "/runs", f"split {self.index}")
        if numbers.n in parameters.failing and os.path.exists(parameters.root + "/broken"):
            raise RuntimeError(f"split {self.index} is broken")
        self.square = numbers.n**2


@Resumable.register
class SumSquares(Layer):
    def __call__(self, fails: MaybeFails) -> None:
        self.total = sum(fails.square)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_reruns_only_the_splits_that_did_not_finish(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    n = 1000
    failing = [n - 3, n - 2, n - 1]
    (tmp_path / "broken").touch()
    flow = Resumable(datastore=datastores.Local(tmp_path / "store"), executor=executor(concurrency=2))
    with pytest.raises(RuntimeError, match=r"split 99\d is broken"):
        flow(execution="resume-me", root=str(tmp_path), n=n, failing=failing)
    first = lines(tmp_path / "runs")
    assert first.count("Numbers1k") == 1
    finished = set(store_for(flow.execution("resume-me")).finished_splits("MaybeFails"))
    # The first failure stops new splits: which of the other failing splits started, and which
    # splits queued behind them, depends on batching and timing. None of the failing ones finished,
    # at least one started, and most of the others finished.
    assert not finished & set(failing) and {f"split {i}" for i in failing} & set(first)
    assert len(finished) > n // 2
    assert not flow.execution("resume-me").layer(MaybeFails).state.finished

    (tmp_path / "broken").unlink()
    (tmp_path / "runs").unlink()
    resumed = flow.execution("resume-me").resume()
    assert resumed.id == "resume-me" and resumed.retry
    rerun = lines(tmp_path / "runs")
    # Numbers1k and every split that finished skipped; the others (failed or never started) run, once
    assert sorted(rerun) == sorted(f"split {i}" for i in set(range(n)) - finished)
    assert resumed.layer(SumSquares).total == sum(i * i for i in range(n))
    assert resumed.layer(MaybeFails).square[n - 1] == (n - 1) ** 2

    (tmp_path / "runs").unlink()
    again = flow.execution("resume-me").resume()  # nothing left to do
    assert lines(tmp_path / "runs") == [] and again.layer(SumSquares).total == resumed.layer(SumSquares).total


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_after_early_failures_runs_each_unfinished_split_once(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    # A failing split stops new splits from starting, so splits after it may never have run: resume
    # runs exactly the splits without a split record (failed or never started), each once.
    n, failing = 200, [10, 100]
    (tmp_path / "broken").touch()
    root = tmp_path / "store"
    flow = Resumable(datastore=datastores.Local(root), executor=executor(concurrency=2))
    with pytest.raises(RuntimeError, match="is broken"):
        flow(execution="early", root=str(tmp_path), n=n, failing=failing)
    finished = set(store_for(flow.execution("early")).finished_splits("MaybeFails"))
    # Which of the splits before 10 finished depends on how they were batched and when 10 failed
    # (a batch queued behind it never starts): what counts is that resume runs exactly the rest.
    assert 10 not in finished and len(finished) < n - len(failing)

    (tmp_path / "broken").unlink()
    (tmp_path / "runs").unlink()
    resumed = flow.execution("early").resume()
    rerun = lines(tmp_path / "runs")
    assert sorted(rerun) == sorted(f"split {i}" for i in set(range(n)) - finished)
    assert resumed.layer(SumSquares).total == sum(i * i for i in range(n))


def test_resume_of_an_unknown_execution_is_refused(tmp_path: Path) -> None:
    flow = Resumable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(
        FlowDefinitionError, match="cannot resume execution nope of flow Resumable: it does not exist"
    ):
        flow.execution("nope").resume()
    assert executions_in(tmp_path) == []


# ---- resume after a failed write of split records, or a killed scheduler -------------------------------


class FailingBatches(datastores.Local):
    """A Local datastore whose writes of one layer's split batches (and of its record, which holds
    the split of a layer of one split) fail, as a full disk would."""

    def write_bytes(self, key: str, data: bytes) -> None:
        if "/layers/Double/splits/" in key or key.endswith("/layers/Double/record.json"):
            raise OSError(28, "No space left on device")
        super().write_bytes(key, data)


@pytest.mark.parametrize(
    ("n", "note"),
    [
        (50, "while writing the records of finished splits of layer Double"),  # by the log's task
        (1, "while writing the record of layer Double"),  # one split: held in the layer's record
    ],
)
def test_a_failed_batch_write_fails_the_run_and_resume_runs_those_splits_again(
    tmp_path: Path, n: int, note: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records_one_a_file(monkeypatch)  # Double's record its own file, whose write fails (not a record pack's)
    flow = Batched(datastore=FailingBatches(tmp_path), executor=executors.Thread())
    with pytest.raises(OSError, match="No space left on device") as raised:
        flow(execution="full", n=n)
    assert note in "\n".join(getattr(raised.value, "__notes__", []))
    assert not flow.execution("full").layer(Double).state.finished
    assert not flow.execution("full").layer(Sum).state.finished
    assert batch_files(tmp_path, "full", "Double") == []  # nothing claims a split finished

    healthy = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    resumed = healthy.execution("full").resume()
    assert resumed.layer(Sum).total == n * (n - 1)


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

    # Which splits the stored batches name (internal: the flow lives in the script, not here).
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
