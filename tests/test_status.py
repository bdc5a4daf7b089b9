"""Every run tells how it went: ``execution.status`` from any process, a killed scheduler's run reading
as failed, and the lifecycle events (layer started, skipped, split retried) that plugins receive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import lines
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import ExecutionNotFound
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


def test_a_split_that_fails_after_its_retries_reads_as_failed_with_its_error(tmp_path: Path) -> None:
    assert script(tmp_path, "run", FAIL="2").returncode != 0
    status = read_status(tmp_path)
    assert status["status"] == "failed"
    error = status["error"]
    assert error["type"] == "ValueError" and error["message"] == "item 2 is broken"
    assert "ValueError: item 2 is broken" in error["traceback"]
    assert "Traceback in worker process" in error["traceback"]  # the layer's own frames, from its worker
    assert lines(tmp_path / "runs").count("2") == 2  # both attempts ran


def test_a_killed_scheduler_reads_as_failed_not_running(tmp_path: Path) -> None:
    path = tmp_path / "told.py"
    path.write_text(SCRIPT)
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "SLEEP": "30"}
    running = subprocess.Popen([sys.executable, str(path), "run", str(tmp_path / "store")], env=env)
    deadline = time.monotonic() + 60
    while not lines(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_status(tmp_path)["status"] == "running"  # from another process, while it runs
    running.send_signal(signal.SIGKILL)
    running.wait(10)
    status = read_status(tmp_path)
    assert status["status"] == "failed"
    assert status["error"]["type"] == "SchedulerLost"
    assert "stopped without finishing" in status["error"]["message"]
    assert "flow.execution('told').resume()" in status["error"]["message"]


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
    with pytest.raises(AttributeError, match="execution typo of flow Absent does not exist"):
        flow.execution("typo").layer(A).foo  # noqa: B018
    assert flow().status == "succeeded"


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    @hookimpl
    def laminar_layer_started(self, layer: Layer) -> None:
        self.seen.append(("started", layer.name))

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
