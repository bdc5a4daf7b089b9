"""Every run tells how it went: ``execution.status`` from any process, a killed scheduler's run reading
as failed, and the lifecycle events (layer started, skipped, split retried) that plugins receive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import lines, unpack_records
from laminar import Flow, Layer, Parameters
from laminar._runtime import layer_records
from laminar._storage import layout
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import DatastoreError, ExecutionNotFound
from laminar.plugins import hookimpl

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter, Retry


    class Told(Flow): ...


    @Told.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=list(range(parameters.n)))


    @Told.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]), retry=Retry(attempts=2, delay=0))
    class Work(Layer):
        def __call__(self, items: Items) -> None:
            with open(os.environ["RUNS"], "a") as file:
                file.write(f"{items.item}\\n")
            time.sleep(float(os.environ.get("SLEEP", "0")))
            if items.item == int(os.environ.get("FAIL", "-1")):
                raise ValueError(f"item {items.item} is broken")
            self.value = items.item


    flow = Told(datastore=datastores.Local(sys.argv[2]), executor=executors.Process(concurrency=2))
    if __name__ == "__main__":
        if sys.argv[1] == "run":
            flow(execution="told", n=4)
        else:
            status = flow.execution("told").status
            print(json.dumps({
                "status": str(status), "error": status.error, "parameters": status.parameters,
                "duration": status.duration, "started": status.started.isoformat() if status.started else None,
                "ended": status.ended.isoformat() if status.ended else None,
                "layers": {
                    name: {
                        "status": str(layer), "reason": layer.reason, "splits": layer.splits,
                        "duration": layer.duration, "error": layer.error,
                        "attempts": {
                            str(index): [
                                {"attempt": a.attempt, "duration": a.duration, "error": a.error}
                                for a in attempts
                            ]
                            for index, attempts in layer.attempts.items()
                        },
                    }
                    for name, layer in status.layers.items()
                },
            }))
    """
)


def script(tmp_path: Path, action: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "told.py"
    path.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(path), action, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RUNS": str(tmp_path / "runs"), **env},
    )


def read_status(tmp_path: Path) -> dict[str, Any]:
    result = script(tmp_path, "status")
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_a_succeeded_run_reads_back_with_its_times_and_parameters_from_another_process(
    tmp_path: Path,
) -> None:
    assert script(tmp_path, "run").returncode == 0
    status = read_status(tmp_path)
    assert status["status"] == "succeeded" and status["error"] is None
    assert status["parameters"] == {"n": 4}
    assert status["started"] <= status["ended"] and status["duration"] >= 0
    layers = status["layers"]
    assert list(layers) == ["Items", "Work"]
    assert [layers[name]["status"] for name in layers] == ["finished", "finished"]
    work = layers["Work"]
    assert work["splits"] == 4 and work["duration"] >= 0 and work["error"] is None
    assert sorted(work["attempts"]) == ["0", "1", "2", "3"]
    for attempts in work["attempts"].values():
        assert [a["attempt"] for a in attempts] == [0] and attempts[0]["duration"] >= 0
        assert attempts[0]["error"] is None


