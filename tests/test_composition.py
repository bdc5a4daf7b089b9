"""Composing flows: ``Execution.next`` runs another flow with the same execution id and parameters
its linker derives; a flow that subclasses several flows merges their layers and hooks, and refuses
two different layers (or one layer registered differently) under one name."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EXECUTORS
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import Retry
from laminar.errors import ConfigurationError, FlowDefinitionError


def executions_in(root: Path) -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.name}" for p in root.glob("flows/*/executions/*"))


class Flow1(Flow): ...


@Flow1.register
class A(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.foo = parameters.start + 1


class Flow2(Flow): ...


@Flow2.register
class B(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.bar = parameters.foo * 10


class Flow3(Flow): ...


@Flow3.register
class C(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.baz = f"{parameters.bar}!"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_next_runs_the_next_flow_with_the_same_id_and_linked_parameters(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    def make(kind: type[Flow]) -> Flow:
        return kind(datastore=datastores.Local(tmp_path), executor=executor())

    first = make(Flow1)(execution="chain", start=1)
    second = first.next(flow=make(Flow2), linker=lambda e: Parameters(foo=e.layer(A).foo))
    third = second.next(flow=make(Flow3), linker=lambda e: Parameters(bar=e.layer(B).bar))  # calls chain
    assert (first.id, second.id, third.id) == ("chain", "chain", "chain")
    assert (second.flow.name, third.flow.name) == ("Flow2", "Flow3")
    assert second.layer(Parameters).foo == 2 and second.layer(B).bar == 20
    assert third.layer(C).baz == "20!"
    assert executions_in(tmp_path) == ["Flow1/chain", "Flow2/chain", "Flow3/chain"]
    assert repr(third) == 'Execution(flow=Flow3(), id="chain", retry=False)'


@pytest.mark.parametrize(
    ("linker", "shown"),
    [
        (lambda e: {"foo": 1}, "{'foo': 1}"),
        (lambda e: None, "None"),
        (lambda e: A(foo=1), "A("),
    ],
)
def test_a_linker_must_return_parameters(tmp_path: Path, linker: object, shown: str) -> None:
    first = Flow1(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x", start=1)
    second = Flow2(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(ConfigurationError) as error:
        first.next(flow=second, linker=linker)  # type: ignore[arg-type]
    message = str(error.value)
    assert message.startswith("the linker passed to next() must return Parameters(...), e.g. ")
    assert f"it returned {shown}" in message
    assert executions_in(tmp_path) == ["Flow1/x"]  # nothing of Flow2 was written


def test_a_linker_error_propagates_and_writes_nothing(tmp_path: Path) -> None:
    first = Flow1(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x", start=1)
    second = Flow2(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(AttributeError, match="has no artifact 'missing'"):
        first.next(flow=second, linker=lambda e: Parameters(foo=e.layer(A).missing))
    assert executions_in(tmp_path) == ["Flow1/x"]


class Combined(Flow1, Flow2):
    @hooks.entry
    def everything(self) -> bool:
        return True


@Combined.register
class Both(Layer):
    def __call__(self, a: A, b: B) -> None:
        self.total = a.foo + b.bar


@pytest.mark.parametrize("executor", EXECUTORS)
def test_flow_inheritance_merges_layers(tmp_path: Path, executor: type[executors.Executor]) -> None:
    assert list(Combined.registry) == ["Parameters", "A", "B", "Both"]
    assert Combined.registry["A"] is Flow1.registry["A"]  # the definition, configuration included
    assert "Both" not in Flow1.registry and "Both" not in Flow2.registry  # bases are untouched
    execution = Combined(datastore=datastores.Local(tmp_path), executor=executor())(start=1, foo=3)
    assert (execution.layer(A).foo, execution.layer(B).bar, execution.layer(Both).total) == (2, 30, 32)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_merging_the_same_layer_from_two_flows_is_fine(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Left(Flow): ...

    class Right(Flow): ...

    @Left.register
    @Right.register
    class Shared(Layer):
        def __call__(self) -> None:
            self.ok = True

    class Merged(Left, Right): ...

    assert list(Merged.registry) == ["Parameters", "Shared"]
    assert Merged(datastore=datastores.Local(tmp_path), executor=executor())().layer(Shared).ok


def test_merging_two_layers_of_one_name_is_an_error_naming_both() -> None:
    class Other(Flow): ...

    @Other.register
    class A(Layer):  # same name as Flow1's A, another class
        def __call__(self) -> None:
            self.foo = "other"

    with pytest.raises(FlowDefinitionError) as error:

        class Clash(Flow1, Other): ...

    message = str(error.value)
    assert "Clash merges two layers named 'A'" in message
    assert "test_composition.A from Flow1" in message
    assert (
        "test_composition.test_merging_two_layers_of_one_name_is_an_error_naming_both.<locals>.A from Other"
        in message
    )
    assert message.endswith("; rename one")


def test_registering_on_a_merged_flow_checks_duplicates_too() -> None:
    class Merged(Flow1, Flow2): ...

    class A(Layer): ...

    with pytest.raises(
        FlowDefinitionError, match=r"Merged already has a layer named 'A' \(test_composition\.A\)"
    ):
        Merged.register(A)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_hooks_of_base_flows_apply_to_the_merged_flow(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Gated(Flow):
        @hooks.entry
        def listed(self, parameters: Parameters) -> bool:
            return self.name in parameters.run

    @Gated.register
    class G(Layer):
        def __call__(self) -> None:
            self.ok = True

    class Plain(Flow): ...

    @Plain.register
    class P(Layer):
        def __call__(self) -> None:
            self.ok = True

    class Both(Gated, Plain): ...

    flow = Both(datastore=datastores.Local(tmp_path), executor=executor())
    execution = flow(run=["P"])
    assert [execution.layer(name).state.finished for name in ("G", "P")] == [False, True]
    assert Plain(datastore=datastores.Local(tmp_path), executor=executor())(run=[]).layer(P).ok


def test_merging_one_layer_registered_differently_is_an_error() -> None:
    class First(Flow): ...

    class Second(Flow): ...

    @First.register(retry=Retry(attempts=2))
    @Second.register(retry=Retry(attempts=3))
    class Shared(Layer):
        def __call__(self) -> None: ...

    with pytest.raises(FlowDefinitionError, match="registered with different configurations in First"):

        class Both(First, Second): ...
