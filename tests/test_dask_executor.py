"""The Dask executor (laminar-dask) on a real ``distributed.LocalCluster`` with several worker processes:
where splits run, worker loss, timeouts, resources from ``Container``, configuration from URLs.

No mocks: every test runs splits as Dask tasks on worker processes. Flows are defined inside the
test functions, so cloudpickle ships them to the workers by value.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import pytest
from dask_cluster import local_cluster
from distributed import Client
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors, hooks
from laminar.configurations.layers import Catch, Container, ForEach, Parameter, Retry
from laminar.errors import ConfigurationError, WorkerLost
from laminar.types import unwrap
from laminar_dask import Dask

pytestmark = pytest.mark.dask


def wait_for_peers(directory: Path, least: int = 2, patience: float = 60) -> None:
    """Block until ``least`` distinct processes reached this point (a barrier across workers).

    While one worker's only thread waits here, the Dask scheduler must hand the next split to another
    worker, so a foreach provably spreads over several workers. Gives up after ``patience`` seconds
    (the assertions then report what was seen).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / str(os.getpid())).touch()
    deadline = time.monotonic() + patience
    while len(list(directory.iterdir())) < least and time.monotonic() < deadline:
        time.sleep(0.01)


def spread_flow(barrier: Path) -> tuple[type[Flow], type[Layer], type[Layer]]:
    class Spread(Flow): ...

    @Spread.register
    class A(Layer):
        def __call__(self) -> None:
            self.shard(x=range(8))

    @Spread.register(foreach=ForEach(parameters=[Parameter(layer=A, attribute="x")]))
    class B(Layer):
        def __call__(self, a: A) -> None:
            import distributed

            wait_for_peers(barrier)
            self.y = a.x * 2
            self.pid = os.getpid()
            self.worker = distributed.get_worker().address

    @Spread.register
    class C(Layer):
        def __call__(self, b: B) -> None:
            self.total = sum(b.y)
            self.pids = sorted(set(b.pid))

    return Spread, B, C


# ---- where splits run ---------------------------------------------------------------------------


def test_foreach_runs_on_several_workers_with_local_datastore(tmp_path: Path, address: str) -> None:
    Spread, B, C = spread_flow(tmp_path / "barrier")
    execution = Spread(datastore=datastores.Local(tmp_path / "store"), executor=Dask(address))()
    b = execution.layer(B)
    assert list(b.y) == [x * 2 for x in range(8)]
    assert execution.layer(C).total == 56
    pids, workers = set(b.pid), set(b.worker)
    assert len(pids) > 1 and len(workers) > 1, (pids, workers)
    assert os.getpid() not in pids
    assert workers <= {f"{w}" for w in worker_addresses(address)}


def worker_addresses(address: str) -> list[str]:
    with Client(address) as client:
        return list(client.scheduler_info()["workers"])


def test_foreach_on_several_workers_with_s3_emulator(tmp_path: Path, address: str, request: Any) -> None:
    from laminar_s3 import S3

    # The worker processes were started before the emulator's environment was set: the datastore
    # carries the endpoint and the credentials to them, as it would to a remote cluster.
    service = request.getfixturevalue("s3_service")
    location: str = request.getfixturevalue("s3_location")
    env = service.env

    def datastore() -> S3:
        return S3(
            location,
            endpoint_url=service.endpoint,
            key=env.get("AWS_ACCESS_KEY_ID"),
            secret=env.get("AWS_SECRET_ACCESS_KEY"),
            region=env.get("AWS_DEFAULT_REGION"),
        )

    Spread, B, C = spread_flow(tmp_path / "barrier")
    execution = Spread(datastore=datastore(), executor=f"dask://{address.removeprefix('tcp://')}")()
    assert execution.layer(C).total == 56
    b = execution.layer(B)
    assert list(b.y) == [x * 2 for x in range(8)]
    assert len(set(b.pid)) > 1 and len(set(b.worker)) > 1, (set(b.pid), set(b.worker))
    assert os.getpid() not in set(b.pid)
    # read back through a fresh flow and datastore: the results live in the bucket
    again = Spread(datastore=datastore(), executor="thread").execution(execution.id)
    assert again.layer(C).pids == sorted(set(b.pid))


