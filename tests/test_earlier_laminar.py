"""Flows written for the earlier laminar run unchanged: each test is written as its documentation
shows the feature (see docs/coming-from-earlier-laminar.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks, serde
from laminar.configurations.layers import Retry
from laminar.errors import (
    ConfigurationError,
    DatastoreError,
    ExecutorContractError,
    FlowDefinitionError,
    InvalidName,
    PluginNotFound,
    SerializationError,
    WorkerLost,
)
from laminar.exceptions import ExecutionError, FlowError, LayerError, SchedulerError
from laminar.types import unwrap


# ---- a layer without __call__ is a no-op --------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_layer_with_no_body_runs(tmp_path: Path, executor: Any) -> None:
    class Empty(Flow): ...

    @Empty.register
    class A(Layer): ...

    @Empty.register
    class B(Layer):
        @hooks.execution
        def mark(self) -> None:
            self.marked = True  # a layer with only a hook

    @Empty.register
    class C(Layer):
        def __call__(self, a: A, b: B) -> None:
            self.seen = (a.state.finished, b.marked)

    execution = Empty(datastore=datastores.Local(tmp_path), executor=executor())()
    assert execution.layer(A).state.finished
    assert execution.layer(C).seen == (True, True)


# ---- laminar.exceptions ---------------------------------------------------------------------------
def test_except_flow_error_catches_a_duplicate_layer() -> None:
    class Duplicated(Flow): ...

    @Duplicated.register
    class A(Layer): ...

    try:

        @Duplicated.register
        class A(Layer): ...  # type: ignore[no-redef]

    except FlowError as error:
        assert "already has a layer named 'A'" in str(error)
    else:
        pytest.fail("registering a second layer named A did not raise FlowError")


def test_except_flow_error_catches_a_bad_configuration() -> None:
    with pytest.raises(FlowError, match=r"Retry\(attempts=...\) must be at least 1"):
        Retry(attempts=0)
    with pytest.raises(FlowError, match="no installed plugin provides the datastore scheme 'nope'"):
        datastore_url = "nope://x"

        class Configured(Flow): ...

        Configured(datastore=datastore_url)


def test_todays_errors_are_the_earlier_classes() -> None:
    assert issubclass(FlowDefinitionError, FlowError) and issubclass(FlowDefinitionError, TypeError)
    assert all(issubclass(kind, FlowError) for kind in (ConfigurationError, InvalidName, PluginNotFound))
    assert issubclass(DatastoreError, ExecutionError) and issubclass(DatastoreError, OSError)
    assert issubclass(SerializationError, LayerError) and issubclass(WorkerLost, LayerError)
    assert issubclass(ExecutorContractError, SchedulerError)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_except_layer_error_catches_an_unserializable_artifact(tmp_path: Path, executor: Any) -> None:
    class Unpicklable(Flow): ...

    @Unpicklable.register
    class A(Layer):
        def __call__(self) -> None:
            import threading

            self.lock = threading.Lock()

    with pytest.raises(LayerError, match="artifact 'lock' of layer A cannot be serialized"):
        Unpicklable(datastore=datastores.Local(tmp_path), executor=executor())()


# ---- serde.Protocol.read(uri) / write(value, uri) ------------------------------------------------
def test_a_protocol_taking_a_uri_stores_where_it_says(tmp_path: Path) -> None:
    datastore = datastores.Local(tmp_path / "store")
    written: list[str] = []

    @datastore.protocol(dict)
    class JsonFile(serde.Protocol[dict[str, Any]]):
        def read(self, uri: str) -> dict[str, Any]:
            with open(uri) as file:
                return json.load(file)  # type: ignore[no-any-return]

        def write(self, value: dict[str, Any], uri: str) -> None:
            written.append(uri)
            with open(uri, "w") as file:
                json.dump(value, file)

    class Beyond(Flow): ...

    @Beyond.register
    class A(Layer):
        def __call__(self) -> None:
            self.table = {"rows": list(range(400))}  # larger than an inline value

    execution = Beyond(datastore=datastore, executor=executors.Thread())()
    assert written, "the protocol's write(value, uri) was not called"
    stored = [path for path in (tmp_path / "store" / "artifacts").rglob("*") if path.is_file()]
    assert [json.loads(path.read_text()) for path in stored] == [{"rows": list(range(400))}]  # plain JSON
    again = Beyond(datastore=datastore, executor=executors.Thread())  # a new flow object, same registrations
    assert again.execution(execution.id).layer(A).table == {"rows": list(range(400))}  # read(uri) back


def test_a_protocol_taking_a_uri_for_writing_only_reads_with_load(tmp_path: Path) -> None:
    datastore = datastores.Local(tmp_path)

    @datastore.protocol(list)
    class Lines(serde.Protocol[list[str]]):
        def write(self, value: list[str], uri: str) -> None:
            Path(uri).write_text("\n".join(value))

        def loads(self, data: bytes) -> list[str]:
            return data.decode().split("\n")

    class Written(Flow): ...

    @Written.register
    class A(Layer):
        def __call__(self) -> None:
            self.lines = ["a", "b"]

    execution = Written(datastore=datastore, executor=executors.Thread())()
    assert execution.layer(A).lines == ["a", "b"]


def test_a_protocol_keeping_values_in_a_dict_keyed_by_uri_reads_them_back(tmp_path: Path) -> None:
    # The earlier docs' "Beyond the Datastore" example (with the `self` its methods lacked): write keeps
    # the value in a dict under the uri it is handed, read looks it up by the uri it is handed.
    cache: dict[str, list[Any]] = {}
    read: list[str] = []
    datastore = datastores.Local(tmp_path)

    class SerdeFlow(Flow): ...

    @datastore.protocol(list)
    class ListProtocol(serde.Protocol):  # type: ignore[type-arg]
        def read(self, uri: str) -> list[Any]:
            read.append(uri)
            return cache[uri]

        def write(self, value: list[Any], uri: str) -> None:
            cache[uri] = value

    @SerdeFlow.register
    class A(Layer):
        def __call__(self) -> None:
            self.first = [1, 2]
            self.second = ["three"]
            self.shard(items=[[4], [5, 6]])

    flow = SerdeFlow(datastore=datastore, executor=executors.Thread())
    execution = flow()
    layer = execution.layer(A)
    assert (layer.first, layer.second, list(layer.items)) == ([1, 2], ["three"], [[4], [5, 6]])
    assert sorted(read) == sorted(cache) and len(cache) == 4  # handed back the very uris it wrote to
    assert not any(Path(uri).exists() for uri in cache)  # Laminar kept the uris, the protocol the values
    again = SerdeFlow(datastore=datastore, executor=executors.Thread()).execution(execution.id)
    assert again.layer(A).second == ["three"]  # a new flow object reads them too


# ---- FlowError: the errors the earlier laminar raised as FlowError -----------------------------------
def test_a_duplicate_layer_through_composition_is_a_flow_error() -> None:
    class Flow1(Flow): ...

    class Flow2(Flow): ...

    @Flow1.register
    class A(Layer): ...

    @Flow2.register
    class A(Layer): ...  # type: ignore[no-redef]  # noqa: F811

    with pytest.raises(FlowError, match="Duplicate layer added"):

        class Combined(Flow1, Flow2): ...


def test_the_earlier_flow_errors_are_flow_errors(tmp_path: Path) -> None:
    class Flow1(Flow): ...

    @Flow1.register
    class A(Layer): ...

    with pytest.raises(FlowError, match="Duplicate layer added") as duplicate:

        @Flow1.register
        class A(Layer): ...  # type: ignore[no-redef]

    class Flow2(Flow): ...

    @Flow2.register(retry=Retry(attempts=2))
    class B(Layer): ...

    @Flow1.register
    class B(Layer): ...  # type: ignore[no-redef]  # noqa: F811

    with pytest.raises(FlowError, match="Duplicate layer added") as composed:

        class Combined(Flow1, Flow2): ...

    with pytest.raises(FlowError, match="the Memory datastore lives in the scheduler's process") as memory:
        Flow1(datastore=datastores.Memory(), executor=executors.Process())
    assert not list(tmp_path.iterdir())
    errors = [duplicate.value, composed.value, memory.value]
    assert [type(error).__name__ for error in errors] == [
        "FlowDefinitionError",
        "FlowDefinitionError",
        "ConfigurationError",
    ]


def test_serde_dtype_names_the_protocol_base_as_the_earlier_laminar_did() -> None:
    assert serde.dtype(serde.Protocol) == "laminar.configurations.serde.Protocol"


# ---- a layer equals its name -----------------------------------------------------------------------
def test_a_layer_equals_its_name(tmp_path: Path) -> None:
    class Named(Flow): ...

    @Named.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = 1

    flow = Named(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow()
    assert execution.layer(A) == "A"
    assert execution.layer(A) != "B"
    assert execution.layer(A) == execution.layer("A")
    assert "A" in flow.configuration.datastore.list_layers(execution=execution)
    assert "A" in {execution.layer(A)}
    assert sorted([execution.layer(A), execution.layer(Parameters)]) == ["A", "Parameters"]


# ---- unwrap(value, default) --------------------------------------------------------------------------
def test_unwrap_returns_the_default_for_none() -> None:
    assert unwrap("a") == "a"
    assert unwrap(None, "a") == "a"
    assert unwrap(0, 5) == 0  # only None is replaced
    with pytest.raises(ValueError, match="unwrap"):
        unwrap(None)


# ---- list_layers: the layers that stored artifacts, by name ----------------------------------------------
def test_list_layers_returns_the_layers_that_stored_artifacts_by_name(tmp_path: Path) -> None:
    class Listed(Flow): ...

    @Listed.register
    class Zeta(Layer):
        def __call__(self) -> None:
            self.z = 1

    @Listed.register
    class Quiet(Layer):
        def __call__(self, zeta: Zeta) -> None:
            pass  # stores nothing

    @Listed.register
    class Alpha(Layer):
        def __call__(self, zeta: Zeta) -> None:
            self.a = 2

    flow = Listed(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    datastore = flow.configuration.datastore
    assert datastore.list_layers(execution=flow()) == ["Alpha", "Zeta"]  # no parameters, nothing stored
    with_parameters = flow(foo=1)
    assert [layer.name for layer in datastore.list_layers(execution=with_parameters)] == [
        "Alpha",
        "Parameters",
        "Zeta",
    ]


# ---- serde.dtype, serde.PickleProtocol, datastores.DataStore ------------------------------------------
def test_earlier_names_of_serde_and_datastores(tmp_path: Path) -> None:
    assert serde.dtype(int) == "builtins.int"
    assert serde.dtype(datastores.Local) == "laminar._transport.local.Local"
    assert serde.PickleProtocol is serde.Pickle
    assert datastores.DataStore is datastores.Datastore
    assert isinstance(datastores.Local(tmp_path), datastores.DataStore)

    datastore = datastores.Local(tmp_path)

    @datastore.protocol(tuple)
    class Tuples(serde.PickleProtocol): ...

    class Pickled(Flow): ...

    @Pickled.register
    class A(Layer):
        def __call__(self) -> None:
            self.pair = (1, 2)

    assert Pickled(datastore=datastore, executor=executors.Thread())().layer(A).pair == (1, 2)
