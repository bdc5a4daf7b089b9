"""The process executor forks its workers from a template forked from the scheduler's process before
the run began (the flow's modules imported already), or, where that fork is unsafe, from a template
started as a new interpreter that imports them once.

The flow's module, written here, notes each import in a file (the pid that imported it); each split
notes its worker's pid, parent and grandparent. Each test runs its flows in a fresh ``python`` (the
scheduler), so whether the template is forked depends on what the test does there, not on the
threads other tests left in pytest's process. Real processes, threads and signals throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from laminar.configurations import executors
from laminar.errors import ConfigurationError

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


class Logging(Flow): ...


@Logging.register
class Prints(Layer):
    \"\"\"Flushes what it prints, which the log-flushing thread stores while the split runs.\"\"\"

    def __call__(self) -> None:
        print("stored while the split runs", flush=True)
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


#: What each test's script starts with: the flow's module imported here, in the scheduler (the first
#: line of ``imports``), and what the process executor logs collected; the test's lines follow, and
#: fill ``result``, printed as JSON at the end with this process's pid and its children left.
PREAMBLE = """
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from laminar.configurations import datastores, executors
from laminar.errors import FlowDefinitionError

import template_flow as module


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


collected = Collected()
executor_logger = logging.getLogger("laminar._runtime")  # the process executor and its template
executor_logger.setLevel(logging.DEBUG)
executor_logger.addHandler(collected)
store = datastores.Local(Path("store"))
result = {}


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def children() -> list[int]:
    return children_of(os.getpid())


def users_thread() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="the-users-thread", daemon=True).start()
    return stop


def records(layer) -> dict:
    return {name: list(getattr(layer, name)) for name in ("pid", "parent", "grandparent", "seen", "held")}


"""


def run_scheduler(tmp_path: Path, lines: str, **environment: str) -> dict[str, Any]:
    """Run ``lines`` after :data:`PREAMBLE` in a new ``python`` in ``tmp_path``; its ``result``, and its
    pid (``scheduler``), the executor's log messages, its children left and the flow module's imports."""
    (tmp_path / "template_flow.py").write_text(FLOW_MODULE)
    (tmp_path / "marks").mkdir(exist_ok=True)
    script = (
        PREAMBLE
        + textwrap.dedent(lines)
        + (
            "\nresult.update(scheduler=os.getpid(), logs=collected.messages, children=children())\n"
            'print("RESULT", json.dumps(result))\n'
        )
    )
    (tmp_path / "scheduler.py").write_text(script)
    finished = subprocess.run(
        [sys.executable, "scheduler.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={
            **os.environ,
            "PYTHONPATH": str(tmp_path),
            "TEMPLATE_MARKS": str(tmp_path / "marks"),
            **environment,
        },
    )
    assert finished.returncode == 0, finished.stderr
    (line,) = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["imports"] = [int(pid) for pid in (tmp_path / "marks" / "imports").read_text().split()]
    return result


def not_forked(result: dict[str, Any]) -> list[str]:
    return [message for message in result["logs"] if "not as a fork" in message]


def test_the_template_is_forked_from_the_scheduler_so_the_flows_module_is_imported_once_in_all(
    tmp_path: Path,
) -> None:
    """Workers see the module as the scheduler had it when the run began, as multiprocessing's fork
    does; what the scheduler had open (a file here) is not held by the template or its workers."""
    result = run_scheduler(
        tmp_path,
        """
        module.STATE.append("changed in the scheduler")
        kept = tempfile.TemporaryDirectory()  # removed at the scheduler's exit: not as a worker ends
        held = open("held", "w")
        os.environ["HELD_FD"] = str(held.fileno())
        executor = executors.Process(concurrency=3, start_method="forkserver")
        result.update(records(module.Spread(datastore=store, executor=executor)().layer("Each")))
        held.close()
        result["kept"] = Path(kept.name).is_dir()
        kept.cleanup()
        """,
    )
    scheduler = result["scheduler"]
    assert result["imports"] == [scheduler]  # the scheduler's import: none in the template or a worker
    (template,) = set(result["parent"])
    assert (
        len(set(result["pid"])) == 3 and template != scheduler and set(result["grandparent"]) == {scheduler}
    )
    assert result["seen"] == [["as imported", "changed in the scheduler"]] * 3
    assert result["held"] == [os.devnull] * 3
    assert result["children"] == []  # the template and its workers are reaped
    assert result["kept"] and not_forked(result) == []


def test_a_thread_in_the_scheduler_makes_the_template_a_new_interpreter_and_says_why(tmp_path: Path) -> None:
    """A fork would leave the thread behind, its locks held: the template imports the module itself."""
    result = run_scheduler(
        tmp_path,
        """
        stop = users_thread()
        module.STATE.append("changed in the scheduler")
        executor = executors.Process(concurrency=3, start_method="forkserver")
        result.update(records(module.Spread(datastore=store, executor=executor)().layer("Each")))
        stop.set()
        """,
    )
    scheduler, template = result["imports"]  # one import here, one in the template: none in a worker
    assert scheduler == result["scheduler"] and template != scheduler
    assert len(set(result["pid"])) == 3 and set(result["parent"]) == {template}
    assert set(result["grandparent"]) == {scheduler}
    assert result["seen"] == [["as imported"]] * 3  # the module as a fresh import makes it
    assert not_forked(result) == [
        "the process executor's worker template starts as a new interpreter that imports the flow's "
        "modules, not as a fork of this process: threads run in this process: the-users-thread"
    ]


def test_a_template_forked_for_a_run_that_fails_before_its_executor_starts_is_ended(tmp_path: Path) -> None:
    result = run_scheduler(
        tmp_path,
        """
        flow = module.Spread(datastore=store, executor=executors.Process(start_method="forkserver"))
        try:
            flow.execution("missing").resume()
        except FlowDefinitionError as error:
            result["error"] = str(error)
        """,
    )
    assert "cannot resume execution missing" in result["error"]
    assert result["children"] == [] and not_forked(result) == []
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.json"))


#: Lines for a test's script: whether a process is still running, and a condition waited for (a
#: process's birth or end is not an event this process can wait on).
PROCESSES = """
import time

