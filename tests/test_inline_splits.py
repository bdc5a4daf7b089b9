"""A chain's one-split layers run inline: on the scheduler's own thread, at chain points only.

With the Thread executor, a layer of one split whose every not-ended fellow layer depends on it (and
no other split running) runs its split on the event loop's thread instead of a worker's
(``Executor.inline_chains``). These tests say where each split ran by the thread it recorded, and
check what the loop did meanwhile still happens: siblings are never held up, the lease's heartbeat
beats, a second signal stops the split, its log is its own, and a flow run inside it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer
from laminar._plugins import run_records
from laminar._runtime import layer_records
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import Interrupted, LeaseLost

MAIN = "MainThread"  # where pytest runs a test, and so where its run's loop runs
BOUND = 30.0  # seconds a layer waits for what a test expects before it gives up (never reached)


def _here() -> str:
    return threading.current_thread().name


# ---- chain points ---------------------------------------------------------------------------------------
class Diamond(Flow): ...


@Diamond.register
class Top(Layer):
    def __call__(self) -> None:
        self.thread = _here()


BOTH = threading.Barrier(2)


@Diamond.register
class Left(Layer):
    def __call__(self, top: Top) -> None:
        self.thread = _here()
        self.met = _meet()


@Diamond.register
class Right(Layer):
    def __call__(self, top: Top) -> None:
        self.thread = _here()
        self.met = _meet()


@Diamond.register
class Bottom(Layer):
    def __call__(self, left: Left, right: Right) -> None:
        self.thread = _here()


@Diamond.register
class Last(Layer):
    def __call__(self, bottom: Bottom) -> None:
        self.thread = _here()


def _meet() -> bool:
    try:
        BOTH.wait(BOUND)
    except threading.BrokenBarrierError:
        return False
    return True


@pytest.mark.parametrize("datastore", ["memory", "local"])
def test_a_chain_s_layers_run_on_the_loop_s_thread_and_branches_on_workers(
    tmp_path: Path, datastore: str
) -> None:
    BOTH.reset()
    chosen = datastores.Memory() if datastore == "memory" else datastores.Local(tmp_path)
    execution = Diamond(datastore=chosen, executor=executors.Thread(concurrency=2))()
    threads = {name: execution.layer(name).thread for name in ("Top", "Left", "Right", "Bottom", "Last")}
    # Top, Bottom and Last: every layer not ended depends on them; Left and Right run side by side
    assert threads["Top"] == threads["Bottom"] == threads["Last"] == MAIN, threads
    assert threads["Left"].startswith("laminar-layer_") and threads["Right"].startswith("laminar-layer_")
    assert execution.layer(Left).met and execution.layer(Right).met


def test_a_layer_with_a_timeout_or_retry_hooks_or_a_wrapping_executor_is_not_inlined(tmp_path: Path) -> None:
    class Wrapping(executors.Thread):
        async def run(self, task):  # type: ignore[no-untyped-def]
            return await super().run(task)

    for executor in (executors.Thread(timeout=60), Wrapping()):
        BOTH.reset()
        execution = Diamond(
            datastore=datastores.Local(tmp_path / type(executor).__name__), executor=executor
        )()
        assert MAIN not in {execution.layer(name).thread for name in ("Top", "Bottom", "Last")}, executor


# ---- a sibling branch is never held up -----------------------------------------------------------------
class Branches(Flow): ...


FANNED = threading.Event()


@Branches.register
class Start(Layer):
    def __call__(self) -> None:
        self.shard(item=list(range(4)))


@Branches.register
class Slow(Layer):
    """One split, beside a foreach: it waits for the foreach's splits, which must run meanwhile."""

    def __call__(self, start: Start) -> None:
        self.thread = _here()
        self.saw_the_foreach = FANNED.wait(BOUND)


@Branches.register(foreach=ForEach(parameters=[Parameter(layer=Start, attribute="item")]))
class Fan(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.item
        FANNED.set()


def test_a_one_split_layer_beside_a_running_branch_runs_on_a_worker(tmp_path: Path) -> None:
    FANNED.clear()
    execution = Branches(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))()
    assert execution.layer(Slow).saw_the_foreach
    assert execution.layer(Slow).thread.startswith("laminar-layer_")
    assert sorted(execution.layer(Fan).value) == [0, 1, 2, 3]


# ---- the heartbeat -------------------------------------------------------------------------------------
class Beating(Flow): ...


@Beating.register
class Before(Layer):
    def __call__(self) -> None:
        self.x = 1


@Beating.register
class Watch(Layer):
    """Runs inline, and waits (on the loop's thread) until the lease's heartbeat is rewritten."""

    def __call__(self, before: Before) -> None:
        self.thread = _here()
        leases = next(Path(os.environ["ROOT"]).rglob("leases"))
        first = _heartbeat(leases)
        self.refreshed = False
        stop = threading.Event()
        for _ in range(int(BOUND / 0.05)):
            if _heartbeat(leases) != first:
                self.refreshed = True
                break
            stop.wait(0.05)


