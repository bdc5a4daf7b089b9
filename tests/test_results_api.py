"""Reading results: executions (their ids, listing, reprs), their layers and artifacts, from the
process that ran the flow and from another one that imports the flow's script."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Diamond, Join, Left, files, run_script
from laminar import Parameters

# Internal on purpose: ids are made by one generator; checking 2,000 of them through flow runs would
# only be slower.
from laminar._ids import new_execution_id
from laminar.configurations import datastores, executors
from laminar.errors import ExecutionNotFound, FlowDefinitionError

SEED = textwrap.dedent(
    """
    from laminar import Flow, Layer

    class ResultFlow(Flow): ...

    @ResultFlow.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = "bar"

    if flow := ResultFlow():
        execution = flow()
        print("RAN", execution.id)
    """
)

READER = textwrap.dedent(
    """
    import sys
    from main import A, flow

    execution_id = sys.argv[1]
    print(flow.execution(execution_id).layer(A).foo)
    datastore = flow.configuration.datastore
    print(datastore.list_executions(flow=flow))
    execution = flow.execution(execution_id)
    print([layer.name for layer in datastore.list_layers(execution=execution)])
    print(datastore.list_artifacts(layer=flow.execution(execution_id).layer(A)))
    """
)


def test_seed_example_runs_as_a_script_and_reads_back_from_another_process(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(SEED)
    (tmp_path / "reader.py").write_text(READER)
    ran = run_script(tmp_path, "main.py").split()
    assert ran[0] == "RAN"
    execution_id = ran[1]
    assert (tmp_path / ".laminar").is_dir()  # the default datastore

    lines = run_script(tmp_path, "reader.py", execution_id).splitlines()
    assert lines[0] == "bar"
    assert lines[1] == f'[Execution(flow=ResultFlow(), id="{execution_id}", retry=False)]'
    assert lines[2] == "['A']"  # the layers that stored artifacts (no parameters were given)
    assert lines[3] == "['foo']"
    # Importing the script to read results did not start another run.
    assert len(list((tmp_path / ".laminar/flows/ResultFlow/executions").iterdir())) == 1


def test_results_api_listing_and_reprs(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    first = flow(seed=1)
    second = flow(seed=2)
    datastore = flow.configuration.datastore
    assert datastore.list_executions(flow=flow) == [first, second]
    assert repr(first) == f'Execution(flow=Diamond(), id="{first.id}", retry=False)'
    layers = datastore.list_layers(execution=flow.execution(first.id))
    assert [layer.name for layer in layers] == sorted(flow.layer_names())  # stored artifacts, by name
    assert repr(layers[0]).endswith(
        f'(execution=Execution(flow=Diamond(), id="{first.id}", retry=False), index=None, splits=None)'
    )
    assert datastore.list_artifacts(layer=flow.execution(first.id).layer(Join)) == ["pid", "value"]
    assert flow.execution(second.id).layer(Join).value == 3 + 20


def test_missing_artifact_says_whether_the_layer_finished(tmp_path: Path) -> None:
    execution = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())(seed=2)
    with pytest.raises(AttributeError, match=r"finished without assigning it \(it stored: pid, value\)"):
        execution.layer(Left).nope  # noqa: B018
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(
        ExecutionNotFound, match="execution never-ran of flow Diamond does not exist in file://"
    ):
        flow.execution("never-ran").layer(Left).value  # noqa: B018


# ---- execution ids -----------------------------------------------------------------------------------


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


# ---- the results API on any datastore object: answered by the application, checked ------------------


def test_any_datastore_object_lists_what_is_stored_in_it_not_in_the_flows(tmp_path: Path) -> None:
    flow = Diamond(datastore=datastores.Local(tmp_path / "runs"), executor=executors.Thread())
    execution = flow(seed=1)
    same = datastores.Local(tmp_path / "runs")  # another object on the same storage
    assert same.list_executions(flow=flow) == [execution]
    assert [layer.name for layer in same.list_layers(execution=execution)] == sorted(flow.layer_names())
    assert same.list_artifacts(layer=execution.layer(Join)) == ["pid", "value"]
    elsewhere = datastores.Local(tmp_path / "empty")
    assert elsewhere.list_executions(flow=flow) == []
    assert elsewhere.list_layers(execution=execution) == []
    assert elsewhere.list_artifacts(layer=execution.layer(Join)) == []
    assert files(tmp_path / "empty") == []  # listing wrote nothing


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda store: store.list_executions(flow=Diamond),
            "list_executions(flow=...) takes a flow object, MyFlow(), not <class 'helpers.Diamond'>",
        ),
        (
            lambda store: store.list_layers(execution="some-id"),
            "list_layers(execution=...) takes an execution, flow.execution(id), not 'some-id'",
        ),
        (
            lambda store: store.list_artifacts(layer=Join),
            "list_artifacts(layer=...) takes a layer of an execution, execution.layer(A), not <class 'helpers.Join'>",
        ),
    ],
)
def test_the_results_api_says_what_it_takes(
    tmp_path: Path, call: Callable[[datastores.Local], object], message: str
) -> None:
    store = datastores.Local(tmp_path / "runs")
    Diamond(datastore=store, executor=executors.Thread())(seed=1)
    before = files(tmp_path)
    with pytest.raises(TypeError) as error:
        call(store)
    assert str(error.value) == message
    assert files(tmp_path) == before


def test_a_layer_of_no_execution_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not bound to an execution; use flow.execution\(id\).layer"):
        datastores.Local(tmp_path).list_artifacts(layer=Join())
    assert files(tmp_path) == []


def test_without_the_application_the_results_api_says_what_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transport only forwards: with nothing installed, it says so rather than reaching up."""
    flow = Diamond(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    monkeypatch.setattr(datastores.Datastore, "results_api", None)
    with pytest.raises(RuntimeError) as error:
        flow.configuration.datastore.list_executions(flow=flow)
    assert str(error.value) == (
        "Local.results_api is None: nothing answers list_executions, list_layers and list_artifacts; "
        "`import laminar` installs Laminar's (laminar._app.results)"
    )