from laminar._runtime import forking, process


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def waited(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return found
"""


def test_the_runs_first_worker_is_forked_with_the_template_before_a_split_asks_for_one(
    tmp_path: Path,
) -> None:
    """The template is asked for a worker as it is forked, so that worker is forked while the run
    begins (its first records), not once the first split waits for it: when the executor starts, with
    its event loop held there so that no split can ask, the template has a child already, and that
    worker runs splits."""
    result = run_scheduler(
        tmp_path,
        PROCESSES
        + textwrap.dedent(
            """
        starting = process.Process.start
        async def start(self):
            template = self._forked.pid
            result["ahead"] = waited(lambda: children_of(template))
            await starting(self)
        process.Process.start = start
        executor = executors.Process(concurrency=3, start_method="forkserver")
        result.update(records(module.Spread(datastore=store, executor=executor)().layer("Each")))
        """
        ),
    )
    (ahead,) = result["ahead"]
    assert ahead in result["pid"] and len(set(result["pid"])) == 3
    assert result["children"] == [] and not_forked(result) == []


def test_a_worker_forked_ahead_for_a_run_that_fails_before_its_executor_starts_ends_too(
    tmp_path: Path,
) -> None:
    result = run_scheduler(
        tmp_path,
        PROCESSES
        + textwrap.dedent(
            """
        discarding = forking.ForkedTemplate.discard
        def discard(self):
            result["ahead"] = waited(lambda: children_of(self.pid))
            discarding(self)
        forking.ForkedTemplate.discard = discard
        flow = module.Spread(datastore=store, executor=executors.Process(start_method="forkserver"))
        try:
            flow.execution("missing").resume()
        except FlowDefinitionError as error:
            result["error"] = str(error)
        waited(lambda: not any(running(pid) for pid in result["ahead"]))
        result["running"] = [pid for pid in result["ahead"] if running(pid)]
        """
        ),
    )
    assert "cannot resume execution missing" in result["error"]
    assert len(result["ahead"]) == 1 and result["running"] == []  # it read the end of its tasks
    assert result["children"] == []


def test_the_spawn_start_method_starts_each_worker_as_an_interpreter_that_imports_the_module(
    tmp_path: Path,
) -> None:
    result = run_scheduler(
        tmp_path,
        """
        executor = executors.Process(concurrency=3)
        result["start_method"] = executor.start_method
        result.update(records(module.Spread(datastore=store, executor=executor)().layer("Each")))
        """,
        LAMINAR_PROCESS_START="spawn",
    )
    assert result["start_method"] == "spawn"
    assert len(set(result["pid"])) == 3 and set(result["parent"]) == {result["scheduler"]}
    assert sorted(result["imports"]) == sorted([result["scheduler"], *result["pid"]])
    assert result["seen"] == [["as imported"]] * 3


def test_threads_in_the_template_make_workers_start_as_new_interpreters(tmp_path: Path) -> None:
    """The template, a new interpreter here (a thread runs in the scheduler), imports the module,
    which starts a thread: a fork would leave it behind, so the template refuses."""
    result = run_scheduler(
        tmp_path,
        """
        stop = users_thread()
        executor = executors.Process(concurrency=3, start_method="forkserver")
        result.update(records(module.Spread(datastore=store, executor=executor)().layer("Each")))
        stop.set()
        """,
        TEMPLATE_THREAD="1",
    )
    assert len(set(result["pid"])) == 3 and set(result["parent"]) == {result["scheduler"]}
    assert len(result["imports"]) == 1 + 1 + 3  # here, the template, and each worker
    assert [message for message in result["logs"] if "new interpreters" in message] == [
        "the process executor starts its workers as new interpreters: the flow's modules started "
        "threads: started-at-import"
    ]


@pytest.mark.parametrize(("crash", "code"), [("exit", 3), ("SIGKILL", -9), ("SIGSEGV", -11)])
def test_a_forked_worker_that_crashes_is_replaced_by_another_fork_and_its_exit_told(
    tmp_path: Path, crash: str, code: int
) -> None:
    result = run_scheduler(
        tmp_path,
        """
        execution = module.Crashing(datastore=store, executor=executors.Process(start_method="forkserver"))()
        layer = execution.layer("Crashes")
        result.update(pid=layer.pid, parent=layer.parent, grandparent=layer.grandparent)
        result["attempts"] = [
            attempt.error for attempt in execution.status.layers["Crashes"].attempts[0]
        ]
        """,
        CRASH=crash,
    )
    crashed = int((tmp_path / "marks" / "crashed").read_text())
    scheduler = result["scheduler"]
    assert result["imports"] == [scheduler]
    assert result["pid"] != crashed and result["parent"] != scheduler and result["grandparent"] == scheduler
    first, second = result["attempts"]
    assert first["type"] == "WorkerLost" and second is None
    assert f"(pid {crashed}) running layer Crashes" in first["message"]
    assert f"exited with code {code} before it finished" in first["message"]


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


def test_workers_of_a_template_that_is_killed_are_killed_and_later_ones_spawned(tmp_path: Path) -> None:
    """Without the template no one would tell when its workers end: they are not left running unseen."""
    result = run_scheduler(
        tmp_path,
        """
        execution = module.Orphaning(datastore=store, executor=executors.Process(start_method="forkserver"))()
        result["attempts"] = [
            attempt.error for attempt in execution.status.layers["KillsTheTemplate"].attempts[0]
        ]
        result["parent"] = execution.layer("KillsTheTemplate").parent
        """,
    )
    first, second = result["attempts"]
    assert first["type"] == "WorkerLost" and "exited with code -9" in first["message"]
    assert second is None and result["parent"] == result["scheduler"]
    assert not_forked(result) == []  # the first worker was a fork of the template forked from here


def test_a_scheduler_whose_pools_have_run_still_forks_the_template_and_its_workers_hash_large_values(
    tmp_path: Path,
) -> None:
    """A run on Thread leaves Laminar's pool idle and BLAKE3's threads started here: the next run
    still forks the template (the idle pool is no reason not to), and its worker hashes on its own
    thread rather than wait forever for BLAKE3's threads, which a fork does not carry over. (BLAKE3
    starts its threads only on machines of more than ``TREE_PARALLEL_ABOVE`` cores: made 0 here.)"""
    result = run_scheduler(
        tmp_path,
        """
        from laminar._serialization import hashing
        hashing.TREE_PARALLEL_ABOVE = 0
        result["thread_run"] = module.Large(datastore=store, executor=executors.Thread())().layer("Stores").pid
        result["threads"] = sorted({thread.name.split("_")[0] for thread in threading.enumerate()})
        executor = executors.Process(start_method="forkserver", timeout=60)  # a deadlock fails, bounded
        layer = module.Large(datastore=store, executor=executor)().layer("Stores")
        result.update(pid=layer.pid, size=len(layer.blob))
        """,
    )
    assert result["thread_run"] == result["scheduler"] and "laminar-cpu" in result["threads"]
    assert result["pid"] != result["scheduler"] and result["size"] == 4 << 20
    assert result["imports"] == [result["scheduler"]]  # forked from here, not a new interpreter
    assert not_forked(result) == []


def test_a_process_run_after_a_thread_run_that_logged_still_forks_the_template(tmp_path: Path) -> None:
    """The Thread run's split flushed what it printed, which started the log-flushing thread here; it
    stays for the process's life, and a fork waits until it stores nothing: the next Process run
    still forks the template from here, and its worker stores its own logs."""
    result = run_scheduler(
        tmp_path,
        """
        thread_run = module.Logging(datastore=store, executor=executors.Thread())()
        result["thread_run"] = thread_run.layer("Prints").pid
        result["threads"] = [thread.name for thread in threading.enumerate()]
        process_run = module.Logging(datastore=store, executor=executors.Process(start_method="forkserver"))()
        result["pid"] = process_run.layer("Prints").pid
        result["logs_stored"] = [run.layer("Prints").state.logs() for run in (thread_run, process_run)]
        """,
    )
    assert result["thread_run"] == result["scheduler"] and "laminar-logs" in result["threads"]
    assert result["pid"] != result["scheduler"]
    assert not_forked(result) == []  # forked from here, not a new interpreter
    assert result["logs_stored"] == ["stored while the split runs\n"] * 2


# ---- a flow called outside the execution guard -----------------------------------------------------
UNGUARDED = """
import os
import sys
import threading