def _heartbeat(leases: Path) -> float:
    (newest,) = sorted(leases.glob("*.json"))[-1:]
    return float(json.loads(newest.read_text())["heartbeat"])


def test_the_heartbeat_refreshes_the_lease_during_a_long_inline_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_LEASE_TTL", "0.6")  # a beat every 0.2 s
    monkeypatch.setenv("ROOT", str(tmp_path))
    flow = Beating(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(execution="beating")
    assert execution.layer(Watch).thread == MAIN
    assert execution.layer(Watch).refreshed


# ---- signals -------------------------------------------------------------------------------------------
class Stoppable(Flow): ...


RELEASE = threading.Event()
WAITING = threading.Event()


@Stoppable.register
class Done(Layer):
    def __call__(self) -> None:
        self.x = 1


@Stoppable.register
class Stuck(Layer):
    """Waits (inline, on the main thread) for an event nobody sets; only a signal ends it early."""

    def __call__(self, done: Done) -> None:
        self.thread = _here()
        WAITING.set()
        for _ in range(int(BOUND / 0.05)):
            if RELEASE.wait(0.05):
                break
        self.waited_to_the_end = True


@Stoppable.register
class After(Layer):
    def __call__(self, stuck: Stuck) -> None:
        self.y = 2


def test_a_second_sigint_interrupts_an_inline_split_and_keeps_what_finished(tmp_path: Path) -> None:
    RELEASE.clear()
    WAITING.clear()
    stop = threading.Event()
    received: list[int] = []

    def sender() -> None:  # SIGINT to the main thread, until the run ended (two may arrive as one)
        WAITING.wait(BOUND)
        for _ in range(int(BOUND / 0.1)):
            if stop.is_set():
                return
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            stop.wait(0.1)

    before = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))  # after the run
    thread = threading.Thread(target=sender)
    flow = Stoppable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    try:
        thread.start()
        with pytest.raises(Interrupted, match="was stopped by SIGINT; what finished is kept"):
            flow(execution="stopped")
    finally:
        stop.set()
        thread.join()
        signal.signal(signal.SIGINT, before)
    execution = flow.execution("stopped")
    assert execution.layer(Done).state.finished and execution.layer(Done).x == 1
    assert not execution.layer(Stuck).state.finished  # stopped in the middle, not let finish
    assert not execution.layer(After).state.finished
    RELEASE.set()  # the resume lets it finish
    resumed = execution.resume()
    assert resumed.layer(Stuck).waited_to_the_end and resumed.layer(Stuck).thread == MAIN
    assert resumed.layer(After).y == 2


# ---- log capture ---------------------------------------------------------------------------------------
class Talking(Flow): ...


@Talking.register
class Says(Layer):
    def __call__(self) -> None:
        import logging

        self.thread = _here()
        print(f"hello from attempt {self.attempt}")
        logging.getLogger("user.layer").warning("logged at attempt %s", self.attempt)


@Talking.register(retry=Retry(attempts=2, delay=0))
class Fails(Layer):
    def __call__(self, says: Says) -> None:
        self.thread = _here()
        print(f"trying {self.attempt}")
        if self.attempt == 0:
            raise RuntimeError("the first attempt fails")


