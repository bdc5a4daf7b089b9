"""Nothing lost, nothing run twice: crash points, one scheduler per execution, interrupts, workers
that never start runs, and names that stay inside the datastore (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import lines, unpack_records
from laminar import Flow, Layer
from laminar.configurations import datastores, executors
from laminar.errors import InvalidName

# ---- the crash-point flow: parameters, a foreach and a join, on a datastore that dies on cue -------
CRASHABLE = textwrap.dedent(
    """
    import json, os, random, sys, threading

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter


    class Crashing(datastores.Local):
        '''Counts its writes in this process and exits at once at write CRASH_AT (before or after it).'''

        count = 0
        counting = threading.Lock()  # writes come from several threads (layer records, statuses)

        def _tick(self, when, number):
            if os.environ.get("CRASH_WHEN") == when and number == int(os.environ.get("CRASH_AT", "0")):
                os._exit(3)

        def _write(self, write, *args):
            with Crashing.counting:
                Crashing.count += 1
                number = Crashing.count
            self._tick("before", number)
            result = write(*args)
            self._tick("after", number)
            return result

        def write_bytes(self, key, data):
            return self._write(super().write_bytes, key, data)

        def write_file(self, key, path):
            return self._write(super().write_file, key, path)

        def create(self, key, data):
            return self._write(super().create, key, data)


    class Crash(Flow): ...


    @Crash.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=list(range(parameters.n)))
            self.big = random.Random(0).randbytes(5000)  # incompressible: stored under artifacts/, not inline


    @Crash.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Double(Layer):
        def __call__(self, items: Items) -> None:
            self.value = items.item * 2


    @Crash.register
    class Join(Layer):
        def __call__(self, double: Double, items: Items) -> None:
            self.total = sum(double.value)
            self.size = len(items.big)


    if __name__ == "__main__":
        flow = Crash(datastore=Crashing(sys.argv[2]), executor=executors.Thread(concurrency=2))
        if sys.argv[1] == "run":
            flow(execution="crash", n=6)
        elif sys.argv[1] == "resume":
            execution = flow.execution("crash")
            if os.path.exists(os.path.join(sys.argv[2], "flows/Crash/executions/crash/execution.json")):
                execution.resume()
            else:  # killed before the execution existed: it is run again, as a user would
                flow(execution="crash", n=6)
        execution = flow.execution("crash")
        join = execution.layer(Join)
        print(json.dumps({
            "writes": Crashing.count,
            "total": join.total,
            "size": join.size,
            "values": list(execution.layer(Double).value),
            "n": execution.layer(Parameters).n,
        }))
    """
)
EXPECTED = {"total": 30, "size": 5000, "values": [0, 2, 4, 6, 8, 10], "n": 6}


def crash_script(
    tmp_path: Path, action: str, store: Path, at: int = 0, when: str = ""
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "crashable.py"
    if not script.exists():
        script.write_text(CRASHABLE)
    return subprocess.run(
        [sys.executable, str(script), action, str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CRASH_AT": str(at), "CRASH_WHEN": when},
    )


def finished(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_a_kill_at_any_write_of_a_run_or_a_resume_is_resumed_to_the_same_results(tmp_path: Path) -> None:
    writes = int(finished(crash_script(tmp_path, "run", tmp_path / "clean"))["writes"])  # type: ignore[call-overload]
    assert writes >= 8, "the flow writes too little to exercise the crash points"
    middle = None
    killed = 0
    for at in range(1, writes + 1):
        for when in ("before", "after"):
            store = tmp_path / f"run-{at}-{when}"
            killed += _killed_at(crash_script(tmp_path, "run", store, at, when), at)
            if at == writes // 2 and when == "after":
                middle = _copy(store, tmp_path / "middle")  # as the kill left it, for the resume kills
            result = finished(crash_script(tmp_path, "resume", store))
            assert {k: result[k] for k in EXPECTED} == EXPECTED, (at, when)
    assert killed >= 2 * writes - 4, f"only {killed} of {2 * writes} runs died at their write"
    # now kill each write of a resume, then resume again
    assert middle is not None
    resume_writes = int(
        finished(crash_script(tmp_path, "resume", _copy(middle, tmp_path / "probe")))["writes"]
    )  # type: ignore[call-overload]
    assert resume_writes >= 3
    killed = 0
    for at in range(1, resume_writes + 1):
        for when in ("before", "after"):
            store = _copy(middle, tmp_path / f"resume-{at}-{when}")
            killed += _killed_at(crash_script(tmp_path, "resume", store, at, when), at)
            result = finished(crash_script(tmp_path, "resume", store))
            assert {k: result[k] for k in EXPECTED} == EXPECTED, ("resume", at, when)
    assert killed >= 2 * resume_writes - 4, (
        f"only {killed} of {2 * resume_writes} resumes died at their write"
    )


def _killed_at(run: subprocess.CompletedProcess[str], at: int) -> int:
    """1 if ``run`` died at its write ``at``; 0 if it made fewer writes than that and finished (how many
    a run makes depends a little on timing: a layer still running after ``RUNNING_AFTER`` writes a
    status record more, and a loaded machine slows a layer past it)."""
    if run.returncode == 3:
        return 1
    made = int(finished(run)["writes"])  # type: ignore[call-overload]
    assert made < at, f"the run made {made} writes and was not killed at write {at}: {run.stderr}"
    return 0


def _copy(source: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(source, destination)
    return destination


def test_a_resume_never_writes_the_parameters_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    crashed = crash_script(tmp_path, "run", store, 5, "after")
    assert crashed.returncode == 3
    record = store / "flows/Crash/executions/crash/layers/Parameters/record.json"
    before = record.read_bytes()
    mtime = record.stat().st_mtime_ns
    finished(crash_script(tmp_path, "resume", store))
    assert record.read_bytes() == before and record.stat().st_mtime_ns == mtime


# ---- one scheduler per execution ---------------------------------------------------------------------
RACE = textwrap.dedent(
    """
    import os, sys, time

    from laminar import Flow, Layer
    from laminar.configurations import datastores, executors


    class Raced(Flow): ...


    @Raced.register
    class Slow(Layer):
        def __call__(self) -> None:
            with open(os.environ["RUNS"], "a") as file:
                file.write(f"{os.getpid()}\\n")
            if os.environ.get("FAIL_FIRST") and not os.path.exists(os.environ["FAIL_FIRST"]):
                open(os.environ["FAIL_FIRST"], "w").close()
                raise RuntimeError("first attempt fails")
            time.sleep(float(os.environ.get("SLEEP", "1.5")))
            if os.environ.get("RELEASE"):  # held until the test lets it end
                deadline = time.monotonic() + 60
                while not os.path.exists(os.environ["RELEASE"]) and time.monotonic() < deadline:
                    time.sleep(0.02)
            self.done = True


    if __name__ == "__main__":
        where = sys.argv[2] if "://" in sys.argv[2] else datastores.Local(sys.argv[2])
        flow = Raced(datastore=where, executor=executors.Thread())
        if sys.argv[1] == "run":
            flow(execution="raced")
        else:
            flow.execution("raced").resume()
        print("FINISHED", os.getpid())
    """
)


def race_script(tmp_path: Path, action: str, store: str | None = None, **env: str) -> subprocess.Popen[str]:
    script = tmp_path / "raced.py"
    if not script.exists():
        script.write_text(RACE)
    return subprocess.Popen(
        [sys.executable, str(script), action, store or str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUNS": str(tmp_path / "runs"), **env},
    )


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("local"),
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("gcs", marks=pytest.mark.gcs),  # no atomic create on the emulator: read back
        pytest.param("azure", marks=pytest.mark.azure),
    ],
)
def test_two_resumes_racing_run_the_execution_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = None if backend == "local" else request.getfixturevalue(f"{backend}_location")
    failed = race_script(tmp_path, "run", store, FAIL_FIRST=str(tmp_path / "failed-once"))
    assert failed.wait(60) != 0
    racers = [race_script(tmp_path, "resume", store) for _ in range(2)]
    outcomes = [(racer.wait(60), *racer.communicate()) for racer in racers]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    refused = next(err for code, _, err in outcomes if code != 0)
    winner = next(out for code, out, _ in outcomes if code == 0).split()[1]
    assert "is being run by another scheduler" in refused
    assert f"pid {winner} on {socket.gethostname()}" in refused
    assert len(lines(tmp_path / "runs")) == 2  # the failed first attempt, and one resume


def test_a_killed_schedulers_lease_is_taken_over_at_once_on_the_same_host(tmp_path: Path) -> None:
    first = race_script(tmp_path, "run", SLEEP="30")
    deadline = time.monotonic() + 30
    while not lines(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    started = time.monotonic()
    resumed = race_script(tmp_path, "resume", SLEEP="0")
    assert resumed.wait(60) == 0, resumed.communicate()
    assert time.monotonic() - started < 25  # not after the 30 s time to live


def _plant_lease(store: Path, host: str, heartbeat: float, ttl: float = 30.0) -> None:
    leases = store / "flows/Raced/executions/raced/leases"
    generation = max((int(p.stem) for p in leases.glob("*.json")), default=0) + 1
    holder = {"layout": 2, "generation": generation, "host": host, "pid": 1, "since": heartbeat,
              "heartbeat": heartbeat, "ttl": ttl, "released": False}  # fmt: skip
    (leases / f"{generation:010d}.json").write_text(json.dumps(holder))


def test_a_live_holder_on_another_host_is_named_and_a_silent_one_taken_over(tmp_path: Path) -> None:
    failed = race_script(tmp_path, "run", FAIL_FIRST=str(tmp_path / "failed-once"), SLEEP="0")
    assert failed.wait(60) != 0
    _plant_lease(tmp_path / "store", "elsewhere.example", time.time())
    refused = race_script(tmp_path, "resume", SLEEP="0")
    assert refused.wait(60) != 0
    assert "is being run by another scheduler (pid 1 on elsewhere.example, since" in refused.communicate()[1]
    _plant_lease(tmp_path / "store", "elsewhere.example", time.time() - 120)  # silent for two minutes
    resumed = race_script(tmp_path, "resume", SLEEP="0")
    assert resumed.wait(60) == 0, resumed.communicate()


def test_the_holder_keeps_its_lease_fresh_while_it_runs(tmp_path: Path) -> None:
    # The run holds its layer until the second scheduler was turned away (not for a fixed time,
    # which a loaded machine's slow start of the second could outlast); a time to live of 1 s, not
    # less, so a heartbeat (every third of it) late on a loaded machine is not taken for a dead one.
    release = tmp_path / "release"
    env = {"LAMINAR_LEASE_TTL": "1.0", "SLEEP": "0"}
    running = race_script(tmp_path, "run", RELEASE=str(release), **env)
    deadline = time.monotonic() + 30
    while not lines(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.5)  # more than twice the time to live: only heartbeats keep it held
    second = race_script(tmp_path, "resume", **env)
    try:
        assert second.wait(60) != 0
        assert "is being run by another scheduler" in second.communicate()[1]
    finally:
        release.touch()
    assert running.wait(60) == 0
    leases = sorted((tmp_path / "store/flows/Raced/executions/raced/leases").glob("*.json"))
    assert json.loads(leases[0].read_text())["released"] is True


# ---- interrupts --------------------------------------------------------------------------------------
INTERRUPTIBLE = textwrap.dedent(
    """
    import os, sys, time

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter


    class Stoppable(Flow): ...


    @Stoppable.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(item=list(range(40)))


    @Stoppable.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Work(Layer):
        def __call__(self, items: Items) -> None:
            time.sleep(0.1)
            self.value = items.item
            with open(os.environ["RUNS"], "a") as file:
                file.write(f"{items.item}\\n")


    chosen = executors.Thread(concurrency=2) if sys.argv[3] == "thread" else executors.Process(concurrency=2)
    if flow := Stoppable(datastore=datastores.Local(sys.argv[2]), executor=chosen):
        if sys.argv[1] == "run":
            flow(execution="stopped")
        else:
            execution = flow.execution("stopped").resume()
            print("SUM", sum(execution.layer(Work).value))
    """
)


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_new_work_keeps_what_finished_and_resume_completes(
    tmp_path: Path, executor: str, number: int
) -> None:
    script = tmp_path / "stoppable.py"
    script.write_text(INTERRUPTIBLE)
    env = {**os.environ, "RUNS": str(tmp_path / "runs")}
    command = [sys.executable, str(script), "run", str(tmp_path / "store"), executor]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while len(lines(tmp_path / "runs")) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    running.send_signal(number)
    _, stderr = running.communicate(timeout=60)
    name = signal.Signals(number).name
    assert running.returncode != 0
    assert (
        f"was stopped by {name}; what finished is kept. Resume it with flow.execution('stopped').resume()"
        in stderr
    )
    assert "InvalidStateError" not in stderr
    ran_before = [int(line) for line in lines(tmp_path / "runs")]
    assert 6 <= len(ran_before) < 40, "the run was not stopped part way"
    command[2] = "resume"
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "SUM 780" in resumed.stdout
    ran = [int(line) for line in lines(tmp_path / "runs")]
    assert sorted(ran) == list(range(40))  # every split ran exactly once: none lost, none again


# ---- workers never start runs ------------------------------------------------------------------------
@pytest.mark.parametrize("executor", ["process", pytest.param("dask", marks=pytest.mark.dask)])
def test_a_flow_called_outside_the_guard_never_runs_again_in_a_worker(tmp_path: Path, executor: str) -> None:
    """The module calls ``flow()`` at import; the workers import it to run its layers (spawned ones:
    a worker forked from the scheduler imports nothing, see test_process_template.py)."""
    chosen = (
        "executors.Process(start_method='spawn')"
        if executor == "process"
        else "os.environ.get('DASK_ADDRESS', 'thread')"
    )
    (tmp_path / "pipeline.py").write_text(
        textwrap.dedent(
            f"""
            import os, sys

            from laminar import Flow, Layer
            from laminar.configurations import datastores, executors


            class Unguarded(Flow): ...


            @Unguarded.register
            class A(Layer):
                def __call__(self) -> None:
                    self.x = 1


            flow = Unguarded(datastore=datastores.Local(sys.argv[1]), executor={chosen})
            flow()  # outside `if flow := Unguarded():`
            """
        )
    )
    if executor == "process":
        (tmp_path / "main.py").write_text("import pipeline\n")
    else:  # a cluster whose worker processes can import the module, as a deployed one would
        (tmp_path / "main.py").write_text(
            textwrap.dedent(
                """
                import os

                if __name__ == "__main__":
                    from distributed import LocalCluster

                    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
                    os.environ["DASK_ADDRESS"] = "dask://" + cluster.scheduler_address.removeprefix("tcp://")
                    try:
                        import pipeline  # noqa: F401
                    finally:
                        cluster.close()
                """
            )
        )
    result = subprocess.run(
        [sys.executable, "main.py", str(tmp_path / "store")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "Unguarded() was called in a process that runs layer splits" in result.stderr
    assert "`if flow := Unguarded(): flow()`" in result.stderr
    assert len(list((tmp_path / "store/flows/Unguarded/executions").iterdir())) == 1  # only the one run


def test_a_flow_called_in_a_laminar_split_process_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Inside(Flow): ...

    monkeypatch.setenv("LAMINAR_LAYER_NAME", "Somewhere")
    monkeypatch.setenv("LAMINAR_FLOW_NAME", "AnotherFlow")
    flow = Inside(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(Exception, match="called in a process that runs layer splits"):
        flow()
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---- names and listings ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CON", "nul", "Com1", "LPT9.txt", "aux.tar.gz"])
def test_windows_device_names_are_refused(tmp_path: Path, name: str) -> None:
    class Devices(Flow): ...

    flow = Devices(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(
        InvalidName, match=f"execution id '{name}' cannot be used as a storage name: Windows and SMB shares"
    ):
        flow(execution=name)
    assert not (tmp_path / "flows").exists()


def test_a_rejected_long_name_is_quoted_short(tmp_path: Path) -> None:
    class Long(Flow): ...

    flow = Long(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(InvalidName) as error:
        flow(execution="x/" + "y" * 10_000)
    message = str(error.value)
    assert len(message) < 400 and "(10002 characters)" in message


def test_entries_that_are_not_laminars_are_skipped_in_listings(tmp_path: Path) -> None:
    class Listed(Flow): ...

    @Listed.register
    class A(Layer):
        def __call__(self) -> None:
            self.x = 1

    flow = Listed(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(execution="real")
    executions = tmp_path / "flows/Listed/executions"
    (executions / ".DS_Store").write_text("finder")
    (executions / "notes.txt~").mkdir()
    assert flow.configuration.datastore.list_executions(flow=flow) == [execution]


# ---- resume checks what it skips -----------------------------------------------------------------------
@pytest.mark.parametrize("damaged", ["layers/A/record.json", "layers/B/splits/0-2.json"])
def test_resume_runs_again_a_layer_whose_stored_output_is_damaged(tmp_path: Path, damaged: str) -> None:
    from laminar.configurations.layers import ForEach, Parameter

    ran: list[str] = []

    class Checked(Flow): ...

    @Checked.register
    class A(Layer):
        def __call__(self) -> None:
            ran.append("A")
            self.shard(item=[1, 2, 3])

    @Checked.register(foreach=ForEach(parameters=[Parameter(layer=A, attribute="item")]))
    class B(Layer):
        def __call__(self, a: A) -> None:
            ran.append(f"B{self.index}")
            self.value = a.item * 10

    @Checked.register
    class C(Layer):
        def __call__(self, b: B) -> None:
            ran.append("C")
            if not (tmp_path / "let-c-pass").exists():
                raise RuntimeError("C fails the first time")
            self.total = sum(b.value)

    flow = Checked(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread(concurrency=1))
    with pytest.raises(RuntimeError):
        flow(execution="checked")
    assert sorted(ran) == ["A", "B0", "B1", "B2", "C"]
    unpack_records(tmp_path / "store")  # each layer's record a file of its own (not a line of a record pack)
    (tmp_path / "store/flows/Checked/executions/checked" / damaged).write_bytes(b"\x00garbage")
    (tmp_path / "let-c-pass").touch()
    ran.clear()
    fresh = Checked(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread(concurrency=1))
    execution = fresh.execution("checked").resume()
    assert execution.layer(C).total == 60
    rerun = ["A", "C"] if damaged.startswith("layers/A") else ["B0", "B1", "B2", "C"]  # only what was damaged
    assert sorted(ran) == rerun


def test_a_stopped_scheduler_of_this_process_does_not_hold_its_lease(tmp_path: Path) -> None:
    """A run whose lease release failed (its storage stopped answering) can be resumed at once here."""

    class FailsRelease(datastores.Local):
        def write_bytes(self, key: str, data: bytes) -> None:
            if "/leases/" in key and b'"released":true' in data:
                raise OSError("the store stopped answering")
            super().write_bytes(key, data)

    class Released(Flow): ...

    @Released.register
    class A(Layer):
        def __call__(self) -> None:
            self.x = 1

    flow = Released(datastore=FailsRelease(tmp_path), executor=executors.Thread())
    flow(execution="unreleased")
    leases = sorted((tmp_path / "flows/Released/executions/unreleased/leases").glob("*.json"))
    assert json.loads(leases[-1].read_text())["released"] is False  # the release really failed
    assert flow.execution("unreleased").resume().layer(A).x == 1  # not "being run by another scheduler"


def test_racing_leases_on_a_store_without_an_atomic_create_have_one_holder(tmp_path: Path) -> None:
    """Ask-then-write lets both racers "create" the lease; reading it back after a pause keeps one."""
    import threading

    from laminar._storage.lease import Lease  # internal: the lease itself, without a flow around it
    from laminar.errors import LeaseHeld

    barrier = threading.Barrier(2)

    class AskThenWrite(datastores.Local):
        atomic_create = False

        def create(self, key: str, data: bytes) -> bool:
            there = self.exists(key)
            barrier.wait()  # both have asked before either writes
            if there:
                return False
            self.write_bytes(key, data)
            return True

    store = AskThenWrite(tmp_path)
    outcomes: list[str] = []

    def take() -> None:
        try:
            Lease(store, "Raced", "raced").acquire()
            outcomes.append("held")
        except LeaseHeld as error:
            outcomes.append("refused" if "is being run by another scheduler" in str(error) else str(error))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["held", "refused"]
