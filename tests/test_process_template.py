"""The process executor forks its workers from a template forked from the scheduler's process before
the run began (the flow's modules imported already), or, where that fork is unsafe, from a template
started as a new interpreter that imports them once.

The flow's module, written here, notes each import in a file (the pid that imported it); each split
notes its worker's pid, parent and grandparent. Real processes, threads and signals throughout.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from laminar.configurations import datastores, executors
from laminar.errors import ConfigurationError, FlowDefinitionError, WorkerLost

FLOW_MODULE = """
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from laminar import Flow, Layer
from laminar.configurations.layers import ForEach, Parameter, Retry

MARKS = Path(os.environ["TEMPLATE_MARKS"])
with open(MARKS / "imports", "a") as file:
    file.write(f"{os.getpid()}\\n")
STATE = ["as imported"]  # what a worker sees is the module as imported, not as the scheduler changed it
if os.environ.get("TEMPLATE_THREAD") and os.environ.get("LAMINAR_WORKER") == "1":
    threading.Thread(target=time.sleep, args=(60,), name="started-at-import", daemon=True).start()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class Spread(Flow): ...


@Spread.register
class Items(Layer):
    def __call__(self) -> None:
        self.shard(item=list(range(3)))


@Spread.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Each(Layer):
    \"\"\"Waits (bounded) until all three splits have started, so that three workers run them.\"\"\"

    def __call__(self, items: Items) -> None:
        with open(MARKS / "started", "a") as file:
            file.write(f"{items.item}\\n")
        ends = time.monotonic() + 60
        while len((MARKS / "started").read_text().split()) < 3 and time.monotonic() < ends:
            time.sleep(0.01)
        self.pid, self.parent, self.seen = os.getpid(), os.getppid(), list(STATE)
        self.grandparent = parent_of(self.parent)
        held = os.environ.get("HELD_FD")
        self.held = os.readlink(f"/proc/self/fd/{held}") if held else None


class Crashing(Flow): ...


@Crashing.register(retry=Retry(attempts=2, delay=0))
class Crashes(Layer):
    \"\"\"Its worker crashes on the first attempt, as os.environ["CRASH"] says.\"\"\"

    def __call__(self) -> None:
        if self.attempt == 0:
            (MARKS / "crashed").write_text(str(os.getpid()))
            how = os.environ["CRASH"]
            if how == "exit":
                os._exit(3)
            os.kill(os.getpid(), getattr(signal, how))
        self.pid, self.parent = os.getpid(), os.getppid()
        self.grandparent = parent_of(self.parent)


class Large(Flow): ...


@Large.register
class Stores(Layer):
    \"\"\"A value hashed on BLAKE3's own threads (over 1 MiB), here and in a worker.\"\"\"

    def __call__(self) -> None:
        self.blob = bytes(range(256)) * 16384  # 4 MiB
        self.pid = os.getpid()


class Orphaning(Flow): ...


@Orphaning.register(retry=Retry(attempts=2, delay=0))
class KillsTheTemplate(Layer):
    \"\"\"On the first attempt, kills the template its worker was forked from, then waits (bounded).\"\"\"

    def __call__(self) -> None:
        if self.attempt == 0:
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(30)
        self.pid, self.parent = os.getpid(), os.getppid()
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The flow's module, imported here (the scheduler's import: the first line of ``imports``)."""
    name = f"template_flow_{abs(hash(tmp_path))}"
    (tmp_path / f"{name}.py").write_text(FLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers and the template are given this path
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("TEMPLATE_MARKS", str(tmp_path / "marks"))
    loaded = importlib.import_module(name)
    yield loaded
    sys.modules.pop(name, None)


def imports(tmp_path: Path) -> list[int]:
    return [int(line) for line in (tmp_path / "marks" / "imports").read_text().split()]


def children() -> list[int]:
    """This process's children still in the process table (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


