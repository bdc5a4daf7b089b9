"""What starting an execution costs in requests: its Parameters layer's one split is held in its
record (one write, not two, as other one-split layers), and a run that is not a resume reads no
status record to carry over (the execution did not exist)."""

from __future__ import annotations

from pathlib import Path

from laminar import Flow, Layer, Parameters
from laminar._storage import layout
from laminar.configurations import executors

from tests.helpers import CountingLocal


class Started(Flow): ...


@Started.register
class Double(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.x * 2


def test_a_new_run_writes_its_parameters_in_their_record_and_reads_no_status(tmp_path: Path) -> None:
    datastore = CountingLocal(tmp_path)
    execution = (
        Started(datastore=datastore, executor=executors.Thread())
        .execution("new")
        .run(parameters={"x": 21, "label": "a" * 100})
    )
    parameters = layout.layer("Started", "new", "Parameters")
    assert [key for key in datastore.writes if key.startswith(parameters)] == [parameters + "record.json"]
    assert layout.execution_status("Started", "new") not in datastore.reads
    record = execution.store.record("Parameters")
    assert record is not None and set(record.held) == {0}
    again = Started(datastore=tmp_path.as_uri()).execution("new")  # read afresh
    assert again.status.parameters == {"x": 21, "label": "a" * 100}
    assert again.layer(Double).value == 42


def test_a_resume_reads_the_status_it_carries_over(tmp_path: Path) -> None:
    """A resume reads the execution's record, to keep its run history."""
    flow = Started(datastore=tmp_path.as_uri(), executor=executors.Thread())
    flow.execution("twice").run(parameters={"x": 1})
    datastore = CountingLocal(tmp_path)
    resumed = Started(datastore=datastore, executor=executors.Thread()).execution("twice").resume()
    assert layout.execution_status("Started", "twice") in datastore.reads
    assert [run.status for run in resumed.status.runs] == ["succeeded", "succeeded"]
