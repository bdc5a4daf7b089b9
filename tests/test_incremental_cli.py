"""Incremental runs from the ``laminar`` command: ``run --reuse/--force``, and what ``show``,
``explain`` and the progress lines say of each layer (each command a process of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_incremental import Project

LAMINAR = str(Path(sys.executable).parent / "laminar")


def laminar(project: Project, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [LAMINAR, *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project.root), "LAMINAR_PROGRESS": "plain"},
        timeout=120,
    )
    assert (result.returncode == 0) == ok, result.stderr
    return result


@pytest.fixture
def project(tmp_path: Path) -> Project:
    made = Project(tmp_path / "checkout", tmp_path / "store")
    laminar(
        made,
        "run",
        "flow.py",
        "--reuse",
        "--datastore",
        made.store.as_uri(),
        "--param",
        "base=0",
        "--execution",
        "c1",
    )
    return made


def run(project: Project, execution: str, *more: str) -> subprocess.CompletedProcess[str]:
    return laminar(
        project,
        "run",
        "flow.py",
        "--reuse",
        "--datastore",
        project.store.as_uri(),
        "--param",
        "base=0",
        "--execution",
        execution,
        *more,
    )


def test_a_reused_layer_is_said_so_in_the_progress_lines_show_and_its_json(project: Project) -> None:
    ran = run(project, "c2")
    assert "layer Doubled reused from execution c1: 1 split" in ran.stderr + ran.stdout
    shown = json.loads(
        laminar(project, "show", "flow.py", "c2", "--datastore", project.store.as_uri(), "--json").stdout
    )
    layers = {layer["name"]: layer for layer in shown["layers"]}
    assert {name: layers[name]["reused"] for name in layers} == dict.fromkeys(layers, "c1")
    assert layers["Scaled"]["why"] == "reused from execution c1"
    text = laminar(project, "show", "flow.py", "c2", "--datastore", project.store.as_uri()).stdout
    assert "reused from execution c1" in text


def test_explain_says_the_first_difference_per_layer(project: Project) -> None:
    project.edit("helpers.py", "value * 2", "value * 3")
    ran = run(project, "c2")
    assert (
        "layer Doubled finished: 1 split (ran because code changed: helpers.double" in ran.stderr + ran.stdout
    )
    said = laminar(
        project, "explain", "flow.py", "c2", "--datastore", project.store.as_uri()
    ).stdout.splitlines()
    assert said == [
        "Source: reused from execution c1",
        "Doubled: ran because code changed: helpers.double (helpers.py, line 2)",
        "Scaled: ran because input changed: artifact 'values' of layer Doubled",
        "Unrelated: reused from execution c1",
    ]
    one = json.loads(
        laminar(
            project, "explain", "flow.py", "c2", "Source", "--datastore", project.store.as_uri(), "--json"
        ).stdout
    )
    assert one == [{"layer": "Source", "reused": "c1", "why": "reused from execution c1"}]


def test_force_runs_the_layer_and_its_dependents(project: Project) -> None:
    run(project, "c2", "--force", "Doubled")
    said = laminar(project, "explain", "flow.py", "c2", "--datastore", project.store.as_uri()).stdout
    assert "Doubled: ran because it was forced (asked for)" in said
    assert "Scaled: ran because it was forced (it depends on a forced layer)" in said
    assert "Source: reused from execution c1" in said


def test_forcing_a_layer_the_flow_lacks_is_refused_before_anything_is_stored(project: Project) -> None:
    failed = laminar(
        project,
        "run",
        "flow.py",
        "--reuse",
        "--datastore",
        project.store.as_uri(),
        "--param",
        "base=0",
        "--execution",
        "c2",
        "--force",
        "Nope",
        ok=False,
    )
    assert "cannot force layer Nope: flow Numbers has no such layer (its layers: " in failed.stderr
    assert not (project.store / "flows" / "Numbers" / "executions" / "c2").exists()


def test_explain_names_an_unknown_layer(project: Project) -> None:
    failed = laminar(
        project, "explain", "flow.py", "c1", "Nope", "--datastore", project.store.as_uri(), ok=False
    )
    assert "flow Numbers has no layer 'Nope'" in failed.stderr


def test_a_run_without_reuse_says_nothing_was_compared(project: Project) -> None:
    laminar(
        project,
        "run",
        "flow.py",
        "--datastore",
        project.store.as_uri(),
        "--param",
        "base=0",
        "--execution",
        "c2",
    )
    said = laminar(
        project, "explain", "flow.py", "c2", "Source", "--datastore", project.store.as_uri()
    ).stdout
    assert said == "Source: finished (the run did not have reuse on: nothing was compared)\n"


def test_the_report_says_where_each_layer_was_reused_from(project: Project, tmp_path: Path) -> None:
    run(project, "c2")
    page = tmp_path / "report.html"
    laminar(project, "report", "flow.py", "c2", "--datastore", project.store.as_uri(), "--output", str(page))
    assert page.read_text().count("reused from execution c1") == 4


def test_the_command_reuses_what_another_checkout_computed(project: Project, tmp_path: Path) -> None:
    """The command imports a flow file under a name derived from its path; keys name it by its
    path under the project instead."""
    import shutil

    moved = Project.__new__(Project)
    moved.root, moved.store, moved.runs = tmp_path / "elsewhere" / "checkout", project.store, 0
    shutil.copytree(project.root, moved.root)
    run(moved, "c2")
    said = laminar(moved, "explain", "flow.py", "c2", "--datastore", project.store.as_uri()).stdout
    assert said.count("reused from execution c1") == 4, said
