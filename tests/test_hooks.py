"""Layer hooks and flow hooks: ``entry`` hooks decide whether a layer runs (and skips propagate),
``submission`` hooks run in the scheduler before each split and may change that split's
configuration, ``execution`` hooks wrap ``__call__`` where the layer runs, ``retry`` hooks run in
the scheduler before each retry; hooks declared on a flow class apply to every layer. Changes hooks
make to a configuration never reach the registered definition.

Every flow test runs on the Thread and on the Process executor. Which hooks ran, where and in what
order is logged to a file below ``tmp_path``, whose path reaches the layers as a flow parameter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, append, lines
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import Container, ForEach, Parameter, Retry
from laminar.errors import FlowDefinitionError
from laminar.types import unwrap

# ---- submission and execution hooks, a flow's hooks -------------------------------------------------


class Hooked(Flow):
    @hooks.execution
    def flow_wraps(self, parameters: Parameters) -> Any:  # a flow hook: applies to every layer
        append(parameters.log, f"{self.name} flow-execution before {self.index}")
        yield
        append(parameters.log, f"{self.name} flow-execution after {self.index}")


@Hooked.register
class Config(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(memory=[2000, 3000, 4000])


@Hooked.register(
    foreach=ForEach(parameters=[Parameter(layer=Config, attribute="memory")]),
    container=Container(cpu=2, memory=1000, image="python:3.12", command="python flow.py", workdir="/w"),
)
class Work(Layer):
    @hooks.submission
    def size(self, config: Config, parameters: Parameters) -> None:
        # In the scheduler, a dependency's sharded attribute reads as the whole Accessor.
        self.configuration.container.memory = config.memory[unwrap(self.index)]
        append(parameters.log, f"Work submission size {self.index}")

    @hooks.submission
    def around_submission(self, parameters: Parameters) -> Any:
        append(parameters.log, f"Work submission before {self.index}")
        yield
        append(parameters.log, f"Work submission after {self.index}")

    @hooks.execution
    def first(self, parameters: Parameters) -> None:
        append(parameters.log, f"Work execution first {self.index}")

    @hooks.execution
    def second(self, parameters: Parameters) -> Any:
        append(parameters.log, f"Work execution second before {self.index}")
        yield
        append(parameters.log, f"Work execution second after {self.index}")

    def __call__(self, config: Config, parameters: Parameters) -> None:
        append(parameters.log, f"Work call {self.index}")
        container = self.configuration.container
        self.container = (
            container.cpu,
            container.memory,
            container.image,
            container.command,
            container.workdir,
        )
        self.memory = config.memory  # the one item of this split
        self.pid = os.getpid()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_hooks_in_definition_order_and_submission_changes_apply_to_one_split(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    log = tmp_path / "log"
    flow = Hooked(datastore=datastores.Local(tmp_path / "store"), executor=executor(concurrency=1))
    execution = flow(log=str(log))
    work = execution.layer(Work)
    assert list(work.container) == [(2, m, "python:3.12", "python flow.py", "/w") for m in (2000, 3000, 4000)]
    assert list(work.memory) == [2000, 3000, 4000]
    assert Hooked.registry["Work"].configuration.container.memory == 1000  # the definition is untouched

    def split(i: int) -> list[str]:
        return [
            f"Work submission size {i}",  # submission hooks: in the scheduler, in definition order
            f"Work submission before {i}",
            f"Work flow-execution before {i}",  # where the split runs: the flow's hooks first
            f"Work execution first {i}",
            f"Work execution second before {i}",
            f"Work call {i}",
            f"Work execution second after {i}",  # code after `yield` runs after, in reverse order
            f"Work flow-execution after {i}",
            f"Work submission after {i}",
        ]

    assert lines(log) == [
        "Config flow-execution before None",
        "Config flow-execution after None",
        *split(0),
        *split(1),
        *split(2),
    ]
    if executor is executors.Process:
        assert os.getpid() not in set(work.pid)  # execution hooks and the call run in a worker


# ---- entry hooks ----------------------------------------------------------------------------------


class Conditional(Flow): ...


@Conditional.register
class Gate(Layer):
    @hooks.entry
    def enabled(self, parameters: Parameters) -> Any:
        append(parameters.log, "Gate entry")
        return parameters.gate  # truthy runs the layer, falsy skips it

    def __call__(self) -> None:
        self.opened = True


@Conditional.register
class AfterGate(Layer):  # no entry hook: skipped when a dependency was skipped
    def __call__(self, gate: Gate) -> None:
        self.opened = gate.opened


@Conditional.register
class Fallback(Layer):
    @hooks.entry
    def when_skipped(self, after: AfterGate) -> bool:  # takes a layer: it becomes a dependency
        return not after.state.finished

    def __call__(self) -> None:
        self.used = True


@Conditional.register
class Always(Layer):
    @hooks.entry
    def first(self, parameters: Parameters) -> bool:
        append(parameters.log, "Always first")
        return True

    @hooks.entry
    def second(self, parameters: Parameters) -> str:
        append(parameters.log, "Always second")
        return "yes"

    def __call__(self, fallback: Fallback, after: AfterGate) -> None:  # runs even though AfterGate skipped
        self.states = (fallback.state.finished, after.state.finished)


@Conditional.register
class Never(Layer):
    @hooks.entry
    def no(self, parameters: Parameters) -> int:
        append(parameters.log, "Never no")
        return 0

    @hooks.entry
    def not_reached(self, parameters: Parameters) -> bool:  # entry hooks stop at the first falsy one
        append(parameters.log, "Never not_reached")
        return True

    def __call__(self) -> None:
        self.ran = True


@Conditional.register
class AfterNever(Layer):
    def __call__(self, never: Never, always: Always) -> None:
        self.ran = True


@pytest.mark.parametrize("executor", EXECUTORS)
def test_entry_hooks_skip_and_skips_propagate(tmp_path: Path, executor: type[executors.Executor]) -> None:
    log = tmp_path / "log"
    flow = Conditional(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    closed = flow(execution="closed", gate=False, log=str(log))
    assert flow.plan.dependencies["Fallback"] == frozenset({"AfterGate"})
    finished = {name: closed.layer(name).state.finished for name in flow.layer_names()}
    assert finished == {
        "Parameters": True,
        "Gate": False,
        "AfterGate": False,
        "Fallback": True,
        "Always": True,
        "Never": False,
        "AfterNever": False,
    }
    assert closed.layer(Always).states == (True, False)
    with pytest.raises(AttributeError, match="has not finished"):
        closed.layer(Gate).opened  # noqa: B018
    assert lines(log).count("Never not_reached") == 0
    assert lines(log).index("Always first") < lines(log).index("Always second")

    opened = flow(execution="opened", gate="yes", log=str(log))
    assert opened.layer(AfterGate).opened is True
    assert not opened.layer(Fallback).state.finished
    assert opened.layer(Always).states == (False, True)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_entry_hook_sees_its_own_state(tmp_path: Path, executor: type[executors.Executor]) -> None:
    class Own(Flow): ...

    seen: list[bool] = []

    @Own.register
    class Check(Layer):
        @hooks.entry
        def look(self) -> bool:
            seen.append(self.state.finished)
            return True

        def __call__(self) -> None:
            self.ok = True

    execution = Own(datastore=datastores.Local(tmp_path), executor=executor())()
    assert seen == [False]  # entry hooks run in the scheduler, whatever the executor
    assert execution.layer(Check).state.finished


def test_entry_hook_cannot_be_a_generator() -> None:
    with pytest.raises(
        FlowDefinitionError, match=r"entry hook .*is a generator; .*use `return`, not `yield`"
    ):

        class Bad(Layer):
            @hooks.entry
            def maybe(self) -> Any:
                yield True


@pytest.mark.parametrize("executor", EXECUTORS)
def test_flow_class_entry_hook_applies_to_every_layer(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Selective(Flow):
        @hooks.entry
        def only_listed(self, parameters: Parameters) -> bool:
            return self.name in parameters.run

    @Selective.register
    class One(Layer):
        def __call__(self) -> None:
            self.ok = True

    @Selective.register
    class Two(Layer):
        def __call__(self) -> None:
            self.ok = True

    @Selective.register
    class Three(Layer):
        def __call__(self, two: Two) -> None:
            self.ok = True

    execution = Selective(datastore=datastores.Local(tmp_path), executor=executor())(run=["One", "Three"])
    finished = [execution.layer(name).state.finished for name in ("One", "Two", "Three")]
    # Three has an entry hook (the flow's), so the hook decides even though Two was skipped.
    assert finished == [True, False, True]


def test_a_flow_hook_taking_a_layer_skips_that_layer_and_its_ancestors(tmp_path: Path) -> None:
    class Configured(Flow):
        @hooks.execution
        def announce(self, settings: Settings) -> None:
            self.prefix = settings.prefix

    @Configured.register
    class Base(Layer):
        def __call__(self) -> None:
            self.ready = True

    @Configured.register
    class Settings(Layer):
        def __call__(self, base: Base) -> None:
            self.prefix = ">"

    @Configured.register
    class Work(Layer):
        def __call__(self) -> None:
            self.out = self.prefix + "work"

    flow = Configured(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow.plan.dependencies["Work"] == {"Settings"}
    assert [h.function.__name__ for h in flow.plan.layer_hooks[("Settings", "execution")]] == []
    assert [h.function.__name__ for h in flow.plan.layer_hooks[("Base", "execution")]] == []
    assert flow().layer(Work).out == ">work"


# ---- retry hooks -------------------------------------------------------------------------------------


class Retrying(Flow): ...


@Retrying.register(retry=Retry(attempts=3, delay=0.01, backoff=2, jitter=0.1))
class Flaky(Layer):
    @hooks.retry
    def plain(self, parameters: Parameters) -> None:
        append(parameters.log, f"retry plain {self.attempt}")

    @hooks.retry
    def note_retry(self, parameters: Parameters) -> Any:
        append(parameters.log, f"retry hook before attempt {self.attempt} pid {os.getpid()}")
        yield
        append(parameters.log, f"retry hook after attempt {self.attempt}")

    def __call__(self, parameters: Parameters) -> None:
        append(parameters.log, f"call attempt {self.attempt}")
        if self.attempt < parameters.failures:
            raise RuntimeError(f"flaky on attempt {self.attempt}")
        self.attempt_seen = self.attempt


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retry_hooks_run_in_the_scheduler_in_definition_order_around_the_back_off(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    log = tmp_path / "log"
    flow = Retrying(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    execution = flow(execution="twice", failures=2, log=str(log))
    assert execution.layer(Flaky).attempt_seen == 2
    pid = os.getpid()
    assert lines(log) == [
        "call attempt 0",
        "retry plain 1",  # retry hooks run in the scheduler, in definition order, before the back-off
        f"retry hook before attempt 1 pid {pid}",
        "retry hook after attempt 1",  # after the back-off, before the attempt
        "call attempt 1",
        "retry plain 2",
        f"retry hook before attempt 2 pid {pid}",
        "retry hook after attempt 2",
        "call attempt 2",
    ]


# ---- configuration changes ----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_configuration_changes_never_reach_the_registry(tmp_path: Path, executor: Any) -> None:
    class Leak(Flow): ...

    @Leak.register(container=Container(memory=100))
    class Changes(Layer):
        def __call__(self) -> None:
            self.configuration.container.memory *= 2
            self.seen = self.configuration.container.memory

        @hooks.entry
        def decide(self) -> bool:
            self.configuration.container.memory += 1
            return True

    flow = Leak(datastore=datastores.Local(tmp_path), executor=executor())
    assert [flow().layer(Changes).seen for _ in range(2)] == [200, 200]
    assert Leak.registry["Changes"].configuration.container.memory == 100
