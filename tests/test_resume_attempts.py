"""A resume never overwrites or renumbers what an earlier run recorded.

A split that failed on attempt 0 and is resumed runs as attempt 1 (``self.attempt`` too): both
attempts' logs and records are kept, ``laminar logs`` without ``--attempt`` shows the last one run,
``show`` and ``--attempt N`` agree, and the report lists each attempt once. The execution keeps its
first start and records each run's start and end (the run history). On the Thread and process
executors, through the ``laminar`` command as a user runs it.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from laminar import Flow, Layer, Parameters
from laminar._cli.main import cli
from laminar._plugins import run_records
from laminar._storage import layout
from laminar._storage.records import AttemptRecord, ExecutionStatus, LayerStatusRecord, seal, unseal
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import IntegrityError

FLAKY = textwrap.dedent(
    """
    import os

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter


    class Crawl(Flow): ...


    @Crawl.register
    class Pages(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(url=["a", "b", "c"])


    @Crawl.register(foreach=ForEach(parameters=[Parameter(layer=Pages, attribute="url")]))
    class Fetch(Layer):
        def __call__(self, pages: Pages, parameters: Parameters) -> None:
            print(f"fetching {pages.url} as attempt {self.attempt}")
            if pages.url == "b" and not os.path.exists(parameters.fixed):
                raise ConnectionError(f"{pages.url} is down (attempt {self.attempt})")
            self.page = pages.url.upper()
    """
)


def laminar(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def ok(*args: str | Path) -> str:
    result = laminar(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def row(table: str, first: str) -> list[str]:
    """The cells of the row of a printed table that starts with ``first``."""
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip(" │").split("│")]
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{table}")


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_resumed_split_keeps_both_attempts_numbered_0_and_1(tmp_path: Path, executor: str) -> None:
    flow_file = tmp_path / "crawl.py"
    flow_file.write_text(FLAKY)
    store = (tmp_path / "store").as_uri()
    fixed = tmp_path / "fixed"
    where = ("--datastore", store)
    first = laminar("run", flow_file, *where, "--executor", executor, "--execution", "crawl",
                    "--param", f"fixed={fixed}")  # fmt: skip
    assert first.exit_code == 1 and "b is down (attempt 0)" in first.stderr
    fixed.touch()
    ok("resume", flow_file, "crawl", *where, "--executor", executor)

    shown = json.loads(ok("show", flow_file, "crawl", *where, "--json"))
    fetch = next(layer for layer in shown["layers"] if layer["name"] == "Fetch")
    assert fetch["status"] == "finished"
    attempts = fetch["attempts"]
    assert [a["attempt"] for a in attempts["1"]] == [0, 1]  # split b: the failed run's, then the resume's
    assert attempts["1"][0]["error"]["message"] == "b is down (attempt 0)"
    assert attempts["1"][1]["error"] is None
    assert [a["attempt"] for a in attempts["0"]] == [0] and [a["attempt"] for a in attempts["2"]] == [0]

    # Both logs kept; without --attempt the last one run; each --attempt the one show lists.
    logs = ("logs", flow_file, "crawl", "Fetch", *where, "--index", "1")
    assert ok(*logs) == "fetching b as attempt 1\n"
    assert ok(*logs, "--attempt", "0").startswith("fetching b as attempt 0\n")
    assert ok(*logs, "--attempt", "1") == "fetching b as attempt 1\n"
    missing = laminar(*logs, "--attempt", "2")
    assert missing.exit_code != 0 and "its attempts are 0, 1" in missing.stderr

    text = ok("show", flow_file, "crawl", *where)
    assert row(text, "Fetch")[1:4] == ["finished", "3", "4"]  # 3 splits, 4 attempts in all
    assert "Fetch split 1 attempt 0: ConnectionError: b is down (attempt 0)" in text

    page = tmp_path / "report.html"
    ok("report", flow_file, "crawl", *where, "-o", page)
    html = page.read_text()
    bars = re.findall(r"Fetch #1 · attempt (\d+)", html)
    assert bars == ["0", "1"]  # each attempt once
    history = re.findall(r"<li>(run|resume): (\w+), started", html)
    assert history == [("run", "failed"), ("resume", "succeeded")]  # the run history


def two_runs_flow(tmp_path: Path) -> Flow:
    fixed = tmp_path / "fixed"

    class Twice(Flow): ...

    @Twice.register(retry=Retry(attempts=2, delay=0))
    class Flaky(Layer):
        def __call__(self, parameters: Parameters) -> None:
            print(f"attempt {self.attempt}")
            if not fixed.exists():
                raise ValueError(f"broken on attempt {self.attempt}")
            self.value = self.attempt

    return Twice(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())


def test_attempts_number_on_across_runs_and_each_run_retries_in_full(tmp_path: Path) -> None:
    """Each run gives a split its Retry's attempts; the numbers go on from the last run's."""
    flow = two_runs_flow(tmp_path)
    with pytest.raises(ValueError, match="broken on attempt 1"):
        flow(execution="twice")
    execution = flow.execution("twice")
    with pytest.raises(ValueError, match="broken on attempt 3"):  # attempts 2 and 3, not 0 and 1 again
        execution.resume()
    (tmp_path / "fixed").touch()
    execution.resume()
    assert execution.layer("Flaky").value == 4  # self.attempt in the third run's first try
    state = execution.layer("Flaky").state
    attempts = state.status.attempts[0]
    assert [a.attempt for a in attempts] == [0, 1, 2, 3, 4]
    assert [a.error["message"] if a.error else None for a in attempts] == [
        *(f"broken on attempt {n}" for n in range(4)),
        None,
    ]
    assert [state.logs(attempt=n) for n in range(5)] == [f"attempt {n}\n" for n in range(5)]
    assert state.logs() == "attempt 4\n"


def test_the_run_history_keeps_the_first_start_and_each_run(tmp_path: Path) -> None:
    flow = two_runs_flow(tmp_path)
    before = time.time()
    with pytest.raises(ValueError):
        flow(execution="twice")
    execution = flow.execution("twice")
    first = execution.status
    (tmp_path / "fixed").touch()
    execution.resume()
    status = flow.execution("twice").status
    assert status == "succeeded"
    assert status.created == first.created and status.created.timestamp() >= before
    assert [run.status for run in status.runs] == ["failed", "succeeded"]
    assert status.runs[0].started == first.started and status.runs[0].ended == first.ended
    assert status.runs[1].started == status.started and status.runs[1].ended == status.ended
    assert status.runs[0].ended is not None and status.runs[0].ended <= status.runs[1].started


def test_show_json_and_the_listing_carry_the_run_history(tmp_path: Path) -> None:
    flow_file = tmp_path / "crawl.py"
    flow_file.write_text(FLAKY)
    store = (tmp_path / "store").as_uri()
    fixed = tmp_path / "fixed"
    where = ("--datastore", store, "--executor", "thread")
    assert laminar("run", flow_file, *where, "--execution", "old", "--param", f"fixed={fixed}").exit_code == 1
    ok("run", flow_file, *where, "--execution", "new", "--param", f"fixed={tmp_path}")  # exists: succeeds
    fixed.touch()
    ok("resume", flow_file, "old", *where)  # resumed last, still the older execution

    shown = json.loads(ok("show", flow_file, "old", "--datastore", store, "--json"))
    runs = shown["runs"]
    assert [run["status"] for run in runs] == ["failed", "succeeded"]
    assert shown["created"] == runs[0]["started"] and shown["started"] == runs[1]["started"]
    assert runs[0]["ended"] <= runs[1]["started"] and shown["ended"] == runs[1]["ended"]
    text = ok("show", flow_file, "old", "--datastore", store)
    assert "runs (2, the first started" in text and "resume 1: succeeded" in text

    listed = json.loads(ok("executions", flow_file, "--datastore", store, "--json"))
    assert [row["id"] for row in listed] == ["new", "old"]  # in order of creation, newest first
    old = listed[1]
    assert old["started"] == shown["created"] and old["runs"] == 2 and listed[0]["runs"] == 1


def test_a_status_record_written_before_the_history_reads_as_one_run(tmp_path: Path) -> None:
    flow = two_runs_flow(tmp_path)
    (tmp_path / "fixed").touch()
    flow(execution="old")
    store = flow.configuration.store(flow.name, "old")
    recorded = store.status()
    assert recorded is not None
    legacy = {
        "layout": 2, "flow": recorded.flow, "id": "old", "status": "succeeded", "started": recorded.started,
        "ended": recorded.ended, "error": None, "created": recorded.created,
    }  # fmt: skip
    flow.configuration.datastore.write_bytes(layout.execution_status(flow.name, "old"), seal(legacy))
    status = flow.execution("old").status
    assert [(run.started, run.ended, run.status) for run in status.runs] == [
        (status.started, status.ended, "succeeded")
    ]


def test_a_layer_record_without_the_mark_numbers_after_its_recorded_attempts(tmp_path: Path) -> None:
    """A layer status record from before ``next_attempt`` existed still numbers the resume after it."""
    record = LayerStatusRecord(
        "F", "e", "L", "failed", 1.0, 2.0, splits=2,
        attempts=(AttemptRecord(1, 0, 1.0, 1.5, {"type": "E", "message": "m", "traceback": ""}),),
    )  # fmt: skip
    payload = unseal(record.dumps())
    del payload["sha256"], payload["next_attempt"]
    read = LayerStatusRecord.loads(seal(payload))
    assert read.next_attempt == 1 and read.complete
    first = read.first_attempts()
    assert (first(0), first(1)) == (0, 1)


def test_a_record_that_left_attempts_out_numbers_every_split_after_all_of_them() -> None:
    """Past the limits a split's attempts may be left out of the record: then every split of the
    layer goes on after the highest number any run used, so none is ever reused."""
    kept = AttemptRecord(0, 0, 1.0, 2.0, {"type": "E", "message": "m", "traceback": ""})
    over = LayerStatusRecord("F", "e", "L", "failed", 1.0, 2.0, splits=3, attempts=(kept,), omitted=5,
                             next_attempt=7)  # fmt: skip
    first = over.first_attempts()
    assert [first(index) for index in range(3)] == [7, 7, 7]
    running = LayerStatusRecord("F", "e", "L", "running", 1.0, splits=3, attempts=(kept,), next_attempt=3)
    assert running.first_attempts()(2) == 3  # its scheduler died: what it ran is not listed


def test_a_resume_after_the_scheduler_died_numbers_after_what_its_run_reserved(tmp_path: Path) -> None:
    """A run killed mid-layer leaves the layer's "running" record, which reserves its numbers."""
    flow = two_runs_flow(tmp_path)
    with pytest.raises(ValueError):
        flow(execution="twice")  # attempts 0 and 1 recorded
    store = flow.configuration.store(flow.name, "twice")
    earlier = store.layer_status("Flaky")
    assert earlier is not None and earlier.next_attempt == 2
    # As a killed resume leaves it: "running", reserving the two attempts that run may make.
    store.write_layer_status(
        LayerStatusRecord("Twice", "twice", "Flaky", "running", time.time(), splits=1,
                          attempts=earlier.attempts, next_attempt=4)
    )  # fmt: skip
    (tmp_path / "fixed").touch()
    flow.execution("twice").resume()
    state = flow.execution("twice").layer("Flaky").state
    assert [a.attempt for a in state.status.attempts[0]] == [0, 1, 4]
    assert state.logs() == "attempt 4\n"


def test_a_resume_after_a_run_that_died_before_any_layer_record_numbers_after_its_logs(
    tmp_path: Path,
) -> None:
    flow = two_runs_flow(tmp_path)
    with pytest.raises(ValueError):
        flow(execution="twice")
    store = flow.configuration.store(flow.name, "twice")
    flow.configuration.datastore.delete(layout.layer_status(flow.name, "twice", "Flaky"))
    assert store.layer_status("Flaky") is None  # as a run killed before its first layer record left it
    (tmp_path / "fixed").touch()
    flow.execution("twice").resume()
    state = flow.execution("twice").layer("Flaky").state
    assert [a.attempt for a in state.status.attempts[0]] == [2]
    assert [state.logs(attempt=n) for n in (0, 1, 2)] == ["attempt 0\n", "attempt 1\n", "attempt 2\n"]


def test_foreach_splits_that_never_ran_start_at_attempt_0_on_a_resume(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"

    class Grid(Flow): ...

    @Grid.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(item=list(range(4)))

    @Grid.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Work(Layer):
        def __call__(self, items: Items) -> None:
            if items.item == 0 and not fixed.exists():
                raise ValueError("item 0 fails")
            self.attempt_seen = self.attempt

    flow = Grid(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread(concurrency=1))
    with pytest.raises(ValueError):
        flow(execution="grid")  # item 0 fails first; with one at a time the others never start
    fixed.touch()
    flow.execution("grid").resume()
    work = flow.execution("grid").layer("Work")
    assert list(work.attempt_seen) == [1, 0, 0, 0]


def test_a_resumed_layer_s_running_record_reserves_the_numbers_its_run_may_use(tmp_path: Path) -> None:
    """Written as the layer starts on a resume, before any split runs: a scheduler that dies then
    leaves a record that numbers the next resume after every attempt it may have made."""
    fixed = tmp_path / "fixed"

    class Reserving(Flow): ...

    @Reserving.register(retry=Retry(attempts=2, delay=0))
    class Flaky(Layer):
        def __call__(self, parameters: Parameters) -> None:
            if not fixed.exists():
                raise ValueError("broken")
            execution = self.execution
            assert execution is not None
            seen = execution.flow.configuration.store(execution.flow.name, execution.id).layer_status("Flaky")
            self.seen = (seen.status, seen.next_attempt) if seen is not None else None

    flow = Reserving(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with pytest.raises(ValueError):
        flow(execution="reserving")  # attempts 0 and 1
    fixed.touch()
    resumed = flow.execution("reserving").resume()
    assert resumed.layer("Flaky").seen == ("running", 4)  # this run may use 2 and 3
    record = flow.configuration.store(flow.name, "reserving").layer_status("Flaky")
    assert record is not None and record.status == "finished" and record.next_attempt == 3


@pytest.mark.parametrize(
    ("runs", "complaint"),
    [
        ([[1.0, 2.0, "exploded"]], "status is 'exploded', not one of running, succeeded, failed, cancelled"),
        ([[1.0, 2.0]], "RunRecord [1.0, 2.0] is not a list of 3 items"),
        ([["soon", None, "failed"]], "started is 'soon', not a time"),
    ],
)
def test_a_damaged_run_history_reads_as_a_corrupt_status_naming_it(
    tmp_path: Path, runs: list[object], complaint: str
) -> None:
    flow = two_runs_flow(tmp_path)
    (tmp_path / "fixed").touch()
    flow(execution="told")
    key = layout.execution_status(flow.name, "told")
    payload = unseal(flow.configuration.datastore.read_bytes(key))
    del payload["sha256"]
    damaged = seal({**payload, "runs": runs})
    flow.configuration.datastore.write_bytes(key, damaged)
    with pytest.raises(
        IntegrityError, match=r"the status of execution told of flow Twice at .* is corrupt"
    ) as raised:
        flow.execution("told").status  # noqa: B018
    assert complaint in str(raised.value)
    assert flow.configuration.datastore.read_bytes(key) == damaged  # reading wrote nothing


@pytest.mark.parametrize(
    ("attempt", "complaint"),
    [
        ([0, 0, 1.0, 2.0, None, None, "more"], "is not a list of 5 or 6 items"),
        ([0, 0, 1.0, 2.0, None, "caught"], "caught is str, not an object"),
    ],
)
@pytest.mark.parametrize("where", ["status record", "layer record"])
def test_a_damaged_attempt_reads_as_a_corrupt_layer_status_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attempt: list[object], complaint: str, where: str
) -> None:
    if where == "status record":  # the layer's "running" status written at once: its status is a
        monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.0)  # record of its own (else Record.ran)
    flow = two_runs_flow(tmp_path)
    (tmp_path / "fixed").touch()
    flow(execution="told")
    if where == "status record":
        key, named = layout.layer_status(flow.name, "told", "Flaky"), "the status of layer Flaky"
    else:
        key, named = layout.record(flow.name, "told", "Flaky"), "the record of layer Flaky"
    payload = unseal(flow.configuration.datastore.read_bytes(key))
    del payload["sha256"]
    if where == "status record":
        payload["attempts"] = [attempt]
    else:
        assert not flow.configuration.datastore.exists(layout.layer_status(flow.name, "told", "Flaky"))
        payload["ran"]["attempts"] = [attempt]
    flow.configuration.datastore.write_bytes(key, seal(payload))
    reader = type(flow)(datastore=datastores.Local(tmp_path / "store"))  # not this process's cache
    with pytest.raises(IntegrityError, match=rf"{named} of execution told .* is corrupt") as raised:
        reader.execution("told").status.layers  # noqa: B018
    assert complaint in str(raised.value)


def test_a_run_whose_scheduler_died_reads_as_failed_in_the_history(tmp_path: Path) -> None:
    flow = two_runs_flow(tmp_path)
    with pytest.raises(ValueError):
        flow(execution="twice")
    store = flow.configuration.store(flow.name, "twice")
    first = store.status()
    assert first is not None and first.created is not None
    killed = ExecutionStatus(
        flow.name, "twice", "running", time.time(), created=first.created, runs=first.history
    )
    store.write_status(killed)  # as a resume killed with SIGKILL leaves it (its lease gone stale)
    (tmp_path / "fixed").touch()
    flow.execution("twice").resume()
    runs = flow.execution("twice").status.runs
    assert [(run.status, run.ended is None) for run in runs] == [
        ("failed", False),
        ("failed", True),
        ("succeeded", False),
    ]
    assert runs[1].started.timestamp() == pytest.approx(killed.started, abs=1e-5)
