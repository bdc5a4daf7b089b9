"""A chain layer's engine cost (issue 29, item 3): hook calls, a run's objects, the lease's heartbeat.

A flow's hook relay calls each lifecycle hook's implementations itself, as pluggy would (order,
arguments, results, ``firstresult``, exceptions), and leaves the call to pluggy whenever a wrapper,
a monitor (``add_hookcall_monitoring``) or anything else it does not do takes part: those see every
call. A plugin registered or unregistered on a flow's manager is called from then on, or not. A
finished run's objects are in no reference cycle: they go when the last reference does, not at the
garbage collector's next pass, and before the collector the run held back looks at what is left.
Runs one after another wake the heartbeat's thread once, not once a run. A layer sets up nothing it
does not use (reuse checks without reuse, context managers no plugin gave), and an unset variable
is read without ``os.environ``'s ``KeyError``. Calls, objects and wake-ups are counted, never timed.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import pluggy
import pytest
from laminar import Execution, Flow, Layer
from laminar._plugins.calls import QuickRelay
from laminar._storage import lease
from laminar.configurations import datastores, executors
from laminar.plugins import Run, hookimpl


class Three(Flow): ...


@Three.register
class One(Layer):
    def __call__(self) -> None:
        self.carried = [1]


@Three.register
class Two(Layer):
    def __call__(self, one: One) -> None:
        self.carried = [*one.carried, 2]


@Three.register
class Last(Layer):
    def __call__(self, two: Two) -> None:
        self.carried = [*two.carried, 3]


LIFECYCLE = (
    "laminar_execution_started",
    "laminar_layer_started",
    "laminar_split_started",
    "laminar_split_finished",
    "laminar_layer_finished",
    "laminar_execution_finished",
    "laminar_split_context",
)


def three() -> Three:
    return Three(datastore=datastores.Memory(), executor=executors.Thread())


class Layers:
    """Counts the layers it is told of."""

    def __init__(self) -> None:
        self.started: list[str] = []

    @hookimpl
    def laminar_layer_started(self, layer: Layer) -> None:
        self.started.append(layer.name)


# ---- the flow's hooks --------------------------------------------------------------------------------
def test_a_run_calls_its_lifecycle_hooks_without_pluggy_s_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    through = pluggy.HookCaller.__call__

    def counted(self: pluggy.HookCaller, **kwargs: object) -> Any:
        called.append(self.name)
        return through(self, **kwargs)

    monkeypatch.setattr(pluggy.HookCaller, "__call__", counted)
    flow = three()
    assert flow().layer("Last").carried == [1, 2, 3]
    assert [name for name in called if name in LIFECYCLE] == []


def test_a_wrapper_sees_every_call_and_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrapping:
        def __init__(self) -> None:
            self.seen: list[tuple[str, object]] = []

        @hookimpl(wrapper=True)
        def laminar_layer_started(self, layer: Layer) -> Iterator[None]:
            result = yield
            self.seen.append((layer.name, result))
            return result

    flow = three()
    wrapping = Wrapping()
    counter = Layers()
    flow.configuration.plugins.register(wrapping)
    flow.configuration.plugins.register(counter)
    flow()
    assert counter.started == ["One", "Two", "Last"]
    assert wrapping.seen == [("One", []), ("Two", []), ("Last", [])]


def test_a_monitor_sees_every_call_and_calls_are_quick_again_once_it_is_gone() -> None:
    flow = three()
    manager = flow.configuration.plugins
    before: list[str] = []
    undo = manager.add_hookcall_monitoring(lambda name, impls, kwargs: before.append(name), lambda *_: None)
    flow()
    assert before.count("laminar_layer_started") == 3 and before.count("laminar_split_finished") == 3
    assert before.count("laminar_execution_started") == before.count("laminar_execution_finished") == 1
    undo()
    before.clear()
    flow()
    assert before == []


def test_a_plugin_registered_later_is_called_and_one_unregistered_is_not() -> None:
    flow = three()
    flow()  # the hooks' calls are worked out
    counter = Layers()
    flow.configuration.plugins.register(counter, name="counter")
    flow()
    assert counter.started == ["One", "Two", "Last"]
    flow.configuration.plugins.unregister(name="counter")
    flow()
    assert counter.started == ["One", "Two", "Last"]


# ---- a quick call is pluggy's call -------------------------------------------------------------------
marker = pluggy.HookspecMarker("quick")
implements = pluggy.HookimplMarker("quick")


class Spec:
    @marker
    def event(self, a: int, b: int) -> Any:  # type: ignore[empty-body]
        """Every implementation's result."""

    @marker(firstresult=True)
    def choose(self, a: int, b: int) -> Any:  # type: ignore[empty-body]
        """The first result that is not None."""


