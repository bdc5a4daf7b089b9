"""Issue 2: the model, storage, executors, plugins and results API on one machine."""

from __future__ import annotations

import base64
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, executions_in, files
from laminar import Execution, Flow, Layer, Parameters
from laminar._ids import new_execution_id
from laminar._serialization import hashing
from laminar._serialization.protocols import Pickle
from laminar._storage import artifacts, layout
from laminar.configurations import datastores, executors, serde
from laminar.errors import (
    ConfigurationError,
    FlowDefinitionError,
    InvalidName,
    PluginNotFound,
    SerializationError,
)

# ---- model: registration and the DAG -----------------------------------------------------------


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


# ---- running ------------------------------------------------------------------------------------


class Diamond(Flow): ...


@Diamond.register
class Start(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.seed
        self.pid = os.getpid()


@Diamond.register
class Left(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.value + 1
        self.pid = os.getpid()


@Diamond.register
class Right(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.value * 10
        self.pid = os.getpid()


@Diamond.register
class Join(Layer):
    def __call__(self, left: Left, right: Right) -> None:
        self.value = left.value + right.value
        self.pid = os.getpid()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_flow_runs_and_reads_back(tmp_path: Path, executor: type[executors.Executor]) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executor(concurrency=2))
    execution = flow(seed=4)
    assert isinstance(execution, Execution)
    assert execution.layer(Join).value == 5 + 40
    assert execution.layer("Left").value == 5
    assert execution.layer(Parameters).seed == 4
    assert all(execution.layer(name).state.finished for name in ("Start", "Left", "Right", "Join"))


def test_process_executor_runs_every_layer_outside_the_scheduler(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Process())(seed=1)
    pids = {name: execution.layer(name).pid for name in ("Start", "Left", "Right", "Join")}
    assert os.getpid() not in pids.values()


def test_thread_executor_runs_in_this_process(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())(seed=1)
    assert execution.layer(Join).pid == os.getpid()


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


def test_chosen_execution_id_and_unique_sorted_ids(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow(execution="my-run", seed=0).id == "my-run"
    ids = [new_execution_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids) and {len(i) for i in ids} == {27}


def test_running_an_existing_execution_id_again_is_refused(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow(execution="once", seed=1)
    before = files(tmp_path)
    with pytest.raises(FlowDefinitionError, match=r"already exists; resume it with"):
        flow(execution="once", seed=2)
    assert files(tmp_path) == before
    assert flow.execution("once").layer(Parameters).seed == 1


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
    assert {layer.name for layer in listed} == {"Good", "Parameters"}
    assert not any("Bad" in f for f in files(tmp_path))  # nothing half-written for the failed split


def test_process_executor_timeout_stops_the_split(tmp_path: Path) -> None:
    class Slow(Flow): ...

    @Slow.register
    class Sleeper(Layer):
        def __call__(self) -> None:
            import time

            time.sleep(60)

    flow = Slow(datastore=datastores.Local(tmp_path), executor=executors.Process(timeout=1))
    with pytest.raises(TimeoutError, match="ran longer than the executor's timeout of 1 s"):
        flow()


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


# ---- storage -----------------------------------------------------------------------------------


class Values(Flow): ...


@Values.register
class Store(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.first = parameters.value
        self.second = parameters.value  # the same value again: stored once
        self.text = "abc" * 100_000
        self.noise = os.urandom(getattr(type(self), "noise_size", 1 << 20))


def stored_archive(flow: Flow, execution: Any, layer: str, name: str, index: int = 0) -> Any:
    """The archive of ``name`` in split ``index`` of ``layer``, as stored."""
    from laminar._runtime.context import store_for

    archive = store_for(flow.execution(execution.id)).archive(layer, index, name)
    assert archive is not None
    return archive


def test_artifacts_are_content_addressed_and_record_their_codec(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value={"a": list(range(5000))})
    parsed = {
        name: stored_archive(flow, execution, "Store", name).artifacts[0]
        for name in ("first", "second", "text", "noise")
    }
    assert parsed["first"].hexdigest == parsed["second"].hexdigest
    # Parameters.value and Store.first/second are one stored artifact.
    stored = [f for f in files(tmp_path) if f.startswith("artifacts/")]
    assert stored.count(f"artifacts/{parsed['first'].hexdigest[:2]}/{parsed['first'].hexdigest}") == 1
    assert parsed["text"].codec == "zlib" and parsed["noise"].codec == "none"
    assert os.path.getsize(tmp_path / layout.artifact(parsed["text"].hexdigest)) < 300_000 // 10
    assert execution.layer(Store).text == "abc" * 100_000
    assert execution.layer(Store).first == {"a": list(range(5000))}


def test_small_values_are_kept_inside_their_archive(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value=[1, 2, 3])
    small = stored_archive(flow, execution, "Store", "first").artifacts[0]
    large = stored_archive(flow, execution, "Store", "noise").artifacts[0]
    assert small.inline is not None and len(small.inline) == small.size <= artifacts.INLINE_LIMIT
    assert small.hexdigest == hashing.hexdigest(small.inline)  # named by its content all the same
    assert not (tmp_path / layout.artifact(small.hexdigest)).exists()
    assert large.inline is None and (tmp_path / layout.artifact(large.hexdigest)).exists()
    assert flow.execution(execution.id).layer(Store).first == [1, 2, 3]


@pytest.mark.parametrize(
    "value", [0, -1, 2**70, 10**300, 3.5, float("inf"), True, None, 1j, "", "abc", "é" * 100, b"x" * 256]
)
def test_numbers_and_short_strings_take_a_shortcut_to_the_same_artifact(
    tmp_path: Path, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    datastore = datastores.Local(tmp_path)
    quick = artifacts.stage(value, datastore=datastore, protocol=Pickle())
    monkeypatch.setattr(artifacts, "_stage_scalar", lambda value, protocol: None)
    streamed = artifacts.stage(value, datastore=datastore, protocol=Pickle())
    assert quick.artifact == streamed.artifact and quick.artifact.inline is not None


def test_a_corrupt_inline_value_is_detected_on_read(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value="tiny")
    batches = [f for f in files(tmp_path) if "/layers/Store/splits/" in f]
    assert len(batches) == 1
    path = tmp_path / batches[0]
    payload = json.loads(path.read_text())
    inline = payload["splits"]["0"]["archives"]["first"]["artifacts"][0]
    inline["inline"] = base64.b64encode(pickle.dumps("tamp")).decode()
    path.write_text(json.dumps(payload))
    from laminar.errors import DatastoreError

    with pytest.raises(DatastoreError, match="is corrupt"):
        Values(datastore=datastores.Local(tmp_path)).execution(execution.id).layer(Store).first  # noqa: B018


@pytest.mark.parametrize("size", [1 << 20, 9 << 20], ids=["small", "streamed"])
def test_a_corrupt_artifact_is_detected_on_read(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "noise_size", size, raising=False)
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value=[1, 2, 3])

    artifact = stored_archive(flow, execution, "Store", "noise").artifacts[0]
    path = tmp_path / layout.artifact(artifact.hexdigest)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    from laminar.errors import DatastoreError

    with pytest.raises(DatastoreError, match="is corrupt"):
        flow.execution(execution.id).layer(Store).noise  # noqa: B018


def test_user_protocol_for_exact_types(tmp_path: Path) -> None:
    import json

    datastore = datastores.Local(tmp_path)

    @datastore.protocol(list, dict)
    class Json(serde.Protocol[Any]):
        def dumps(self, value: Any) -> bytes:
            return json.dumps(value).encode()

        def loads(self, data: bytes) -> Any:
            return json.loads(data)

    class Serde(Flow): ...

    class Sub(list):  # type: ignore[type-arg]
        pass

    @Serde.register
    class S(Layer):
        def __call__(self) -> None:
            self.listed = [1, 2]
            self.mapped = {"k": "v"}
            self.sub = Sub([3])  # a subclass is not an exact match: cloudpickle

    execution = Serde(datastore=datastore, executor=executors.Thread())()

    def artifact(name: str) -> Any:
        return stored_archive(execution.flow, execution, "S", name).artifacts[0]

    assert artifact("listed").protocol.endswith("Json") and artifact("mapped").protocol.endswith("Json")
    assert artifact("sub").protocol == "cloudpickle"
    assert artifact("listed").inline == b"[1, 2]"  # small enough to be kept in the archive
    layer = execution.layer(S)
    assert (layer.listed, layer.mapped, list(layer.sub)) == ([1, 2], {"k": "v"}, [3])


def test_unserializable_artifact_names_layer_and_attribute_and_writes_nothing(tmp_path: Path) -> None:
    class Unpicklable(Flow): ...

    @Unpicklable.register
    class U(Layer):
        def __call__(self) -> None:
            self.fine = "a value that alone would be stored"
            self.lock = threading.Lock()

    flow = Unpicklable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(SerializationError, match=r"artifact 'lock' of layer U cannot be serialized"):
        flow(execution="x")
    assert not [f for f in files(tmp_path) if "/U/" in f]
    assert not flow.execution("x").layer(U).state.finished
    with pytest.raises(AttributeError, match="has not finished"):
        flow.execution("x").layer(U).fine  # noqa: B018


def test_missing_artifact_says_whether_the_layer_finished(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())(seed=2)
    with pytest.raises(AttributeError, match=r"finished without assigning it \(it stored: pid, value\)"):
        execution.layer(Left).nope  # noqa: B018
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(AttributeError, match="has not finished"):
        flow.execution("never-ran").layer(Left).value  # noqa: B018


@pytest.mark.parametrize("bad", ["../x", "/abs", "a\x00b", "", ".hidden", "a/b", ".."])
def test_names_that_would_escape_the_datastore_are_refused(tmp_path: Path, bad: str) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with pytest.raises(InvalidName, match="cannot be used as a storage name"):
        flow(execution=bad, seed=1)
    with pytest.raises(InvalidName):
        flow.execution(bad)
    assert not (tmp_path / "store").exists() or files(tmp_path / "store") == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["store"])


def test_bad_artifact_name_is_refused(tmp_path: Path) -> None:
    class Names(Flow): ...

    @Names.register
    class N(Layer):
        def __call__(self) -> None:
            setattr(self, "bad/name", 1)

    with pytest.raises(InvalidName):
        Names(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert not [f for f in files(tmp_path) if "/N/" in f]


# ---- configuration and plugins ------------------------------------------------------------------


def test_unknown_datastore_scheme_lists_what_is_installed(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound) as error:
        Diamond(datastore="nosuch://bucket", executor="thread")
    message = str(error.value)
    assert "'nosuch'" in message and "file://" in message and "memory://" in message


def test_unknown_executor_lists_what_is_installed() -> None:
    with pytest.raises(PluginNotFound) as error:
        Diamond(datastore="memory://", executor="warp-drive")
    assert (
        "'warp-drive'" in str(error.value) and "thread" in str(error.value) and "process" in str(error.value)
    )


def test_malformed_datastore_url() -> None:
    with pytest.raises(ConfigurationError, match="has no scheme"):
        Diamond(datastore="just-a-path", executor="thread")


def test_memory_datastore_needs_the_thread_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"only an executor that runs layers in that process"):
        Diamond(datastore=datastores.Memory(), executor=executors.Process())
    assert list(tmp_path.iterdir()) == []
    execution = Diamond(datastore="memory://", executor="thread")(seed=3)
    assert execution.layer(Join).value == 4 + 30


def test_environment_selects_datastore_and_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMINAR_DATASTORE", (tmp_path / "env-store").as_uri())
    monkeypatch.setenv("LAMINAR_EXECUTOR", "thread")
    flow = Diamond()
    assert isinstance(flow.configuration.datastore, datastores.Local)
    assert flow.configuration.datastore.root == str(tmp_path / "env-store")
    assert isinstance(flow.configuration.executor, executors.Thread)
    flow(seed=1)
    assert executions_in(tmp_path / "env-store")


def test_default_datastore_is_dot_laminar_and_default_executor_is_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAMINAR_DATASTORE", raising=False)
    monkeypatch.delenv("LAMINAR_EXECUTOR", raising=False)
    flow = Diamond()
    assert isinstance(flow.configuration.executor, executors.Process)
    assert flow.configuration.datastore.root == str(tmp_path / ".laminar")  # type: ignore[attr-defined]


def test_builtins_register_through_the_plugin_hooks() -> None:
    from laminar._plugins.manager import datastore_classes, executor_classes, plugin_manager

    assert plugin_manager().get_plugin("laminar.builtin") is not None
    assert (
        datastore_classes()["file"] is datastores.Local and datastore_classes()["memory"] is datastores.Memory
    )
    assert (
        executor_classes()["thread"] is executors.Thread
        and executor_classes()["process"] is executors.Process
    )


# ---- results API -------------------------------------------------------------------------------


def test_results_api_listing_and_reprs(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(seed=1)
    second = flow(seed=2)
    datastore = flow.configuration.datastore
    assert datastore.list_executions(flow=flow) == [first, second]
    assert repr(first) == f'Execution(flow=Diamond(), id="{first.id}", retry=False)'
    layers = datastore.list_layers(execution=flow.execution(first.id))
    assert [layer.name for layer in layers] == flow.layer_names()
    assert repr(layers[0]).endswith(
        f'(execution=Execution(flow=Diamond(), id="{first.id}", retry=False), index=None, splits=None)'
    )
    assert datastore.list_artifacts(layer=flow.execution(first.id).layer(Join)) == ["pid", "value"]
    assert flow.execution(second.id).layer(Join).value == 3 + 20


def test_parameters_named_like_layer_attributes_are_refused(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(ConfigurationError, match=r"parameter names 'name' are reserved on layers"):
        flow(name="ada", seed=1)
    assert files(tmp_path) == []


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


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_executor_concurrency_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency must be a whole number of at least 1"):
        executors.Thread(concurrency=bad)
    with pytest.raises(ConfigurationError, match="timeout must be a positive number"):
        executors.Process(timeout=0)