def test_a_split_that_fails_after_its_retries_reads_as_failed_with_its_error(tmp_path: Path) -> None:
    assert script(tmp_path, "run", FAIL="2").returncode != 0
    status = read_status(tmp_path)
    assert status["status"] == "failed"
    error = status["error"]
    assert error["type"] == "ValueError" and error["message"] == "item 2 is broken"
    assert "ValueError: item 2 is broken" in error["traceback"]
    # the layer's own file and line, from its worker process; none of Laminar's or asyncio's frames
    assert f'File "{tmp_path / "told.py"}", line' in error["traceback"]
    assert 'raise ValueError(f"item {items.item} is broken")' in error["traceback"]
    assert "<dynamic-code>" not in error["traceback"] and "laminar/_" not in error["traceback"]
    assert "asyncio" not in error["traceback"]
    assert lines(tmp_path / "runs").count("2") == 2  # both attempts ran
    layers = status["layers"]
    assert layers["Items"]["status"] == "finished"
    work = layers["Work"]
    assert work["status"] == "failed" and work["error"]["message"] == "item 2 is broken"
    failing = work["attempts"]["2"]
    assert [a["attempt"] for a in failing] == [0, 1]  # every attempt, each with its error and traceback
    for attempt in failing:
        assert attempt["error"]["type"] == "ValueError"
        assert attempt["error"]["message"] == "item 2 is broken"
        assert f'File "{tmp_path / "told.py"}", line' in attempt["error"]["traceback"]
        assert attempt["duration"] >= 0
    for index in ("0", "1", "3"):  # the others succeeded (or were stopped before they started)
        assert all(a["error"] is None for a in work["attempts"].get(index, []))


def test_a_killed_scheduler_reads_as_failed_not_running(tmp_path: Path) -> None:
    path = tmp_path / "told.py"
    path.write_text(SCRIPT)
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "SLEEP": "30"}
    running = subprocess.Popen([sys.executable, str(path), "run", str(tmp_path / "store")], env=env)
    deadline = time.monotonic() + 60
    while not lines(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.05)
    status = read_status(tmp_path)
    assert status["status"] == "running"  # from another process, while it runs
    # A layer's "running" record is written once it has run RUNNING_AFTER seconds: wait for it.
    while status["layers"]["Work"]["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = read_status(tmp_path)
    assert status["layers"]["Work"]["status"] == "running"
    running.send_signal(signal.SIGKILL)
    running.wait(10)
    status = read_status(tmp_path)
    assert status["status"] == "failed"
    assert status["error"]["type"] == "SchedulerLost"
    assert "stopped without finishing" in status["error"]["message"]
    assert "flow.execution('told').resume()" in status["error"]["message"]
    # the layer it was running reads as failed too, not as running
    assert status["layers"]["Work"]["status"] == "failed"
    assert "while the layer ran" in status["layers"]["Work"]["reason"]


def test_an_interrupted_run_reads_as_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "told.py"
    path.write_text(SCRIPT)
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "SLEEP": "1"}
    running = subprocess.Popen(
        [sys.executable, str(path), "run", str(tmp_path / "store")], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not lines(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.05)
    running.send_signal(signal.SIGINT)
    running.communicate(timeout=60)
    assert read_status(tmp_path)["status"] == "cancelled"


def test_an_execution_that_does_not_exist_says_so(tmp_path: Path) -> None:
    class Absent(Flow): ...

    @Absent.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = 1

    flow = Absent(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(ExecutionNotFound, match="execution typo of flow Absent does not exist in file://"):
        flow.execution("typo").status  # noqa: B018
    with pytest.raises(ExecutionNotFound, match="execution typo of flow Absent does not exist"):
        flow.execution("typo").layer(A).foo  # noqa: B018
    assert flow().status == "succeeded"


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    @hookimpl
    def laminar_layer_started(self, layer: Layer, splits: int) -> None:
        self.seen.append(("started", layer.name))
        self.seen.append(("splits", layer.name, splits))

    @hookimpl
    def laminar_layer_finished(self, layer: Layer, splits: int, error: BaseException | None) -> None:
        self.seen.append(("finished", layer.name, splits, None if error is None else str(error)))

    @hookimpl
    def laminar_split_started(self, layer: Layer, index: int | None, attempt: int) -> None:
        self.seen.append(("split started", layer.name, index, attempt))

    @hookimpl
    def laminar_split_finished(
        self, layer: Layer, index: int | None, attempt: int, error: BaseException | None
    ) -> None:
        self.seen.append(
            ("split finished", layer.name, index, attempt, None if error is None else str(error))
        )

    @hookimpl
    def laminar_layer_skipped(self, layer: Layer, reason: str) -> None:
        self.seen.append(("skipped", layer.name, reason))

    @hookimpl
    def laminar_split_retried(
        self, layer: Layer, index: int | None, attempt: int, error: BaseException
    ) -> None:
        self.seen.append(("retried", layer.name, index, attempt, str(error)))


@pytest.fixture
def events() -> Iterator[Events]:
    from laminar._plugins.manager import plugin_manager  # internal: registering a plugin by hand

    plugin = Events()
    plugin_manager().register(plugin)
    yield plugin
    plugin_manager().unregister(plugin)


def test_lifecycle_events_reach_a_plugin(tmp_path: Path, events: Events) -> None:
    class Eventful(Flow): ...

    @Eventful.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=[0, 1])

    @Eventful.register(
        foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]),
        retry=Retry(attempts=2, delay=0),
    )
    class Flaky(Layer):
        def __call__(self, items: Items) -> None:
            if items.item == 1 and self.attempt == 0:
                raise OSError("transient")
            self.value = items.item

    @Eventful.register
    class Gate(Layer):
        @hooks.entry
        def never(self) -> bool:
            return False

    @Eventful.register
    class After(Layer):
        def __call__(self, gate: Gate) -> None:
            self.never = True

    Eventful(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=1))()
    assert ("started", "Items") in events.seen and ("started", "Flaky") in events.seen
    assert ("retried", "Flaky", 1, 1, "transient") in events.seen
    assert ("skipped", "Gate", "an entry hook returned a falsy value") in events.seen
    assert ("skipped", "After", "layer Gate it depends on was skipped") in events.seen
    assert ("started", "Gate") not in events.seen
    assert ("splits", "Flaky", 2) in events.seen and ("splits", "Items", 1) in events.seen
    flaky = [event for event in events.seen if event[0].startswith("split ") and event[1] == "Flaky"]
    # each attempt starts, then is retried or finishes; split 1 failed once and then succeeded
    assert sorted(flaky) == sorted(
        [
            ("split started", "Flaky", 0, 0),
            ("split finished", "Flaky", 0, 0, None),
            ("split started", "Flaky", 1, 0),
            ("split started", "Flaky", 1, 1),
            ("split finished", "Flaky", 1, 1, None),
        ]
    )
    assert ("split started", "Items", None, 0) in events.seen  # no ForEach: index None
    assert ("finished", "Flaky", 2, None) in events.seen
    assert events.seen.index(("retried", "Flaky", 1, 1, "transient")) < events.seen.index(
        ("split started", "Flaky", 1, 1)
    )