def test_an_inline_split_s_output_is_captured_into_its_own_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_PROGRESS", "1")  # the scheduler's own lines, on the same thread
    execution = Talking(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert execution.layer(Says).thread == execution.layer(Fails).thread == MAIN
    assert (
        execution.layer(Says).state.logs()
        == "hello from attempt 0\nWARNING user.layer: logged at attempt 0\n"
    )
    assert execution.layer(Fails).state.logs(attempt=0) == "trying 0\n"
    assert execution.layer(Fails).state.logs(attempt=1) == "trying 1\n"
    shown = capfd.readouterr()
    assert "hello from attempt 0" in shown.out and "trying 1" in shown.out  # still shown live
    assert "laminar:" in shown.err  # the scheduler's own lines went out, and into no split's log


# ---- a flow inside an inline split ---------------------------------------------------------------------
class Inner(Flow): ...


@Inner.register
class Leaf(Layer):
    def __call__(self) -> None:
        self.thread = _here()
        self.value = 42


class Outer(Flow): ...


@Outer.register
class Nest(Layer):
    def __call__(self) -> None:
        self.thread = _here()
        inner = Inner(datastore=datastores.Local(os.environ["INNER"]), executor=executors.Thread())()
        self.value, self.inner_thread = inner.layer(Leaf).value, inner.layer(Leaf).thread

        async def coroutine() -> int:
            await asyncio.sleep(0)
            return 7

        self.from_asyncio = asyncio.run(coroutine())  # no running loop, as on a worker thread


def test_a_flow_run_inside_an_inline_split_runs_on_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER", str(tmp_path / "inner"))
    execution = Outer(datastore=datastores.Local(tmp_path / "outer"), executor=executors.Thread())()
    assert execution.layer(Nest).thread == MAIN
    assert execution.layer(Nest).value == 42
    assert execution.layer(Nest).inner_thread == "laminar-scheduler"  # the inner run's own loop thread
    assert execution.layer(Nest).from_asyncio == 7


class TakenOver(Flow): ...


@TakenOver.register
class Plant(Layer):
    """Runs inline; another scheduler takes the lease over meanwhile (a newer generation appears)."""

    def __call__(self) -> None:
        leases = next(Path(os.environ["ROOT"]).rglob("leases"))
        newest = sorted(leases.glob("*.json"))[-1]
        holder = json.loads(newest.read_text())
        generation = holder["generation"] + 1
        holder.update(generation=generation, host="elsewhere.example", token="theirs")
        (leases / f"{generation:010d}.json").write_text(json.dumps(holder))
        stop = threading.Event()
        stop.wait(3.0)  # several beats (every 0.2 s): one finds the newer generation


@TakenOver.register
class Next(Layer):
    def __call__(self, plant: Plant) -> None:
        self.ran = True


def test_a_lease_taken_over_during_an_inline_split_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_LEASE_TTL", "0.6")
    monkeypatch.setenv("ROOT", str(tmp_path))
    flow = TakenOver(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(LeaseLost, match="was taken over by pid"):
        flow(execution="taken")
    assert not flow.execution("taken").layer(Next).state.finished


def test_a_first_sigint_lets_an_inline_split_finish_and_starts_nothing_new(tmp_path: Path) -> None:
    RELEASE.clear()
    WAITING.clear()

    def sender() -> None:  # one SIGINT to the main thread while Stuck waits, then let Stuck finish
        WAITING.wait(BOUND)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        RELEASE.set()

    thread = threading.Thread(target=sender)
    flow = Stoppable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    thread.start()
    try:
        with pytest.raises(Interrupted, match="was stopped by SIGINT; what finished is kept"):
            flow(execution="stopped")
    finally:
        thread.join()
    execution = flow.execution("stopped")
    assert execution.layer(Stuck).state.finished and execution.layer(Stuck).thread == MAIN
    assert not execution.layer(After).state.finished  # nothing new started


def test_a_chain_thousands_of_layers_long_runs_inline() -> None:
    # Which layers depend on which is worked out without recursion: 1,500 layers in a chain.
    class Long(Flow): ...

    def link(number: int, upstream: type[Layer] | None) -> type[Layer]:
        def first(self: Any) -> None:
            self.value = 0

        def after(self: Any, before: Any) -> None:
            self.value = before.value + number

        after.__annotations__ = {"before": upstream, "return": None}
        return type(f"Link{number}", (Layer,), {"__call__": first if upstream is None else after})

    previous: type[Layer] | None = None
    for number in range(1500):
        previous = Long.register(link(number, previous))
    execution = Long(datastore=datastores.Memory(), executor=executors.Thread())()
    assert execution.layer("Link1499").value == sum(range(1500))


def _chain(length: int, *, reads: contextvars.ContextVar[str] | None = None) -> type[Flow]:
    class Long(Flow): ...

    def link(number: int, upstream: type[Layer] | None) -> type[Layer]:
        def first(self: Any) -> None:
            self.seen = [] if reads is None else [reads.get()]
            if reads is not None:
                reads.set(f"set by Link{number}")

        def after(self: Any, before: Any) -> None:
            self.seen = [*before.seen, *([] if reads is None else [reads.get()])]
            if reads is not None:
                reads.set(f"set by Link{number}")

        after.__annotations__ = {"before": upstream, "return": None}
        return type(f"Link{number}", (Layer,), {"__call__": first if upstream is None else after})

    previous: type[Layer] | None = None
    for number in range(length):
        previous = Long.register(link(number, previous))
    return Long


def test_a_chain_s_layers_follow_one_another_without_a_turn_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each layer runs next in the task of the layer before it: no task is woken through the loop
    # between them (one turn a layer, 91 for 80 layers, when every layer waited in a task of its own).
    turns = 0
    run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def counted(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal turns
        turns += 1
        run_once(loop)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "_run_once", counted)
    # No thread of the run's hands work back while it runs, however slow a loaded machine makes a
    # layer: no "running" status is due, nor a "finished" one, nor a record on its timer.
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 3600.0)
    monkeypatch.setattr(run_records, "FINISHED_AFTER", 3600.0)
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)
    execution = _chain(80)(datastore=datastores.Memory(), executor=executors.Thread())()
    assert execution.layer("Link79").seen == []
    # 11 turns on a quiet machine.
    assert 0 < turns < 50, f"{turns} turns of the loop for a chain of 80 layers"


SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def test_a_context_variable_an_inline_split_sets_is_not_seen_by_the_layers_after_it() -> None:
    # The layers of a chain run one after another in one task: each split gets a copy of its
    # context, as a split in a task of its own would.
    execution = _chain(5, reads=SEEN)(datastore=datastores.Memory(), executor=executors.Thread())()
    assert execution.layer("Link4").seen == ["unset"] * 5
    assert SEEN.get() == "unset"