@pytest.fixture
def thread_running() -> Iterator[threading.Thread]:
    """A thread of the scheduler's process, running while the flow runs."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="the-users-thread", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join()


def test_the_template_is_forked_from_the_scheduler_so_the_flows_module_is_imported_once_in_all(
    tmp_path: Path, module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers see the module as the scheduler had it when the run began, as multiprocessing's fork
    does; what the scheduler had open (a file here) is not held by the template or its workers."""
    module.STATE.append("changed in the scheduler")
    kept = tempfile.TemporaryDirectory()  # removed at the scheduler's exit: not as a worker ends
    held = open(tmp_path / "held", "w")  # noqa: SIM115 - open across the run
    monkeypatch.setenv("HELD_FD", str(held.fileno()))
    flow = module.Spread(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(concurrency=3, start_method="forkserver"),
    )
    try:
        each = flow().layer("Each")
    finally:
        held.close()
    assert imports(tmp_path) == [os.getpid()]  # the scheduler's import: none in the template or a worker
    (template,) = set(each.parent)
    assert len(set(each.pid)) == 3 and template != os.getpid() and set(each.grandparent) == {os.getpid()}
    assert list(each.seen) == [["as imported", "changed in the scheduler"]] * 3
    assert list(each.held) == [os.devnull] * 3
    assert children() == []  # the template and its workers are reaped
    assert Path(kept.name).is_dir()
    kept.cleanup()


def test_a_thread_in_the_scheduler_makes_the_template_a_new_interpreter_and_says_why(
    tmp_path: Path, module: ModuleType, thread_running: threading.Thread, caplog: pytest.LogCaptureFixture
) -> None:
    """A fork would leave the thread behind, its locks held: the template imports the module itself."""
    module.STATE.append("changed in the scheduler")
    flow = module.Spread(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(concurrency=3, start_method="forkserver"),
    )
    with caplog.at_level(logging.DEBUG, logger="laminar"):
        each = flow().layer("Each")
    scheduler, template = imports(tmp_path)  # one import here, one in the template: none in a worker
    assert scheduler == os.getpid() and template != scheduler
    assert len(set(each.pid)) == 3 and set(each.parent) == {template} and set(each.grandparent) == {scheduler}
    assert list(each.seen) == [["as imported"]] * 3  # the module as a fresh import makes it
    reasons = [record.getMessage() for record in caplog.records if "not as a fork" in record.getMessage()]
    assert reasons == [
        "the process executor's worker template starts as a new interpreter that imports the flow's "
        "modules, not as a fork of this process: threads run in this process: the-users-thread"
    ]


def test_a_template_forked_for_a_run_that_fails_before_its_executor_starts_is_ended(
    tmp_path: Path, module: ModuleType
) -> None:
    flow = module.Spread(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(start_method="forkserver"),
    )
    with pytest.raises(FlowDefinitionError, match="cannot resume execution missing"):
        flow.execution("missing").resume()
    assert children() == []
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.json"))


