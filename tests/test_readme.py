"""The README, run as a new user would, so that it cannot drift from what Laminar does.

Its install lines run with real pip in a fresh home (tests/distributions.py, once per session, in a
folder holding what ``./run build`` wrote); in that environment its example is saved as ``main.py``
in a fresh folder and run, and its reading example runs in a second process with the id the run
printed in place of the README's placeholder; its ``laminar`` command lines run with that id too.
Every command of its shell blocks is either run here (``RUN``, naming the test) or listed in
``NOT_RUN`` with the reason, and every Python block is run: a block added to the README fails
``test_every_readme_block_is_run_here_or_listed_with_why`` until it is one or the other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from distributions import (
    README,
    README_INSTALL,
    ROOT,
    bash,
    built,
    installed,
    readme_commands,
    readme_environment,
    user_shell,
    version,
)

PLACEHOLDER = "0ERhptiPvH7S056bbCrOxhfjWEY"  # the README's stand-in for the id of the reader's run
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
VERSION = version()
ENVIRONMENT = "readme_environment"  # tests/distributions.py runs these, once per session

#: Each command of the README's shell blocks that is run here -> what runs it, in README order.
RUN = {
    "python main.py": "test_the_example_runs_and_a_second_process_reads_it_back",
    "laminar executions main.py": "test_the_example_runs_and_a_second_process_reads_it_back",
    "laminar run main.py --executor thread": "test_the_laminar_command_lines_run",
    f"laminar show main.py {PLACEHOLDER}": "test_the_laminar_command_lines_run",
    f"laminar logs main.py {PLACEHOLDER} A": "test_the_laminar_command_lines_run",
    f"laminar report main.py {PLACEHOLDER} -o report.html": "test_the_laminar_command_lines_run",
    README_INSTALL[0]: ENVIRONMENT,
    README_INSTALL[1]: ENVIRONMENT,
    f"pip install dist/laminar_core-{VERSION}-py3-none-any.whl dist/laminar_gcs-{VERSION}-py3-none-any.whl": (
        "test_the_wheels_install_by_name"
    ),
    'pip download "laminar[gcs]" --find-links dist/ -d wheelhouse/': "test_the_offline_install",
    'pip install "laminar[gcs]" --no-index --find-links wheelhouse/': "test_the_offline_install",
}

#: Each command of the README's shell blocks that is not run here -> why.
NOT_RUN = {
    "./run demo": "tests/test_packaging.py::test_run_keeps_packages_a_user_added_to_the_environment runs it",
    "./run test": "it runs the whole test suite, this test included",
    "./run build": "tests/distributions.py runs it once per session (./run build DIR) for every packaging test",
}


def commands_of(test: str) -> list[str]:
    """The README's commands that ``test`` runs, in the README's order."""
    return [command for command in dict.fromkeys(readme_commands()) if RUN.get(command) == test]


def python_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(README.read_text())


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's environment: ``~/flows-env`` after its install lines."""
    return readme_environment(tmp_path_factory)


@pytest.fixture
def shell(python: Path) -> Callable[[str, Path], subprocess.CompletedProcess[str]]:
    """``shell(command, cwd)``: ``command`` typed into the README user's shell, ``~/flows-env`` active."""
    home = python.parents[2]

    def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return bash(f". ~/flows-env/bin/activate\n{command}", cwd, user_shell(home))

    return run


def test_every_readme_block_is_run_here_or_listed_with_why() -> None:
    commands = set(readme_commands())
    unlisted = sorted(commands - set(RUN) - set(NOT_RUN))
    assert not unlisted, (
        f"README shell commands neither run by tests/test_readme.py nor in its NOT_RUN: {unlisted}"
    )
    assert not set(RUN) & set(NOT_RUN)
    assert set(RUN) | set(NOT_RUN) == commands, (
        f"no longer in the README: {sorted(set(RUN) | set(NOT_RUN) - commands)}"
    )
    for test in set(RUN.values()) - {ENVIRONMENT}:
        assert test.startswith("test_") and callable(globals().get(test)), test
    assert commands_of(ENVIRONMENT) == README_INSTALL, "the README's install lines, in order"
    # two Python blocks: the example (main.py) and the program that reads it back, both run below
    assert len(python_blocks()) == 2, "a new Python block in the README: run it here"