def test_a_failing_layer_ends_with_an_error_event_and_its_dependents_never_start(
    tmp_path: Path, events: Events
) -> None:
    class Failing(Flow): ...

    @Failing.register
    class Breaks(Layer):
        def __call__(self) -> None:
            raise KeyError("gone")

    @Failing.register
    class Later(Layer):
        def __call__(self, breaks: Breaks) -> None:
            self.x = 1

    flow = Failing(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(KeyError):
        flow(execution="failing")
    assert ("split finished", "Breaks", None, 0, "'gone'") in events.seen
    assert ("finished", "Breaks", 1, "'gone'") in events.seen
    assert not any(event[1] == "Later" for event in events.seen)
    layers = flow.execution("failing").status.layers
    assert layers["Breaks"] == "failed" and layers["Breaks"].error["type"] == "KeyError"
    assert layers["Later"] == "not started"
    assert layers["Breaks"].attempts[0][0].error["message"] == "'gone'"


def test_skipped_layers_read_as_skipped_with_their_reason(tmp_path: Path) -> None:
    class Skips(Flow): ...

    @Skips.register
    class Gate(Layer):
        @hooks.entry
        def never(self) -> bool:
            return False

    @Skips.register
    class After(Layer):
        def __call__(self, gate: Gate) -> None:
            self.never = True

    layers = Skips(datastore=datastores.Local(tmp_path), executor=executors.Thread())().status.layers
    assert layers["Gate"] == "skipped" and layers["Gate"].reason == "an entry hook returned a falsy value"
    assert layers["After"] == "skipped" and layers["After"].reason == "layer Gate it depends on was skipped"


def test_list_executions_carries_each_status_reading_one_record_per_execution(tmp_path: Path) -> None:
    from helpers import CountingLocal

    class Listed(Flow): ...

    @Listed.register
    class Maybe(Layer):
        def __call__(self, parameters: Parameters) -> None:
            if parameters.fail:
                raise ValueError("asked to fail")

    flow = Listed(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow(execution="a1", fail=False)
    with pytest.raises(ValueError):
        flow(execution="a2", fail=True)
    flow(execution="a3", fail=False)
    counting = CountingLocal(tmp_path)
    listed = counting.list_executions(flow=flow)
    assert [(e.id, str(e.status)) for e in listed] == [
        ("a1", "succeeded"),
        ("a2", "failed"),
        ("a3", "succeeded"),
    ]
    assert listed[1].status.error["message"] == "asked to fail"
    assert listed[0].status.created <= listed[2].status.created
    assert sorted(counting.reads) == sorted(
        f"flows/Listed/executions/{id}/status.json" for id in ("a1", "a2", "a3")
    ), counting.reads


def test_a_failing_layer_shows_the_users_file_and_line_and_how_to_resume(tmp_path: Path) -> None:
    """On the Thread and the process executor: the layer's own frames, not Laminar's or asyncio's."""
    script = tmp_path / "failing.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from laminar import Flow, Layer
            from laminar.configurations import datastores, executors

            class Broken(Flow): ...

            @Broken.register
            class Layer1(Layer):
                def __call__(self) -> None:
                    helper()

            def helper():
                raise ValueError("the layer's own error")

            if __name__ == "__main__":
                Broken(datastore=datastores.Local({str(tmp_path / "store")!r}), executor=sys.argv[1])(execution="broken")
            """
        )
    )
    for executor in ("thread", "process"):
        result = subprocess.run(
            [sys.executable, str(script), executor], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        err = result.stderr
        assert f'File "{script}", line 11, in __call__\n    helper()' in err, err
        assert f'File "{script}", line 14, in helper\n    raise ValueError' in err, err
        assert "<dynamic-code>" not in err and "asyncio" not in err, err
        assert "_runtime" not in err and "scheduler.py" not in err, err
        assert "ValueError: the layer's own error" in err
        assert "resume execution broken with flow.execution('broken').resume()" in err
        shutil.rmtree(tmp_path / "store")
        full = subprocess.run(
            [sys.executable, str(script), executor],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LAMINAR_DEBUG": "1"},
        )
        assert "scheduler.py" in full.stderr  # every frame, when asked for
        shutil.rmtree(tmp_path / "store")


# ---- layer records written off the event loop (object stores) ------------------------------------


class FarLocal(datastores.Local):
    """A Local datastore that says small writes are dear, as an object store does: the layer status
    records are then written by the status plugin's own thread. ``failing`` names a layer whose
    record cannot be written."""

    small_writes_inline = False
    failing: str | None = None
    failed = threading.Event()  # set: the record of layer ``failing`` could not be written

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/status.json") and "/layers/" in key:
            time.sleep(0.05)  # a request's time: the run ends before the last record is written
            if self.failing is not None and key.endswith(f"/layers/{self.failing}/status.json"):
                self.failed.set()
                raise DatastoreError(f"cannot write {key}: the store is down")
        super().write_bytes(key, data)


class Far(Flow): ...


@Far.register
class First(Layer):
    def __call__(self) -> None:
        self.value = 1


@Far.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


def test_layer_records_written_off_the_loop_are_all_final_when_the_run_ends(tmp_path: Path) -> None:
    execution = Far(datastore=FarLocal(tmp_path), executor=executors.Thread())()
    status = (
        Far(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution(execution.id).status
    )
    assert status == "succeeded"
    assert {name: layer.status for name, layer in status.layers.items()} == {
        "First": "finished",
        "Second": "finished",
    }
    assert all(layer.ended is not None for layer in status.layers.values())


def test_a_layer_record_that_cannot_be_written_off_the_loop_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._plugins import run_records as status_plugin

    # Each layer's "running" record written at once: its status is a record of its own, not its
    # layer record's (which carries the final status of a layer that ends sooner).
    monkeypatch.setattr(status_plugin, "RUNNING_AFTER", 0.0)
    datastore = FarLocal(tmp_path)
    datastore.failing = "Down"
    FarLocal.failed.clear()
    with pytest.raises(DatastoreError, match=r"layers/Down/status.json: the store is down"):
        FarDown(datastore=datastore, executor=executors.Thread())(execution="down")
    assert not (tmp_path / layout.layer_status("FarDown", "down", "Down")).exists()
    assert FarDown(datastore=datastores.Local(tmp_path)).execution("down").status != "succeeded"


class FarDown(Flow): ...


@FarDown.register
class Down(Layer):
    """Ends once its "running" record failed to be written: that record is written, whatever the
    machine's load (a layer that ended first would have its status carried by its layer record)."""

    def __call__(self) -> None:
        assert FarLocal.failed.wait(30), "the running record was never written"


# ---- a layer's "running" record is written only once the layer has run a while ---------------------


class CountingLocal(datastores.Local):
    """Counts the layer status records written, by layer."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.status_writes: dict[str, list[str]] = {}

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/status.json") and "/layers/" in key:
            layer = key.split("/layers/")[1].split("/")[0]
            self.status_writes.setdefault(layer, []).append(json.loads(data)["status"])
        super().write_bytes(key, data)


def test_a_layer_that_ends_before_the_delay_writes_no_status_record_its_record_carries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._plugins import run_records as status_plugin

    monkeypatch.setattr(status_plugin, "RUNNING_AFTER", 60.0)  # no layer here runs that long
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # records written at the end: none taken early
    datastore = CountingLocal(tmp_path)
    execution = Far(datastore=datastore, executor=executors.Thread())()
    assert datastore.status_writes == {}  # no status file: each layer's record carries its final status
    unpack_records(tmp_path)  # each layer's record a file of its own (not a line of a record pack)
    for layer in ("First", "Second"):
        ran = json.loads((tmp_path / layout.record("Far", execution.id, layer)).read_bytes())["ran"]
        assert [attempt[:2] for attempt in ran["attempts"]] == [[0, 0]]
    assert execution.status == "succeeded"
    layers = Far(datastore=datastores.Local(tmp_path)).execution(execution.id).status.layers
    assert {name: (layer.status, len(layer.attempts)) for name, layer in layers.items()} == {
        "First": ("finished", 1),
        "Second": ("finished", 1),
    }


def test_a_layer_still_running_after_the_delay_keeps_its_status_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._plugins import run_records as status_plugin

    monkeypatch.setattr(status_plugin, "RUNNING_AFTER", 0.0)  # every layer has run that long
    datastore = CountingLocal(tmp_path)
    execution = Far(datastore=datastore, executor=executors.Thread())()
    assert datastore.status_writes == {"First": ["running", "finished"], "Second": ["running", "finished"]}
    unpack_records(tmp_path)  # each layer's record a file of its own (not a line of a record pack)
    for layer in ("First", "Second"):  # its record does not carry a second copy
        assert "ran" not in json.loads((tmp_path / layout.record("Far", execution.id, layer)).read_bytes())
    assert execution.status == "succeeded"


def test_the_status_writer_wakes_only_for_a_record_due_before_it_would_wake(tmp_path: Path) -> None:
    """A chain's quick layers each put a "running" record that is never written: the writer thread
    wakes for the first, not once a layer (a wake-up costs the event loop what a small write does),
    and still for a record due sooner than it would wake by itself."""
    from laminar._plugins import run_records as status_plugin
    from laminar._storage.records import LayerStatusRecord

    store = Far(datastore=datastores.Local(tmp_path), executor=executors.Thread()).configuration.store(
        "Far", "x"
    )
    writer = status_plugin._Writer(store)
    waits: list[float | None] = []

    class Counting(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return super().wait(timeout)

    writer._changed = Counting(writer._lock)  # (the lock the writer holds its state with)

    def running(layer: str) -> LayerStatusRecord:
        return LayerStatusRecord("Far", "x", layer, "running", time.time())

    writer.put(running("L0"), after=60.0)
    deadline = time.monotonic() + 30
    while writer._wakes is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with writer._changed:  # held: the thread is inside its wait
        before = len(waits)
    assert before >= 1 and waits[-1] is not None  # asleep until L0's record is due
    for number in range(1, 20):
        writer.put(running(f"L{number}"), after=60.0)
    time.sleep(0.2)
    with writer._changed:
        assert len(waits) == before  # none of the later records woke it
    writer.put(running("Soon"), after=0.01)  # due before the thread would wake: it is told
    soon = tmp_path / layout.layer_status("Far", "x", "Soon")
    deadline = time.monotonic() + 10
    while not soon.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert soon.exists()
    writer.close()  # and each is still written when the execution ends
    for number in range(20):
        assert (
            json.loads((tmp_path / layout.layer_status("Far", "x", f"L{number}")).read_text())["status"]
            == "running"
        )


class Slowly(Flow): ...


@Slowly.register
class Slow(Layer):
    """Runs until its own layer record says "running" (or 30 s pass), and keeps what it saw."""

    def __call__(self) -> None:
        path = Path(os.environ["SLOW_STATUS"])
        deadline = time.monotonic() + 30
        self.seen = None
        while time.monotonic() < deadline:
            if path.exists():
                self.seen = json.loads(path.read_text())["status"]
                break
            time.sleep(0.01)


@pytest.mark.parametrize("datastore_class", [datastores.Local, FarLocal], ids=["local", "object-store"])
def test_a_layer_still_running_after_the_delay_reads_as_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datastore_class: type[datastores.Local]
) -> None:
    from laminar._plugins import run_records as status_plugin

    monkeypatch.setattr(status_plugin, "RUNNING_AFTER", 0.05)
    monkeypatch.setenv("SLOW_STATUS", str(tmp_path / layout.layer_status("Slowly", "slow", "Slow")))
    execution = Slowly(datastore=datastore_class(tmp_path), executor=executors.Thread())(execution="slow")
    assert execution.layer(Slow).seen == "running"
    assert execution.status.layers["Slow"].status == "finished"


class SlowRunningRecord(datastores.Local):
    """A Local datastore on which writing a layer's "running" record takes a while."""

    started = threading.Event()

    def write_bytes(self, key: str, data: bytes) -> None:
        if "/layers/" in key and key.endswith("/status.json") and json.loads(data)["status"] == "running":
            self.started.set()
            time.sleep(0.3)  # the layer ends, and its final record comes, while this one is written
        super().write_bytes(key, data)


class Overtaken(Flow): ...


@Overtaken.register
class Quick(Layer):
    def __call__(self) -> None:
        assert SlowRunningRecord.started.wait(30), "the running record was never written"


def test_a_layer_s_final_record_waits_for_its_running_record_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._plugins import run_records as status_plugin

    monkeypatch.setattr(status_plugin, "RUNNING_AFTER", 0.01)
    SlowRunningRecord.started.clear()
    Overtaken(datastore=SlowRunningRecord(tmp_path), executor=executors.Thread())(execution="quick")
    record = json.loads((tmp_path / layout.layer_status("Overtaken", "quick", "Quick")).read_text())
    assert record["status"] == "finished"  # not overwritten by the older "running" record