def installed_flows() -> tuple[int, int]:
    # laminar_dask's worker-side registry of shipped flows: internal, and what the next test checks.
    from laminar_dask import worker

    return len(worker._FLOWS.installed()), len(worker._FLOWS.unpacked())


def test_flow_is_installed_once_per_worker_and_removed_after(tmp_path: Path, address: str) -> None:
    class Installed(Flow): ...

    @Installed.register
    class A(Layer):
        def __call__(self) -> None:
            self.shard(x=range(6))

    @Installed.register(foreach=ForEach(parameters=[Parameter(layer=A, attribute="x")]))
    class B(Layer):
        def __call__(self, a: A) -> None:
            from laminar_dask import worker

            self.tokens = sorted(worker._FLOWS.unpacked())
            self.flow_id = id(next(iter(worker._FLOWS.unpacked().values())))
            self.pid = os.getpid()

    execution = Installed(datastore=datastores.Local(tmp_path), executor=Dask(address))()
    b = execution.layer(B)
    assert len({tuple(tokens) for tokens in b.tokens}) == 1 and len(b.tokens[0]) == 1  # one flow, one token
    flows_per_worker: dict[int, set[int]] = {}
    for pid, flow_id in zip(b.pid, b.flow_id, strict=True):
        flows_per_worker.setdefault(pid, set()).add(flow_id)
    assert all(len(ids) == 1 for ids in flows_per_worker.values())  # each worker unpickled it once
    with Client(address) as client:  # the plugin was unregistered: nothing left on the workers
        assert set(client.run(installed_flows).values()) == {(0, 0)}


# ---- failures -----------------------------------------------------------------------------------


def kill_flow(marks: Path, attempts: int) -> tuple[type[Flow], type[Layer]]:
    class Killing(Flow): ...

    @Killing.register
    class A(Layer):
        def __call__(self) -> None:
            self.shard(x=range(4))

    @Killing.register(
        foreach=ForEach(parameters=[Parameter(layer=A, attribute="x")]),
        retry=Retry(attempts=attempts, delay=0),
    )
    class B(Layer):
        def __call__(self, a: A) -> None:
            if self.index == 0 and self.attempt == 0:
                marks.mkdir(parents=True, exist_ok=True)
                (marks / "killed").write_text(str(os.getpid()))
                os.kill(os.getpid(), 9)  # the worker process dies mid-task
            self.y = a.x + 100
            self.pid = os.getpid()
            self.attempt_seen = self.attempt

    return Killing, B


def test_worker_killed_mid_task_is_retried(tmp_path: Path, address: str) -> None:
    Killing, B = kill_flow(tmp_path / "marks", attempts=2)
    execution = Killing(datastore=datastores.Local(tmp_path / "store"), executor=Dask(address))()
    b = execution.layer(B)
    assert list(b.y) == [100, 101, 102, 103]
    killed = int((tmp_path / "marks" / "killed").read_text())
    assert b.attempt_seen[0] == 1 and b.pid[0] != killed


def test_worker_killed_without_retry_fails_with_worker_lost(tmp_path: Path, address: str) -> None:
    Killing, B = kill_flow(tmp_path / "marks", attempts=1)
    flow = Killing(datastore=datastores.Local(tmp_path / "store"), executor=Dask(address))
    with pytest.raises(WorkerLost, match="Dask worker running layer B") as caught:
        flow()
    assert any("raised by layer B" in note for note in getattr(caught.value, "__notes__", []))
    execution = flow.configuration.datastore.list_executions(flow=flow)[-1]
    assert not execution.layer(B).state.finished


def test_layer_errors_catch_and_retry_behave_as_elsewhere(tmp_path: Path, address: str) -> None:
    class Errors(Flow): ...

    @Errors.register(catch=Catch(ValueError))
    class Caught(Layer):
        def __call__(self) -> None:
            self.before = "kept"
            raise ValueError("absorbed")

    @Errors.register(retry=Retry(attempts=3, delay=0))
    class Flaky(Layer):
        def __call__(self, caught: Caught) -> None:
            if self.attempt < 2:
                raise OSError(f"attempt {self.attempt}")
            self.value = caught.before + f" after {self.attempt}"

    @Errors.register
    class Broken(Layer):
        def __call__(self, flaky: Flaky) -> None:
            raise KeyError("boom")

    flow = Errors(datastore=datastores.Local(tmp_path), executor=Dask(address))
    with pytest.raises(KeyError, match="boom") as caught:
        flow()
    assert any("layer Broken" in note for note in getattr(caught.value, "__notes__", []))
    execution = flow.configuration.datastore.list_executions(flow=flow)[-1]
    assert execution.layer(Caught).state.finished and execution.layer(Caught).before == "kept"
    assert execution.layer(Flaky).value == "kept after 2"