from laminar import Flow, Layer
from laminar.configurations import datastores, executors

with open("imports", "a") as file:
    file.write(f"{os.getpid()}\\n")


class Unguarded(Flow): ...


@Unguarded.register
class A(Layer):
    def __call__(self) -> None:
        self.pid = os.getpid()


flow = Unguarded(datastore=datastores.Local("store"), executor=executors.Process())
execution = flow()  # outside `if flow := Unguarded():`
print("RESULT", execution.layer("A").pid)
"""


def run_unguarded(tmp_path: Path, main: str) -> subprocess.CompletedProcess[str]:
    """``python main.py``, whose ``main`` imports the module ``pipeline`` that runs its flow at import."""
    (tmp_path / "pipeline.py").write_text(UNGUARDED)
    (tmp_path / "main.py").write_text(textwrap.dedent(main))
    return subprocess.run(
        [sys.executable, "main.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )


def test_a_flow_called_outside_the_guard_runs_once_on_workers_forked_from_the_scheduler(
    tmp_path: Path,
) -> None:
    """A forked worker does not import the module again, so nothing would start another run: the
    flow runs once, as on the Thread executor (spawned workers import it and refuse: test_reliability)."""
    finished = run_unguarded(tmp_path, "import os\nimport pipeline\nprint('SCHEDULER', os.getpid())\n")
    assert finished.returncode == 0, finished.stderr
    lines = dict(
        line.split() for line in finished.stdout.splitlines() if line.startswith(("RESULT", "SCHEDULER"))
    )
    assert (tmp_path / "imports").read_text().split() == [lines["SCHEDULER"]]  # no import in a worker
    assert lines["RESULT"] != lines["SCHEDULER"]  # the split ran in a worker
    assert len(list((tmp_path / "store/flows/Unguarded/executions").iterdir())) == 1


def test_where_the_template_cannot_be_forked_a_flow_called_outside_the_guard_is_refused(
    tmp_path: Path,
) -> None:
    """A thread in the scheduler (as macOS, or a running event loop) makes the template a new
    interpreter, which imports the module: the call is refused there, naming the guard, as with
    ``start_method="spawn"``, and no second run starts."""
    finished = run_unguarded(
        tmp_path,
        """
        import threading

        threading.Thread(target=threading.Event().wait, name="the-users-thread", daemon=True).start()
        import pipeline
        """,
    )
    assert finished.returncode != 0
    assert "Unguarded() was called in a process that runs layer splits" in finished.stderr
    assert "`if flow := Unguarded(): flow()`" in finished.stderr
    assert len((tmp_path / "imports").read_text().split()) >= 2  # the template imported it too
    assert len(list((tmp_path / "store/flows/Unguarded/executions").iterdir())) == 1
