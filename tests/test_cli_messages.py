"""Messages that say what is true: each names the user's file, shows what it is about, and is said once.

Commands run through click's CliRunner (in this process) or, where a signal or Python's own
traceback is part of it, as real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from laminar import Flow, Layer
from laminar._cli.main import cli
from laminar.configurations import datastores, executors
from laminar.errors import ExecutionNotFound

LAMINAR = str(Path(sys.executable).with_name("laminar"))

SWEEP = textwrap.dedent(
    """
    from laminar import Flow, Layer, Parameters


    class Sweep(Flow): ...


    @Sweep.register
    class Fit(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.score = parameters.delay / 10
            self.curve = [parameters.delay * i for i in range(2000)]  # too large to show
            self.label = "x" * 60 if parameters.delay > 2 else "y" * 60  # a short value, a long repr
    """
)


def laminar(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def error_line(result: Result) -> str:
    """The command's one error line (progress lines, ``laminar: ...``, aside)."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("laminar: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP)
    return path, (tmp_path / "store").as_uri()


# ---- hints name the user's file -------------------------------------------------------------------


def test_a_missing_execution_hint_names_the_file_given(sweep: tuple[Path, str]) -> None:
    path, store = sweep
    for command in (["show"], ["report"], ["diff", "nope"]):
        line = error_line(laminar(command[0], f"{path}:Sweep", "nope", *command[1:], "--datastore", store))
        assert line.endswith(f"list its executions with `laminar executions {path}:Sweep`"), line
        assert "FILE" not in line


def test_a_failed_script_names_itself_in_the_resume_hint(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        textwrap.dedent(
            """
            from laminar import Flow, Layer
            from laminar.configurations import executors


            class Failing(Flow): ...


            @Failing.register
            class Boom(Layer):
                def __call__(self) -> None:
                    raise ValueError("boom")


            if flow := Failing(executor=executors.Thread()):
                flow(execution="failed")
            """
        )
    )
    env = {**os.environ, "LAMINAR_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "failing.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "or `laminar resume failing.py failed`; what finished is kept" in done.stderr
    assert "FILE" not in done.stderr


# ---- diff shows small values ----------------------------------------------------------------------


def test_diff_shows_small_values_and_the_hash_of_others(sweep: tuple[Path, str]) -> None:
    path, store = sweep
    for delay, execution in (("3", "slow"), ("2", "fast")):
        result = laminar("run", path, "--datastore", store, "--executor", "thread", "--param", f"delay={delay}",
                         "--execution", execution)  # fmt: skip
        assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(laminar("diff", path, "slow", "fast", "--datastore", store,
                                                           "--json").stdout)}  # fmt: skip
    assert (rows["delay"]["a"], rows["delay"]["b"]) == ("3", "2")
    assert (rows["score"]["a"], rows["score"]["b"]) == ("0.3", "0.2")
    for name in ("curve", "label"):  # too large to keep inline, or a repr too long: by hash
        a, b = rows[name]["a"], rows[name]["b"]
        assert len(a) == len(b) == 12 and int(a, 16) >= 0 and a != b, (name, a, b)
    table = laminar("diff", path, "slow", "fast", "--datastore", store).stdout
    delay = next(line for line in table.splitlines() if "delay" in line)
    assert [cell.strip() for cell in delay.replace("│", "|").split("|")] == [
        "parameter", "Parameters", "delay", "changed", "3", "2",
    ]  # fmt: skip


# ---- an error at import keeps the file, the line and Python's hint --------------------------------


def test_a_name_error_at_import_names_the_file_line_and_the_likely_name(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text(SWEEP + "\ndelay = 3\nprint(dleay)\n")
    line_number = path.read_text().splitlines().index("print(dleay)") + 1
    store = tmp_path / "store"
    for command in (["run", path, "--executor", "thread", "--datastore", store.as_uri()], ["graph", path]):
        line = error_line(laminar(*command))
        assert line == (
            f"Error: importing {path} line {line_number} failed: NameError: name 'dleay' is not defined. "
            "Did you mean: 'delay'?"
        )
    assert not store.exists()  # nothing was stored


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("from laminar import Flow\n\nvalues = (1,\n")
    assert error_line(laminar("graph", path)) == f"Error: {path} line 3: SyntaxError: '(' was never closed"


# ---- a value that cannot be pickled: its error once -----------------------------------------------

UNPICKLABLE = textwrap.dedent(
    """
    from laminar import Flow, Layer
    from laminar.configurations import executors


    class Unpicklable:  # pickle itself refuses it (not one of the kinds Laminar refuses by name)
        def __reduce__(self):
            raise TypeError("cannot pickle 'Unpicklable' object")


    class Locked(Flow): ...


    @Locked.register
    class Hold(Layer):
        def __call__(self) -> None:
            self.lock = Unpicklable()


    if flow := Locked(executor=executors.Thread()):
        flow(execution="locked")
    """
)
PICKLE_ERROR = "cannot pickle 'Unpicklable' object"


def test_an_unpicklable_value_is_told_once(tmp_path: Path) -> None:
    """The progress line of the split names the error; the last line names its type, not again its
    message (which it had four times before), and says how to see and resume the run."""
    path = tmp_path / "locked.py"
    path.write_text(UNPICKLABLE)
    result = laminar("run", path, "--datastore", (tmp_path / "store").as_uri(), "--executor", "thread")
    assert (result.stdout + result.stderr).count(PICKLE_ERROR) == 1, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("laminar: ")]
    assert PICKLE_ERROR in next(line for line in progress if "layer Hold failed on attempt 0" in line)
    assert any("layer Hold stopped after" in line for line in progress), progress  # said, without it
    line = error_line(result)
    assert "failed: SerializationError (its message is above)" in line and "laminar resume" in line


def test_without_the_progress_display_the_error_line_tells_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_PROGRESS", "0")
    path = tmp_path / "locked.py"
    path.write_text(UNPICKLABLE)
    result = laminar("run", path, "--datastore", (tmp_path / "store").as_uri(), "--executor", "thread")
    assert (result.stdout + result.stderr).count(PICKLE_ERROR) == 1, result.stderr
    assert PICKLE_ERROR in error_line(result)


def test_an_unpicklable_value_raised_by_a_script_carries_one_note_naming_the_split(tmp_path: Path) -> None:
    (tmp_path / "locked.py").write_text(UNPICKLABLE)
    env = {**os.environ, "LAMINAR_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "locked.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.count("artifact 'lock' of layer Hold cannot be serialized") == 1, done.stderr
    assert done.stderr.count("layer Hold of flow Locked (execution locked, attempt 0)") == 1, done.stderr


# ---- Ctrl-C under `laminar run` -------------------------------------------------------------------


def test_an_interrupted_laminar_run_suggests_laminar_resume(tmp_path: Path) -> None:
    """The layer sends SIGINT to its own process (the Thread executor runs it in the scheduler's),
    then fails; the retry's hour-long back-off ends when the signal stops the run."""
    (tmp_path / "stop.py").write_text(
        textwrap.dedent(
            """
            import os
            import signal

            from laminar import Flow, Layer
            from laminar.configurations.layers import Retry


            class Stop(Flow): ...


            @Stop.register(retry=Retry(attempts=2, delay=3600))
            class First(Layer):
                def __call__(self) -> None:
                    os.kill(os.getpid(), signal.SIGINT)
                    raise RuntimeError("stopping")


            @Stop.register
            class Second(Layer):
                def __call__(self, first: First) -> None:
                    self.done = True
            """
        )
    )
    done = subprocess.run(
        [LAMINAR, "run", "stop.py", "--executor", "thread", "--execution", "halted"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: execution halted of flow Stop was stopped by {signal.Signals.SIGINT.name}; what finished is "
        "kept. Resume it with `laminar resume stop.py halted`"
    )
    assert "flow.execution(" not in done.stderr  # not the Python call, on any line


# ---- reading an execution that does not exist ------------------------------------------------------


def test_reading_an_artifact_of_a_missing_execution_raises_execution_not_found(tmp_path: Path) -> None:
    class Absent(Flow): ...

    @Absent.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = 1

    flow = Absent(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    flow(execution="real")
    with pytest.raises(ExecutionNotFound) as raised:
        flow.execution("typo").layer(A).foo  # noqa: B018
    assert not isinstance(raised.value, AttributeError)
    assert str(raised.value).startswith(
        f"execution typo of flow Absent does not exist in {(tmp_path / 'store').as_uri()}; "
    )
    assert flow.execution("real").layer(A).foo == 1
    executions = [e.id for e in flow.configuration.datastore.list_executions(flow=flow)]
    assert executions == ["real"]  # reading made nothing