def test_concurrency_caps_splits_in_flight(tmp_path: Path, address: str) -> None:
    lock = tmp_path / "running"

    class Capped(Flow): ...

    @Capped.register
    class A(Layer):
        def __call__(self) -> None:
            self.shard(x=range(6))

    @Capped.register(foreach=ForEach(parameters=[Parameter(layer=A, attribute="x")]))
    class B(Layer):
        def __call__(self, a: A) -> None:
            # O_EXCL: creating the file fails if another split is running at the same time
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            try:
                time.sleep(0.05)
                self.y = a.x
            finally:
                os.close(descriptor)
                os.unlink(lock)

    execution = Capped(
        datastore=datastores.Local(tmp_path / "store"), executor=Dask(address, concurrency=1)
    )()
    assert list(execution.layer(B).y) == list(range(6))


@pytest.mark.parametrize("batch_seconds", ["0", "30"], ids=["single", "batched"])
def test_a_failed_run_starts_none_of_the_tasks_queued_on_the_cluster(
    tmp_path: Path, address: str, batch_seconds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask holds up to ``concurrency`` (1,024) of a run's splits queued: once the run fails, the
    workers are told and start none of them, in a task of its own or a batch's. Those a worker
    starts before it is told are bounded by how late it is told: a loaded machine tells it late
    (210 of 400 started once with the failure at split 100), so the bound is half of 1,000 splits,
    which every split starts when the workers are never told."""
    monkeypatch.setenv("LAMINAR_BATCH_SECONDS", batch_seconds)
    marks = tmp_path / "started"
    marks.mkdir()

    class Failing(Flow): ...

    @Failing.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(x=range(1000))

    @Failing.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="x")]))
    class Slow(Layer):
        def __call__(self, items: Items) -> None:
            (marks / str(items.x)).touch()
            if items.x == 100:  # batches have grown to dozens of splits by then
                raise ValueError("item 100 is broken")
            # Long enough that the splits a worker starts before it is told (a loaded machine tells
            # it late: 0.01 s let 214 start) stay well within the bound below.
            time.sleep(0.04)

    with pytest.raises(ValueError, match="item 100 is broken"):
        Failing(datastore=datastores.Local(tmp_path / "store"), executor=Dask(address))()
    started = len(list(marks.iterdir()))
    assert started < 500, f"{started} of 1,000 splits started on Dask after split 100 failed"


def test_timeout_cancels_the_task_and_fails_the_flow(tmp_path: Path) -> None:
    class Slow(Flow): ...

    @Slow.register
    class Sleeper(Layer):
        def __call__(self) -> None:
            time.sleep(120)

    executor = Dask(n_workers=1, threads_per_worker=1, timeout=1)
    with pytest.raises(TimeoutError, match="timeout of 1 s"):
        Slow(datastore=datastores.Local(tmp_path), executor=executor)()
    assert executor._cluster is None and executor._client is None  # the LocalCluster was closed


# ---- resources ----------------------------------------------------------------------------------


def restrictions_flow() -> tuple[type[Flow], type[Layer]]:
    class Sized(Flow): ...

    @Sized.register(container=Container(cpu=2, memory=3000))
    class Heavy(Layer):
        def __call__(self) -> None:
            import distributed

            worker = distributed.get_worker()
            self.restrictions = dict(
                worker.state.tasks[worker.get_current_task()].resource_restrictions or {}
            )

    return Sized, Heavy


def test_container_becomes_resources_when_workers_declare_them(tmp_path: Path) -> None:
    cluster = local_cluster(n_workers=1, resources={"cpu": 2, "memory": 4000})
    try:
        Sized, Heavy = restrictions_flow()
        flow = Sized(datastore=datastores.Local(tmp_path), executor=Dask(cluster.scheduler_address))
        assert flow().layer(Heavy).restrictions == {"cpu": 2, "memory": 3000}

        # a submission hook sizes each split: each split's task asks for its own memory
        class PerSplit(Flow): ...

        @PerSplit.register
        class Sizes(Layer):
            def __call__(self) -> None:
                self.shard(memory=[1000, 2500, 4000])

        @PerSplit.register(
            foreach=ForEach(parameters=[Parameter(layer=Sizes, attribute="memory")]),
            container=Container(cpu=1, memory=500),
        )
        class Sized2(Layer):
            @hooks.submission
            def size(self, sizes: Sizes) -> None:
                self.configuration.container.memory = sizes.memory[unwrap(self.index)]

            def __call__(self, sizes: Sizes) -> None:
                import distributed

                worker = distributed.get_worker()
                self.restrictions = dict(worker.state.tasks[worker.get_current_task()].resource_restrictions)

        per_split = PerSplit(datastore=datastores.Local(tmp_path), executor=Dask(cluster.scheduler_address))()
        assert list(per_split.layer(Sized2).restrictions) == [
            {"cpu": 1, "memory": 1000},
            {"cpu": 1, "memory": 2500},
            {"cpu": 1, "memory": 4000},
        ]

        Sized.registry["Heavy"].configuration.container = Container(cpu=4, memory=3000)
        with pytest.raises(ConfigurationError, match=r"cpu=4 \(the largest worker declares 2\)"):
            Sized(datastore=datastores.Local(tmp_path), executor=Dask(cluster.scheduler_address))()
    finally:
        cluster.close()


def test_container_is_ignored_when_workers_declare_no_resources(tmp_path: Path, address: str) -> None:
    Sized, Heavy = restrictions_flow()
    execution = Sized(datastore=datastores.Local(tmp_path), executor=Dask(address))()
    assert execution.layer(Heavy).restrictions == {}


# ---- configuration ------------------------------------------------------------------------------


def test_memory_datastore_with_dask_is_refused_before_anything_runs() -> None:
    class Anything(Flow): ...

    @Anything.register
    class A(Layer):
        def __call__(self) -> None:
            self.x = 1

    with pytest.raises(ConfigurationError) as caught:
        Anything(datastore=datastores.Memory(), executor=Dask("tcp://127.0.0.1:1"))
    message = str(caught.value)
    assert "Memory datastore lives in the scheduler's process" in message
    assert "Dask does not" in message and "Local or cloud datastore" in message


def test_executor_resolves_from_url_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Resolved(Flow): ...

    def executor_of(**options: Any) -> Any:
        return Resolved(datastore=datastores.Local(tmp_path), **options).configuration.executor

    remote = executor_of(executor="dask://scheduler.example:8786")
    assert isinstance(remote, Dask) and remote.address == "tcp://scheduler.example:8786"
    local = executor_of(executor="dask://")
    assert isinstance(local, Dask) and local.address is None
    sized = executor_of(executor="dask://?n_workers=3&threads_per_worker=2&concurrency=7&timeout=9")
    assert (sized.n_workers, sized.threads_per_worker, sized.concurrency, sized.timeout) == (3, 2, 7, 9.0)

    monkeypatch.setenv("LAMINAR_EXECUTOR", "dask://10.0.0.5:8786")
    from_env = executor_of()
    assert isinstance(from_env, Dask) and from_env.address == "tcp://10.0.0.5:8786"

    assert Dask("host:8786").address == "tcp://host:8786"
    assert Dask("tls://host:8786").address == "tls://host:8786"
    with pytest.raises(ConfigurationError, match="unknown option 'workers'"):
        Dask.from_url("dask://?workers=2")
    with pytest.raises(ConfigurationError, match="size the LocalCluster"):
        Dask("tcp://host:8786", n_workers=2)
    with pytest.raises(ConfigurationError, match="has a path"):
        Dask.from_url("dask://host:8786/somewhere")
    with pytest.raises(ConfigurationError, match=r"Dask\(threads_per_worker=\.\.\.\) must be a whole number"):
        Dask(threads_per_worker=0)
    with pytest.raises(ConfigurationError, match="concurrency must be a whole number"):
        Dask(concurrency=0)
    with pytest.raises(ConfigurationError, match="'many' is not a number"):
        Dask.from_url("dask://?n_workers=many")

    copy = pickle.loads(cloudpickle.dumps(Dask("tcp://h:1", concurrency=3, timeout=2)))
    assert (copy.address, copy.concurrency, copy.timeout, copy._client) == ("tcp://h:1", 3, 2, None)


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    class Nowhere(Flow): ...

    @Nowhere.register
    class A(Layer):
        def __call__(self) -> None:
            self.x = 1

    # a port nothing listens on: the client gives up after distributed.comm.timeouts.connect
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(ConfigurationError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"),
    ):
        Nowhere(datastore=datastores.Local(tmp_path), executor=Dask("127.0.0.1:9"))()


# ---- one flow file, every executor --------------------------------------------------------------

FLOW_FILE = """
import json
import sys

from laminar import Flow, Layer, Parameters
from laminar.configurations.layers import ForEach, Parameter


class Grid(Flow): ...


@Grid.register
class Source(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(word=["alpha", "beta", "gamma"])
        self.shard(n=list(range(parameters.size)))


@Grid.register(foreach=ForEach(parameters=[
    Parameter(layer=Source, attribute="word"), Parameter(layer=Source, attribute="n"),
]))
class Cell(Layer):
    def __call__(self, source: Source) -> None:
        self.label = f"{source.word}-{source.n}"
        self.score = len(source.word) * (source.n + 1)


@Grid.register(foreach=ForEach(parameters=[Parameter(layer=Cell, attribute="score", index=None)]))
class Double(Layer):
    def __call__(self, cell: Cell) -> None:
        self.twice = cell.score * 2


@Grid.register
class Summary(Layer):
    def __call__(self, cell: Cell, double: Double) -> None:
        self.labels = list(cell.label)
        self.total = sum(double.twice)


if flow := Grid():
    execution = flow(size=3)
    out = execution.layer(Summary)
    print(json.dumps({
        "executor": type(flow.configuration.executor).__name__,
        "labels": out.labels,
        "total": out.total,
        "twice": list(execution.layer(Double).twice),
    }))
"""


def run_flow_file(script: Path, store: Path, executor: str) -> dict[str, Any]:
    env = {**os.environ, "LAMINAR_EXECUTOR": executor, "LAMINAR_DATASTORE": f"file://{store}"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{executor}:\n{result.stdout}\n{result.stderr}"
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


def test_same_flow_file_runs_unchanged_on_thread_process_and_dask(tmp_path: Path, address: str) -> None:
    script = tmp_path / "grid_flow.py"
    script.write_text(textwrap.dedent(FLOW_FILE))
    runs = {
        executor: run_flow_file(script, tmp_path / f"store-{number}", executor)
        for number, executor in enumerate(
            ["thread", "process", f"dask://{address.removeprefix('tcp://')}", "dask://?n_workers=2"]
        )
    }
    kinds = [run.pop("executor") for run in runs.values()]
    assert kinds == ["Thread", "Process", "Dask", "Dask"]
    first, *others = runs.values()
    assert all(other == first for other in others), runs
    assert first["labels"][:4] == ["alpha-0", "alpha-1", "alpha-2", "beta-0"] and len(first["labels"]) == 9
    assert first["total"] == sum(2 * len(w) * (n + 1) for w in ["alpha", "beta", "gamma"] for n in range(3))


def test_results_match_between_thread_and_dask_in_process(tmp_path: Path, address: str) -> None:
    def build() -> tuple[type[Flow], type[Layer]]:
        class Same(Flow): ...

        @Same.register
        class A(Layer):
            def __call__(self, parameters: Parameters) -> None:
                self.shard(x=list(range(parameters.n)))

        @Same.register(foreach=ForEach(parameters=[Parameter(layer=A, attribute="x")]))
        class B(Layer):
            def __call__(self, a: A) -> None:
                self.y = {"square": a.x**2, "index": self.index, "splits": self.splits}

        return Same, B

    Same, B = build()
    results = []
    for number, executor in enumerate([executors.Thread(), executors.Process(), Dask(address)]):
        execution = Same(datastore=datastores.Local(tmp_path / str(number)), executor=executor)(n=5)
        results.append(list(execution.layer(B).y))
    assert results[0] == results[1] == results[2]
    assert results[0][4] == {"square": 16, "index": 4, "splits": 5}