def example_run(shell: Callable[[str, Path], subprocess.CompletedProcess[str]], folder: Path) -> str:
    """The README's example saved as ``main.py`` in ``folder`` and run with ``python main.py``; its id."""
    folder.mkdir()
    (folder / "main.py").write_text(python_blocks()[0])
    (command, listing) = commands_of("test_the_example_runs_and_a_second_process_reads_it_back")
    ran = shell(command, folder)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.fullmatch(r"\S{27}\n", ran.stdout), f"python main.py printed {ran.stdout!r}, not an id"
    execution = ran.stdout.strip()
    # the README says where it is stored, and that the first progress line says so too
    assert (folder / ".laminar").is_dir()
    first = ran.stderr.splitlines()[0]
    assert f"{execution}: started" in first and f"storing in {folder.as_uri()}/.laminar" in first, first
    listed = shell(listing, folder)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert execution in listed.stdout and "succeeded" in listed.stdout, listed.stdout
    return execution


def test_the_example_runs_and_a_second_process_reads_it_back(
    shell: Callable[[str, Path], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    execution = example_run(shell, project)
    reading = python_blocks()[1]
    assert PLACEHOLDER in reading
    (project / "read.py").write_text(reading.replace(PLACEHOLDER, execution))
    read = shell("python read.py", project)
    assert read.returncode == 0, read.stdout + read.stderr
    foo, executions = read.stdout.splitlines()
    assert foo == "bar"  # what the README's comment says it prints
    assert f'id="{execution}"' in executions, executions
    # the placeholder is only that: no run of the example has it
    assert PLACEHOLDER not in executions


def test_the_laminar_command_lines_run(
    shell: Callable[[str, Path], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text(python_blocks()[0])
    run, *reading = commands_of("test_the_laminar_command_lines_run")
    ran = shell(run, project)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (execution,) = re.findall(r"^execution (\S{27}) of flow ResultFlow succeeded", ran.stdout, re.MULTILINE)
    outputs = {}
    for command in reading:
        assert PLACEHOLDER in command
        result = shell(command.replace(PLACEHOLDER, execution), project)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        outputs[command.split()[1]] = result.stdout
    assert execution in outputs["show"] and "succeeded" in outputs["show"], outputs["show"]
    report = (project / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>") and execution in report


def test_the_wheels_install_by_name(
    shell: Callable[[str, Path], subprocess.CompletedProcess[str]],
    python: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    (command,) = commands_of("test_the_wheels_install_by_name")
    result = shell(command, built(tmp_path_factory).parent)
    assert result.returncode == 0, result.stdout + result.stderr  # the files it names exist
    names = installed(python)
    assert names["laminar-core"] == VERSION and names["laminar-gcs"] == VERSION


def test_the_offline_install(
    shell: Callable[[str, Path], subprocess.CompletedProcess[str]],
    python: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``pip download`` into a wheelhouse, then ``pip install --no-index`` from it into a new environment."""
    checkout = built(tmp_path_factory).parent
    download, install = commands_of("test_the_offline_install")
    result = shell(download, checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    offline = checkout / "offline-env"
    result = bash(
        f"{sys.executable} -m venv {offline}\n. {offline}/bin/activate\n{install}",
        checkout,
        user_shell(python.parents[2]) | {"PIP_INDEX_URL": "http://127.0.0.1:9/nothing-here"},  # no index
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = installed(offline / "bin" / "python")
    assert names["laminar"] == VERSION and names["laminar-gcs"] == VERSION and "google-cloud-storage" in names


def test_the_report_tests_fail_naming_chromium_when_it_is_missing(tmp_path: Path) -> None:
    """The README: without Chromium the report tests fail saying so (a failure, never a skip)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    test = "tests/test_report.py::test_the_report_renders_in_chromium_and_a_screenshot_is_kept"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-p", "no:cacheprovider", "-q", "-rA",
         f"--basetemp={tmp_path / 'inner'}"],
        cwd=ROOT, env={**os.environ, "PATH": str(empty)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert "headless Chromium is missing" in result.stdout and "apt-get install" in result.stdout, (
        result.stdout
    )