def _manager(log: list[str]) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("quick")
    manager.add_hookspecs(Spec)

    class Plain:
        @implements
        def event(self, a: int) -> int:
            log.append("plain")
            return a

        @implements
        def choose(self, b: int) -> None:
            log.append("plain")

    class Nothing:
        @implements
        def event(self) -> None:
            log.append("nothing")

        @implements
        def choose(self, a: int, b: int) -> int:
            log.append("nothing")
            return a * b

    class First:
        @implements(tryfirst=True)
        def event(self, b: int, a: int) -> tuple[int, int]:
            log.append("first")
            return (b, a)

        @implements(tryfirst=True)
        def choose(self) -> None:
            log.append("first")

    class Last:
        @implements(trylast=True)
        def event(self, a: int, b: int) -> int:
            log.append("last")
            return a + b

        @implements(trylast=True)
        def choose(self, a: int) -> int:
            log.append("last")
            return -a

    for plugin in (Last(), First(), Plain(), Nothing()):
        manager.register(plugin)
    return manager


@pytest.mark.parametrize("hook", ["event", "choose"])
def test_a_quick_call_calls_what_pluggy_calls_in_its_order_and_gives_its_result(hook: str) -> None:
    log: list[str] = []
    manager = _manager(log)
    expected = getattr(manager.hook, hook)(a=2, b=5)
    order, log[:] = list(log), []
    quick = QuickRelay(manager)
    assert getattr(quick, hook)(a=2, b=5) == expected
    assert log == order
    assert getattr(quick, hook)._state[1] is not None  # called quickly, not handed to pluggy


def test_a_quick_call_stops_at_an_implementation_s_error_as_pluggy_does() -> None:
    log: list[str] = []
    manager = _manager(log)

    class Failing:
        @implements
        def event(self, b: int) -> None:
            log.append("failing")
            raise KeyError(b)

    manager.register(Failing())
    with pytest.raises(KeyError):
        manager.hook.event(a=1, b=2)
    order, log[:] = list(log), []
    with pytest.raises(KeyError):
        QuickRelay(manager).event(a=1, b=2)
    assert log == order == ["first", "failing"]


def test_a_call_missing_an_argument_is_pluggy_s_own() -> None:
    manager = _manager([])
    with pytest.warns(UserWarning, match="'b'"), pytest.raises(pluggy.HookCallError):
        QuickRelay(manager).event(a=1)


# ---- what a finished run leaves ----------------------------------------------------------------------
def test_a_finished_run_s_objects_go_with_their_last_reference() -> None:
    class Keeper:
        def __init__(self) -> None:
            self.run: weakref.ref[Run] | None = None
            self.records: weakref.ref[Any] | None = None
            self.execution: weakref.ref[Execution] | None = None

        @hookimpl
        def laminar_execution_finished(self, run: Run) -> None:
            self.run, self.records = weakref.ref(run), weakref.ref(run.records)
            self.execution = weakref.ref(run.execution)

    three()()  # the process's kept threads and the plugins' state are made
    gc.collect()
    gc.disable()
    try:
        flow = three()
        keeper = Keeper()
        flow.configuration.plugins.register(keeper)
        execution = flow()
        assert execution.layer("Last").carried == [1, 2, 3]
        assert keeper.run is not None and keeper.records is not None and keeper.execution is not None
        del flow, execution
        assert keeper.run() is None
        assert keeper.records() is None
        assert keeper.execution() is None
    finally:
        gc.enable()


