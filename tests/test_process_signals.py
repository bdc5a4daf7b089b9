"""Ctrl-C as a terminal delivers it: SIGINT to the whole foreground process group, not just the scheduler.

On every executor the scheduler alone decides what a signal does: nothing new starts, the splits
running finish and are kept, the run ends ``Interrupted`` and resumes. Worker processes must not
take the terminal's signal themselves (before: the Process executor's workers raised
``KeyboardInterrupt`` in the running splits, recorded as their failed attempts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.testing import ExecutorConformance

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter


    class Stoppable(Flow): ...


    @Stoppable.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=list(range(6)))


    @Stoppable.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Work(Layer):
        \"\"\"Says it started, then waits for the test to let it finish (bounded).\"\"\"

        def __call__(self, items: Items) -> None:
            marks = Path(os.environ["MARKS"])
            with open(marks / "started", "a") as file:
                file.write(f"{items.item}\\n")
            with open(marks / "pids", "a") as file:
                file.write(f"{os.getpid()}\\n")
            ends = time.monotonic() + 60
            while not (marks / "release").exists() and time.monotonic() < ends:
                time.sleep(0.01)
            self.value = items.item


    @Stoppable.register
    class Total(Layer):
        def __call__(self, work: Work) -> None:
            self.total = sum(work.value)


    chosen = executors.Thread if os.environ["EXECUTOR"] == "thread" else executors.Process
    if flow := Stoppable(datastore=datastores.Local(os.environ["STORE"]), executor=chosen(concurrency=2)):
        if sys.argv[1:] == ["run"]:
            flow(execution="stopped")
        elif sys.argv[1:] == ["resume"]:
            print("TOTAL", flow.execution("stopped").resume().layer(Total).total)
        else:
            layer = flow.execution("stopped").status.layers["Work"]
            print(json.dumps({
                str(index): [a.error["type"] if a.error else None for a in attempts]
                for index, attempts in layer.attempts.items()
            }))
    """
)


def _started(marks: Path) -> list[int]:
    path = marks / "started"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_for_splits(marks: Path, count: int) -> None:
    ends = time.monotonic() + 60
    while len(_started(marks)) < count:
        assert time.monotonic() < ends, f"only splits {_started(marks)} started"
        time.sleep(0.02)


def _read_until(stream: IO[str], text: str, seen: list[str]) -> None:
    """Read ``stream`` line by line into ``seen`` until a line holds ``text`` (or it ends)."""
    for line in stream:
        seen.append(line)
        if text in line:
            return


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("how", ["script", "laminar run"])
def test_ctrl_c_to_the_process_group_lets_running_splits_finish_and_the_run_resume(
    tmp_path: Path, executor: str, how: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "stoppable.py"
    script.write_text(SCRIPT)
    store = tmp_path / "store"
    env = {**os.environ, "MARKS": str(marks), "STORE": str(store), "EXECUTOR": executor}
    laminar = str(Path(sys.executable).with_name("laminar"))  # the file's flow: its store and executor
    if how == "script":
        command = [sys.executable, str(script), "run"]
    else:
        command = [laminar, "run", str(script), "--execution", "stopped"]
    running = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        _wait_for_splits(marks, 2)
        running_splits = _started(marks)
        os.killpg(running.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group
        stderr: list[str] = []
        assert running.stderr is not None
        _read_until(running.stderr, "starts nothing new", stderr)
        (marks / "release").touch()  # the splits running finish only once the scheduler has stopped
        _, rest = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
            running.wait()
    shown = "".join(stderr) + rest
    assert running.returncode != 0, shown
    assert "stopped by SIGINT" in shown, shown
    assert "KeyboardInterrupt" not in shown, shown
    assert _started(marks) == running_splits, "a split started after the signal"

    status = subprocess.run(
        [sys.executable, str(script), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    attempts: dict[str, list[Any]] = json.loads(status.stdout)
    # The splits running at the signal finished: one attempt each, no error (no KeyboardInterrupt).
    assert attempts == {str(index): [None] for index in running_splits}, attempts

    if how == "script":
        resumed = subprocess.run(
            [sys.executable, str(script), "resume"], env=env, capture_output=True, text=True, timeout=120
        )
    else:
        resumed = subprocess.run(
            [laminar, "resume", str(script), "stopped"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert resumed.returncode == 0, resumed.stderr
    # Every split ran once: those finished before the signal were kept, not run again.
    assert sorted(_started(marks)) == list(range(6))
    if how == "script":
        assert "TOTAL 15" in resumed.stdout


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_stops_the_running_splits_and_their_workers(tmp_path: Path) -> None:
    """Workers no longer take Ctrl-C themselves: a second one has the scheduler kill them."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "stoppable.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MARKS": str(marks), "STORE": str(tmp_path / "store"), "EXECUTOR": "process"}
    running = subprocess.Popen(
        [sys.executable, str(script), "run"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_splits(marks, 2)
        os.killpg(running.pid, signal.SIGINT)
        seen: list[str] = []
        assert running.stderr is not None
        _read_until(running.stderr, "starts nothing new", seen)
        os.killpg(running.pid, signal.SIGINT)  # the splits never finish by themselves (60 s)
        _, rest = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
            running.wait()
    shown = "".join(seen) + rest
    assert running.returncode != 0 and "stopping execution stopped now" in shown, shown
    workers = {int(pid) for pid in (marks / "pids").read_text().split()}
    assert workers and os.getpid() not in workers
    ends = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < ends:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the second Ctrl-C"


@pytest.mark.dask
@pytest.mark.timeout(300)
def test_ctrl_c_reaches_only_the_scheduler_of_a_local_dask_cluster(tmp_path: Path) -> None:
    """``Dask()`` starts a LocalCluster whose worker processes are in the terminal's job too."""
    from laminar_dask import Dask

    ExecutorConformance().test_ctrl_c_reaches_the_scheduler_only_and_running_splits_finish(
        lambda **options: Dask(n_workers=2, threads_per_worker=1, **options),
        datastores.Local(tmp_path / "store"),
        tmp_path,
    )


class Spawning(Flow):
    """A layer that starts a process of its own, then outlives its executor's timeout."""


@Spawning.register
class Spawns(Layer):
    def __call__(self, parameters: Parameters) -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(parameters.pid_file).write_text(str(child.pid))
        time.sleep(120)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.timeout(120)
def test_a_worker_killed_at_its_timeout_takes_the_processes_its_layer_started_with_it(tmp_path: Path) -> None:
    """Workers run in a session of their own, out of the terminal's reach, so their kill ends it all."""
    pid_file = tmp_path / "child.pid"
    flow = Spawning(datastore=datastores.Local(tmp_path / "store"), executor=executors.Process(timeout=3))
    with pytest.raises(TimeoutError, match="timeout of 3 s"):
        flow(pid_file=str(pid_file))
    child = int(pid_file.read_text())
    ends = time.monotonic() + 30
    while _alive(child) and time.monotonic() < ends:  # SIGKILL is delivered at once, reaped soon after
        time.sleep(0.05)
    assert not _alive(child), f"the layer's process {child} outlived its killed worker"