def test_the_spawn_start_method_starts_each_worker_as_an_interpreter_that_imports_the_module(
    tmp_path: Path, module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_PROCESS_START", "spawn")
    executor = executors.Process(concurrency=3)
    assert executor.start_method == "spawn"
    each = module.Spread(datastore=datastores.Local(tmp_path / "store"), executor=executor)().layer("Each")
    assert len(set(each.pid)) == 3 and set(each.parent) == {os.getpid()}
    assert sorted(imports(tmp_path)) == sorted([os.getpid(), *each.pid])
    assert list(each.seen) == [["as imported"]] * 3


def test_threads_in_the_template_make_workers_start_as_new_interpreters(
    tmp_path: Path,
    module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    thread_running: threading.Thread,
) -> None:
    """The template, a new interpreter here (a thread runs in the scheduler), imports the module,
    which starts a thread: a fork would leave it behind, so the template refuses."""
    monkeypatch.setenv("TEMPLATE_THREAD", "1")
    flow = module.Spread(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(concurrency=3, start_method="forkserver"),
    )
    with caplog.at_level(logging.WARNING, logger="laminar"):
        each = flow().layer("Each")
    assert len(set(each.pid)) == 3 and set(each.parent) == {os.getpid()}
    assert len(imports(tmp_path)) == 1 + 1 + 3  # here, the template, and each worker
    refusals = [record.getMessage() for record in caplog.records if "new interpreters" in record.getMessage()]
    assert refusals == [
        "the process executor starts its workers as new interpreters: the flow's modules started "
        "threads: started-at-import"
    ]


@pytest.mark.parametrize(("crash", "code"), [("exit", 3), ("SIGKILL", -9), ("SIGSEGV", -11)])
def test_a_forked_worker_that_crashes_is_replaced_by_another_fork_and_its_exit_told(
    tmp_path: Path, module: ModuleType, monkeypatch: pytest.MonkeyPatch, crash: str, code: int
) -> None:
    monkeypatch.setenv("CRASH", crash)
    flow = module.Crashing(
        datastore=datastores.Local(tmp_path / "store"), executor=executors.Process(start_method="forkserver")
    )
    execution = flow()
    crashed = int((tmp_path / "marks" / "crashed").read_text())
    layer = execution.layer("Crashes")
    assert imports(tmp_path) == [os.getpid()]
    assert layer.pid != crashed and layer.parent != os.getpid() and layer.grandparent == os.getpid()
    first, second = execution.status.layers["Crashes"].attempts[0]
    assert first.error["type"] == WorkerLost.__name__ and second.error is None
    assert f"(pid {crashed}) running layer Crashes" in first.error["message"]
    assert f"exited with code {code} before it finished" in first.error["message"]


def test_an_unknown_start_method_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        executors.Process(start_method="fork")
    assert str(raised.value) == (
        "start_method of the process executor must be 'forkserver' or 'spawn', got 'fork'"
    )
    monkeypatch.setenv("LAMINAR_PROCESS_START", "threads")
    with pytest.raises(ConfigurationError) as raised:
        executors.Process()
    assert str(raised.value) == (
        "LAMINAR_PROCESS_START of the process executor must be 'forkserver' or 'spawn', got 'threads'"
    )
    assert not list(tmp_path.iterdir())


def test_workers_of_a_template_that_is_killed_are_killed_and_later_ones_spawned(
    tmp_path: Path, module: ModuleType
) -> None:
    """Without the template no one would tell when its workers end: they are not left running unseen."""
    flow = module.Orphaning(
        datastore=datastores.Local(tmp_path / "store"), executor=executors.Process(start_method="forkserver")
    )
    execution = flow()
    first, second = execution.status.layers["KillsTheTemplate"].attempts[0]
    assert first.error["type"] == WorkerLost.__name__ and "exited with code -9" in first.error["message"]
    assert second.error is None and execution.layer("KillsTheTemplate").parent == os.getpid()


def test_a_scheduler_whose_pools_have_run_still_forks_the_template_and_its_workers_hash_large_values(
    tmp_path: Path, module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """A run on Thread leaves Laminar's pool idle and BLAKE3's threads started here: the next run
    still forks the template (the idle pool is no reason not to), and its worker hashes on its own
    thread rather than wait forever for BLAKE3's threads, which a fork does not carry over."""
    thread_run = module.Large(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())()
    assert thread_run.layer("Stores").pid == os.getpid()
    flow = module.Large(
        datastore=datastores.Local(tmp_path / "store"),
        executor=executors.Process(start_method="forkserver", timeout=60),  # a deadlock fails, bounded
    )
    with caplog.at_level(logging.DEBUG, logger="laminar"):
        layer = flow().layer("Stores")
    assert layer.pid != os.getpid() and len(layer.blob) == 4 << 20
    assert imports(tmp_path) == [os.getpid()]  # forked from here, not a new interpreter
    assert not [record for record in caplog.records if "not as a fork" in record.getMessage()]