# ---- the lease's heartbeat ---------------------------------------------------------------------------
def test_runs_one_after_another_wake_the_heartbeat_s_thread_once(monkeypatch: pytest.MonkeyPatch) -> None:
    three()()  # the thread timing the heartbeats is started
    beats = lease._beats()
    woken: list[int] = []
    notify = beats.changed.notify

    def counted(n: int = 1) -> None:
        woken.append(n)
        notify(n)

    monkeypatch.setattr(beats.changed, "notify", counted)
    for _ in range(5):
        three()()
    assert len(woken) <= 1  # (one: its thread had nothing to time, and waited an hour)


# ---- what a run does per layer, and no more ---------------------------------------------------------
def test_an_unset_variable_is_read_without_os_environ_s_key_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from laminar._transport.datastore import environment_value

    monkeypatch.delenv("LAMINAR_QUICK_TEST", raising=False)
    looked_up: list[str] = []
    through = type(os.environ).__getitem__

    def counted(self: Any, key: str) -> Any:
        looked_up.append(key)
        return through(self, key)

    monkeypatch.setattr(type(os.environ), "__getitem__", counted)
    assert environment_value("LAMINAR_QUICK_TEST") is None
    assert looked_up == []
    monkeypatch.setenv("LAMINAR_QUICK_TEST", "10M")
    assert environment_value("LAMINAR_QUICK_TEST") == "10M" == os.environ.get("LAMINAR_QUICK_TEST")
    monkeypatch.delenv("LAMINAR_QUICK_TEST")
    assert environment_value("LAMINAR_QUICK_TEST") is None


def test_a_run_s_objects_are_gone_before_the_collector_it_held_back_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from laminar._runtime import scheduler

    class Keeper:
        run: weakref.ref[Run] | None = None

        @hookimpl
        def laminar_execution_started(self, run: Run) -> None:
            self.run = weakref.ref(run)

    keeper = Keeper()
    alive_at_the_end: list[bool] = []
    held = scheduler._fewer_collections

    @contextlib.contextmanager
    def watched() -> Iterator[None]:
        with held():
            yield
            alive_at_the_end.append(keeper.run is not None and keeper.run() is not None)

    monkeypatch.setattr(scheduler, "_fewer_collections", watched)
    gc.disable()
    try:
        flow = three()
        flow.configuration.plugins.register(keeper)
        flow()
    finally:
        gc.enable()
    assert alive_at_the_end == [False]


def test_a_layer_without_reuse_hooks_or_context_managers_sets_none_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from laminar._plugins.manager import disabled
    from laminar._runtime import scheduler, split

    made: list[str] = []

    def in_split() -> bool:
        return sys._getframe(2).f_globals.get("__name__") == split.__name__

    class Stack(contextlib.ExitStack):
        def __init__(self) -> None:
            if in_split():
                made.append("stack")
            super().__init__()

    nullcontext = contextlib.nullcontext

    def nothing(*args: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__") == split.__name__:
            made.append("nullcontext")
        return nullcontext(*args)

    reuse_early = scheduler._Runner._reuse_early

    async def checked_for_reuse(self: Any, name: str) -> Any:
        made.append("reuse check")
        return await reuse_early(self, name)

    runners: list[Any] = []
    main = scheduler._Runner.main

    async def kept(self: Any) -> None:
        runners.append(self)
        await main(self)

    monkeypatch.setattr(split.contextlib, "ExitStack", Stack)
    monkeypatch.setattr(split.contextlib, "nullcontext", nothing)
    monkeypatch.setattr(scheduler._Runner, "_reuse_early", checked_for_reuse)
    monkeypatch.setattr(scheduler._Runner, "main", kept)
    with disabled("laminar.logs"):  # no plugin gives a split a context manager
        assert three()().layer("Last").carried == [1, 2, 3]
    assert made == []
    assert runners[0].checked == {}  # no future per layer for reuse checks nobody awaits
    three()(reuse=True)
    assert "reuse check" in made and len(runners[1].checked) == 4


def test_a_pluggy_that_keeps_its_hooks_otherwise_calls_every_hook_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from laminar._plugins import calls

    log: list[str] = []
    manager = _manager(log)
    expected = manager.hook.event(a=2, b=5)
    monkeypatch.setattr(calls, "_CALLER", (*calls._CALLER, "_a_member_this_pluggy_lacks"))
    relay = QuickRelay(manager)
    assert relay.event is manager.hook.event  # pluggy's own caller, not a quick one
    assert relay.event(a=2, b=5) == expected
