"""Where the runs are: the default datastore is the nearest ``.laminar``, found as git finds ``.git``.

A project folder's script is run with ``python etl.py`` there; then ``laminar`` is run, as real
processes, from a subfolder (``notebooks/``), from the project's parent (through the FILE argument),
and from an unrelated folder, and finds the run each time. Without ``--datastore`` nor
``LAMINAR_DATASTORE``, as a new user works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from laminar._plugins.discovery import nearest

LAMINAR = str(Path(sys.executable).with_name("laminar"))

ETL = textwrap.dedent(
    """
    from laminar import Flow, Layer, Parameters


    class Etl(Flow): ...


    @Etl.register
    class Load(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.rows = list(range(parameters.rows))


    if flow := Etl():
        print("ran", flow(rows=3).id)
    """
)


def environment() -> dict[str, str]:
    env = {**os.environ, "LAMINAR_EXECUTOR": "thread"}
    env.pop("LAMINAR_DATASTORE", None)
    return env


def run(folder: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=folder, env=environment(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``top/etl/etl.py``, run once with ``python etl.py`` in ``top/etl``: the folder, the execution id
    and what the run wrote to stderr."""
    top = tmp_path_factory.mktemp("top")
    folder = top / "etl"
    (folder / "notebooks" / "deeper").mkdir(parents=True)
    (folder / "etl.py").write_text(ETL)
    done = run(folder, sys.executable, "etl.py")
    assert done.returncode == 0, done.stderr
    return folder, done.stdout.split()[-1], done.stderr


@pytest.fixture
def project(made: tuple[Path, str, str]) -> tuple[Path, str]:
    return made[0], made[1]


def test_a_run_says_where_it_stores_when_it_starts(made: tuple[Path, str, str]) -> None:
    folder, execution, stderr = made
    url = (folder / ".laminar").resolve().as_uri()
    assert stderr.splitlines()[0] == f"laminar: Etl {execution}: started, 1 layer, storing in {url}"


def test_a_command_in_a_subfolder_finds_the_run_in_the_folder_above(project: tuple[Path, str]) -> None:
    folder, execution = project
    for where in (folder / "notebooks", folder / "notebooks" / "deeper"):
        file = os.path.relpath(folder / "etl.py", where)
        shown = run(where, LAMINAR, "get", file, execution, "Load", "rows")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == "[0, 1, 2]"
        assert not (where / ".laminar").exists()  # nothing new made below


def test_a_command_given_the_file_from_its_parent_finds_the_run_by_the_files_folder(
    project: tuple[Path, str],
) -> None:
    folder, execution = project
    top = folder.parent
    shown = run(top, LAMINAR, "show", "etl/etl.py", execution)
    assert shown.returncode == 0, shown.stderr
    assert f"execution {execution} of flow Etl: succeeded" in shown.stdout
    assert not (top / ".laminar").exists()
    report = run(top, LAMINAR, "report", "etl/etl.py", execution, "--output", "etl-report.html")
    assert report.returncode == 0, report.stderr
    assert (top / "etl-report.html").is_file()


def test_a_file_that_only_defines_the_flow_is_read_from_its_folders_store(project: tuple[Path, str]) -> None:
    """No instance built at import: the command builds one, and looks above the file's folder too."""
    folder, execution = project
    (folder / "library.py").write_text(ETL.split("if flow :=")[0])
    shown = run(folder.parent, LAMINAR, "get", "etl/library.py", execution, "Load", "rows")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[0, 1, 2]"


def test_a_script_run_in_a_subfolder_stores_in_the_folder_above(project: tuple[Path, str]) -> None:
    folder, first = project
    done = run(folder / "notebooks", sys.executable, "../etl.py")
    assert done.returncode == 0, done.stderr
    second = done.stdout.split()[-1]
    assert not (folder / "notebooks" / ".laminar").exists()
    listed = run(folder, LAMINAR, "executions", "etl.py")
    assert first in listed.stdout and second in listed.stdout


def test_a_missing_execution_says_where_it_looked(project: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = project
    found = run(folder / "notebooks", LAMINAR, "show", "../etl.py", "nope")
    assert found.returncode == 1
    assert found.stderr.strip() == (
        f"Error: execution nope of flow Etl does not exist in {(folder / '.laminar').resolve().as_uri()} (the "
        f"nearest .laminar to {(folder / 'notebooks').resolve()}; choose another with --datastore); list its "
        "executions with `laminar executions ../etl.py`"
    )
    # A copy of the script in a folder with no .laminar above it, nor above the working directory.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "etl.py").write_text(ETL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = run(elsewhere, LAMINAR, "show", "../alone/etl.py", "nope")
    assert missing.returncode == 1
    assert (
        f"does not exist in {(elsewhere / '.laminar').resolve().as_uri()} (no .laminar in "
        f"{elsewhere.resolve()} or its parents, nor in {alone.resolve()} or its parents; "
        "choose another with --datastore)"
    ) in missing.stderr
    listed = run(elsewhere, LAMINAR, "executions", "../alone/etl.py")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == (
        f"flow Etl has no executions in {(elsewhere / '.laminar').resolve().as_uri()} (no .laminar in "
        f"{elsewhere.resolve()} or its parents, nor in {alone.resolve()} or its parents; choose another "
        "with --datastore)"
    )
    assert not (elsewhere / ".laminar").exists() and not (alone / ".laminar").exists()  # reading made none


def test_the_working_directory_comes_before_the_files_folder(
    project: tuple[Path, str], tmp_path: Path
) -> None:
    """With a ``.laminar`` above the working directory, it is the one read (as git reads the
    repository it is run in), even when the file's folder has its own."""
    folder, execution = project
    (tmp_path / ".laminar").mkdir()
    shown = run(tmp_path, LAMINAR, "show", str(folder / "etl.py"), execution)
    assert shown.returncode == 1
    assert (
        f"does not exist in {(tmp_path / '.laminar').resolve().as_uri()} (the nearest .laminar to"
        in shown.stderr
    )


def test_an_explicit_datastore_is_used_as_given(project: tuple[Path, str], tmp_path: Path) -> None:
    folder, execution = project
    env = {**environment(), "LAMINAR_DATASTORE": (tmp_path / "other").as_uri()}
    shown = subprocess.run(
        [LAMINAR, "show", "etl.py", execution],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 1
    assert f"does not exist in {(tmp_path / 'other').as_uri()}; list its executions" in shown.stderr


# ---- the search itself ---------------------------------------------------------------------------


def test_the_nearest_directory_wins_and_a_file_of_that_name_is_not_one(tmp_path: Path) -> None:
    inner = tmp_path / "a" / "b" / "c"
    inner.mkdir(parents=True)
    (tmp_path / ".laminar").mkdir()
    (tmp_path / "a" / "b" / ".laminar").write_text("not a datastore")  # a file: skipped
    assert nearest([inner]).path == tmp_path / ".laminar"
    (tmp_path / "a" / ".laminar").mkdir()
    found = nearest([inner])
    assert found.path == tmp_path / "a" / ".laminar" and found.start == inner
    assert found.describe() == f"the nearest .laminar to {inner}"


def test_none_found_means_a_new_one_in_the_first_folder_and_creates_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    found = nearest([first, second])
    assert found.path == first / ".laminar" and found.start is None
    assert not found.path.exists()
    assert found.describe() == f"no .laminar in {first} or its parents, nor in {second} or its parents"
    (second / ".laminar").mkdir()
    found = nearest([first, second])
    assert found.path == second / ".laminar"
    assert found.describe() == f"the nearest .laminar to {second}, none being in {first} or its parents"
