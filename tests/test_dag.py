"""Declaring a flow: registering layers, the registry, dependencies from annotations, and the
definitions that are refused (cycles, unregistered or non-layer dependencies, duplicate names,
wrong configuration values) before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, Diamond, Join, files
from laminar import Execution, Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, Container, ForEach, Parameter, Retry
from laminar.errors import ConfigurationError, FlowDefinitionError

# ---- registering ---------------------------------------------------------------------------------


def test_register_forms_registry_and_several_flows() -> None:
    class One(Flow): ...

    class Two(Flow): ...

    @One.register
    @Two.register(container=None)
    class A(Layer):
        def __call__(self) -> None:
            self.foo = 1

    @One.register(retry=None)
    class B(Layer):
        def __call__(self, a: A) -> None:
            self.bar = a.foo

    assert set(One.registry) == {"Parameters", "A", "B"}
    assert set(Two.registry) == {"Parameters", "A"}
    assert One.registry["A"].layer is A and One.registry["B"].configuration.retry.attempts == 1
    assert "A" not in Flow.registry  # registering on a subclass never touches the base


def test_duplicate_layer_names_are_an_error_naming_both() -> None:
    class Dup(Flow): ...

    @Dup.register
    class A(Layer): ...

    first = A

    class A(Layer):  # type: ignore[no-redef]
        ...

    with pytest.raises(FlowDefinitionError) as error:
        Dup.register(A)
    assert f"{first.__module__}.{first.__qualname__}" in str(error.value)
    assert "already has a layer named 'A'" in str(error.value)
    assert Dup.registry["A"].layer is first


def test_register_refuses_a_wrong_configuration_type() -> None:
    class Wrong(Flow): ...

    with pytest.raises(ConfigurationError, match=r"register\(retry=...\) takes a Retry, got 3"):

        @Wrong.register(retry=3)  # type: ignore[arg-type]
        class A(Layer): ...


# ---- dependencies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("cycle", "has a cycle: A -> B -> A"),
        ("unregistered", "depends on layer Stranger, which is not registered to flow"),
        ("not-a-layer", "annotated with 'int', which is not a Layer"),
        ("no-annotation", "has no annotation"),
    ],
)
def test_bad_dags_fail_before_anything_is_written(tmp_path: Path, shape: str, message: str) -> None:
    class Bad(Flow): ...

    class Stranger(Layer):
        def __call__(self) -> None: ...

    if shape == "cycle":

        @Bad.register
        class A(Layer):
            def __call__(self, b: B) -> None: ...

        @Bad.register
        class B(Layer):
            def __call__(self, a: A) -> None: ...

    elif shape == "unregistered":

        @Bad.register
        class C(Layer):
            def __call__(self, stranger: Stranger) -> None: ...

    elif shape == "not-a-layer":

        @Bad.register
        class D(Layer):
            def __call__(self, number: int) -> None: ...

    else:

        @Bad.register
        class E(Layer):
            def __call__(self, thing) -> None:  # type: ignore[no-untyped-def]
                ...

    flow = Bad(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(FlowDefinitionError, match=message.replace("(", r"\(")):
        flow()
    assert files(tmp_path) == []


def test_string_annotations_resolve_against_the_flow(tmp_path: Path) -> None:
    class Strings(Flow): ...

    @Strings.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = "x"

    @Strings.register
    class B(Layer):
        def __call__(self, a: A) -> None:
            self.foo = a.foo * 2

    B.__call__.__annotations__["a"] = "A"  # as `from __future__ import annotations` leaves it
    execution = Strings(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert execution.layer(B).foo == "xx"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_flow_runs_and_reads_back(tmp_path: Path, executor: type[executors.Executor]) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executor(concurrency=2))
    execution = flow(seed=4)
    assert isinstance(execution, Execution)
    assert execution.layer(Join).value == 5 + 40
    assert execution.layer("Left").value == 5
    assert execution.layer(Parameters).seed == 4
    assert all(execution.layer(name).state.finished for name in ("Start", "Left", "Right", "Join"))


# ---- parameters and configuration values -----------------------------------------------------------


def test_parameters_named_like_layer_attributes_are_refused(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(ConfigurationError, match=r"parameter names 'name' are reserved on layers"):
        flow(name="ada", seed=1)
    # the same run started from its execution (or `laminar run`, `next`): refused, nothing stored
    with pytest.raises(ConfigurationError, match=r"parameter names 'index', 'name' are reserved on layers"):
        flow.execution("named").run(parameters={"name": "ada", "index": 2, "seed": 1})
    assert files(tmp_path) == []


@pytest.mark.parametrize("executor", EXECUTORS)
def test_container_defaults_and_configuration_readable_in_the_layer(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    class Sized(Flow): ...

    @Sized.register
    class Default(Layer):
        def __call__(self) -> None:
            container = self.configuration.container
            self.container = (
                container.cpu,
                container.memory,
                container.image,
                container.command,
                container.workdir,
            )

    execution = Sized(datastore=datastores.Local(tmp_path), executor=executor())()
    assert execution.layer(Default).container == (1, 1500, "python:3.11", "python main.py", "/laminar")
    assert Sized.registry["Default"].configuration.container == Container()


class Items(Layer):
    """Named in the messages below: a Parameter's attribute must be an artifact name of its layer."""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Retry(attempts=0), "Retry(attempts=...) must be at least 1 (the first try), got 0"),
        (lambda: Retry(attempts=-2), "Retry(attempts=...) must be at least 1 (the first try), got -2"),
        (lambda: Retry(attempts=3, delay=-0.1), "Retry(delay=...) must be a number >= 0, got -0.1"),
        (lambda: Retry(backoff=-1), "Retry(backoff=...) must be a number >= 0, got -1"),
        (lambda: Retry(jitter=-1), "Retry(jitter=...) must be a number >= 0, got -1"),
        (
            lambda: Catch("not an exception"),
            "Catch() takes exception classes such as Catch(TypeError), got 'not an exception'",
        ),
        (
            lambda: Catch(ValueError, int),
            "Catch() takes exception classes such as Catch(TypeError), got <class 'int'>",
        ),
        (lambda: ForEach(parameters=[]), "ForEach(parameters=[...]) needs at least one Parameter"),
        (
            lambda: Parameter(layer=int, attribute="x"),
            "Parameter(layer=...) must be a Layer class, got <class 'int'>",
        ),  # type: ignore[arg-type]
        (
            lambda: Parameter(layer=Items, attribute="not valid"),
            "Parameter(attribute=...) must name an artifact of Items",
        ),
        (
            lambda: Parameter(layer=Items, attribute="x", index=-1),
            "Parameter(index=...) must be None or a split number >= 0",
        ),
    ],
)
def test_bad_configuration_values_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        make()
    assert message in str(error.value)
