"""Reading never runs a flow: a script without the execution guard, given to any ``laminar`` command.

The script calls ``flow(...)`` at module level, as a first script often does. Its executions are made
with ``python guardless.py``; then every command is run as a real ``laminar`` process (each imports
the file afresh, as a user's shell would), and the executions stored are counted before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LAMINAR = str(Path(sys.executable).with_name("laminar"))

GUARDLESS = textwrap.dedent(
    """
    import os

    from laminar import Flow, Layer, Parameters


    class Guardless(Flow): ...


    @Guardless.register
    class Numbers(Layer):
        def __call__(self, parameters: Parameters) -> None:
            print(f"counting to {parameters.n}")
            self.values = list(range(parameters.n))


    flow = Guardless()
    flow(n=int(os.environ["N"]))  # no `if flow := Guardless():`
    print("the script went on after its run")
    """
)


def executions(folder: Path) -> list[str]:
    """The executions stored in the folder's ``.laminar`` (their directories, as the layout keeps them)."""
    root = folder / ".laminar" / "flows" / "Guardless" / "executions"
    return sorted(path.name for path in root.iterdir()) if root.is_dir() else []


def laminar(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMINAR_EXECUTOR": "thread", "N": "5"}
    env.pop("LAMINAR_DATASTORE", None)
    return subprocess.run([LAMINAR, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A folder with the guardless script and two executions it made with ``python guardless.py``."""
    folder = tmp_path_factory.mktemp("reading")
    (folder / "guardless.py").write_text(GUARDLESS)
    for n in ("3", "4"):
        env = {**os.environ, "LAMINAR_EXECUTOR": "thread", "N": n}
        env.pop("LAMINAR_DATASTORE", None)
        done = subprocess.run(
            [sys.executable, "guardless.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "the script went on after its run" in done.stdout
    ids = executions(folder)
    assert len(ids) == 2
    return folder, ids


def reading_commands(ids: list[str], folder: Path) -> dict[str, tuple[list[str], str]]:
    """Each reading command on the guardless script, and what its output must hold."""
    first, second = ids
    return {
        "graph": (["graph", "guardless.py"], "Numbers"),
        "executions": (["executions", "guardless.py"], second),
        "show": (["show", "guardless.py", first], "succeeded"),
        "artifacts": (["artifacts", "guardless.py", first, "Numbers"], "values"),
        "get": (["get", "guardless.py", second, "Numbers", "values"], "[0, 1, 2, 3]"),
        "logs": (["logs", "guardless.py", first, "Numbers"], "counting to 3"),
        "diff": (["diff", "guardless.py", first, second, "--json"], '"name": "n"'),
        "report": (["report", "guardless.py", first, "--output", str(folder / "report.html")], "report.html"),
    }


@pytest.mark.parametrize(
    "command", ["graph", "executions", "show", "artifacts", "get", "logs", "diff", "report"]
)
def test_a_reading_command_on_a_guardless_script_reads_and_stores_no_execution(
    made: tuple[Path, list[str]], command: str
) -> None:
    folder, ids = made
    arguments, expected = reading_commands(ids, folder)[command]
    done = laminar(folder, *arguments)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout + done.stderr
    assert "the script went on" not in done.stdout  # the import stopped at the script's run
    assert executions(folder) == ids  # nothing was run, nothing stored
    assert "started" not in done.stderr  # no progress line: no run began


def test_resume_of_a_guardless_script_resumes_only_the_execution_asked_for(
    made: tuple[Path, list[str]],
) -> None:
    folder, ids = made
    done = laminar(folder, "resume", "guardless.py", ids[0])
    assert done.returncode == 0, done.stderr
    assert f"execution {ids[0]} of flow Guardless succeeded" in done.stdout
    assert executions(folder) == ids


def test_run_on_a_guardless_script_says_the_guard_is_missing_in_one_line(
    made: tuple[Path, list[str]],
) -> None:
    folder, ids = made
    done = laminar(folder, "run", "guardless.py", "--param", "n=2")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (
        'Error: guardless.py runs flow Guardless when imported, on line 18 (`flow(n=int(os.environ["N"]))  # no '
        "`if flow := Guardless():``), outside the execution guard, so `laminar run` would run it with the file's "
        "own parameters; put the call under the guard, `if flow := Guardless(): flow(...)`, or run the file "
        "with `python guardless.py`"
    )
    assert "counting" not in done.stdout
    assert executions(folder) == ids


def test_a_script_that_catches_every_exception_around_its_run_is_still_stopped(tmp_path: Path) -> None:
    """``except Exception`` around ``flow()`` neither runs the flow nor lets the import go on."""
    (tmp_path / "guardless.py").write_text(
        GUARDLESS.replace(
            'flow(n=int(os.environ["N"]))  # no `if flow := Guardless():`',
            'try:\n    flow(n=int(os.environ["N"]))\nexcept Exception:\n    pass',
        )
    )
    done = laminar(tmp_path, "run", "guardless.py")
    assert done.returncode == 1
    assert "runs flow Guardless when imported, on line 19" in done.stderr
    shown = laminar(tmp_path, "executions", "guardless.py")
    assert shown.returncode == 0, shown.stderr
    assert "has no executions" in shown.stdout
    assert executions(tmp_path) == []
