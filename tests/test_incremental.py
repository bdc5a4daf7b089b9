"""Incremental runs: traps a reuse key must not fall into, and changes it must see through.

Each test writes a small project (a flow file, a helper module, a ``pyproject.toml``) into a
temporary folder and runs it with reuse on in a fresh interpreter, as a user edits a file and runs
again; it then reads what each layer's status record says: reused from which execution, or why it ran.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from laminar._storage import layout

from tests.helpers import run_script, unpack_records

FLOW = """
import os
import helpers
from laminar import Flow, Layer, Parameters

LIMIT = 10

def make_scaler(factor):
    def scale(value):
        return value * factor
    return scale

scale = make_scaler(2)

SHIFT = 1

def shifted(value, by=SHIFT):
    return value + by

class Numbers(Flow): ...

@Numbers.register(inputs=["data.txt"])
class Source(Layer):
    '''Reads the data file.'''

    offset = 0

    def __call__(self, parameters: Parameters) -> None:
        # the numbers in the file
        text = open(os.path.join(os.path.dirname(__file__), "data.txt")).read()
        self.values = [int(x) + self.offset + parameters.base for x in text.split()]

@Numbers.register
class Doubled(Layer):
    def __call__(self, source: Source) -> None:
        self.values = [helpers.double(v) for v in source.values][:LIMIT]

@Numbers.register
class Scaled(Layer):
    def __call__(self, doubled: Doubled) -> None:
        self.values = [shifted(scale(v)) for v in doubled.values]

@Numbers.register
class Unrelated(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.text = "unrelated"
        self.big = __import__("random").Random(0).randbytes(300_000)  # under artifacts/, not inline
"""

HELPERS = """
def double(value):
    '''Twice the value.'''
    return value * 2
"""

DRIVER = """
import json, sys
import flow
from laminar.configurations import datastores, executors

numbers = flow.Numbers(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())
force = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else ()
execution = numbers.execution(sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else "e" + str(len(numbers.configuration.datastore.list_executions("Numbers"))))
execution.run(parameters={"base": int(__import__("os").environ.get("BASE", "0"))}, reuse=True, force=force)
found = {}
for name in ("Source", "Doubled", "Scaled", "Unrelated"):
    status = execution.store.layer_status(name)
    found[name] = {"reused": status.reused, "why": status.why}
found["values"] = execution.layer(flow.Scaled).values
found["id"] = execution.id
print(json.dumps(found))
"""

LAYERS = ("Source", "Doubled", "Scaled", "Unrelated")


class Project:
    """A user's project on disk and the datastore its runs share."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root
        self.store = store
        self.runs = 0
        root.mkdir(parents=True, exist_ok=True)
        (root / "pyproject.toml").write_text("[project]\nname = 'numbers'\n")
        (root / "flow.py").write_text(FLOW)
        (root / "helpers.py").write_text(HELPERS)
        (root / "data.txt").write_text("1 2 3")
        (root / "driver.py").write_text(DRIVER)

    def edit(self, file: str, old: str, new: str) -> None:
        path = self.root / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new))

    def run(self, *, force: str = "", env: dict[str, str] | None = None) -> dict[str, Any]:
        self.runs += 1
        out = run_script(self.root, "driver.py", str(self.store), f"run{self.runs}", force, env=env)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


@pytest.fixture
def project(tmp_path: Path) -> Project:
    made = Project(tmp_path / "checkout", tmp_path / "store")
    first = made.run()
    assert all(first[name]["reused"] is None for name in LAYERS)
    assert first["Source"]["why"] == "ran because first run: no earlier execution with reuse on finished it"
    return made


def ran(result: dict[str, Any]) -> list[str]:
    return [name for name in LAYERS if result[name]["reused"] is None]


# ---- must reuse -------------------------------------------------------------------------------
def test_an_unchanged_rerun_reuses_every_layer_and_reads_the_same_values(project: Project) -> None:
    again = project.run()
    assert ran(again) == []
    assert {again[name]["reused"] for name in LAYERS} == {"run1"}
    assert again["Scaled"]["why"] == "reused from execution run1"
    assert again["values"] == [5, 9, 13]


def test_comments_formatting_and_docstrings_do_not_count(project: Project) -> None:
    project.edit(
        "helpers.py", "    return value * 2", "    # twice\n    return (value\n            * 2)  # done"
    )
    project.edit("flow.py", "'''Reads the data file.'''", "'''Reads the data file, one number a word.'''")
    project.edit("flow.py", "def shifted(value, by=SHIFT):", "def shifted(value,   by = SHIFT) :  # moves")
    project.edit("helpers.py", "Twice the value.", "The value, doubled.")
    assert ran(project.run()) == []


def test_an_unrelated_layer_changed_runs_only_it(project: Project) -> None:
    project.edit("flow.py", 'self.text = "unrelated"', 'self.text = "other"')
    again = project.run()
    assert ran(again) == ["Unrelated"]
    assert again["Unrelated"]["why"].startswith(
        "ran because code changed: flow.Unrelated.__call__ (flow.py, line "
    )


def test_another_checkout_path_reuses(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other" / "place"
    shutil.copytree(project.root, elsewhere)
    moved = Project.__new__(Project)
    moved.root, moved.store, moved.runs = elsewhere, project.store, project.runs
    assert ran(moved.run()) == []


# ---- must not reuse ---------------------------------------------------------------------------
def test_a_helper_edited_in_another_module_runs_its_layer_and_what_reads_it(project: Project) -> None:
    project.edit("helpers.py", "value * 2", "value * 3")
    again = project.run()
    assert ran(again) == ["Doubled", "Scaled"]
    assert again["Doubled"]["why"] == "ran because code changed: helpers.double (helpers.py, line 2)"
    assert again["Scaled"]["why"] == "ran because input changed: artifact 'values' of layer Doubled"
    assert again["values"] == [7, 13, 19]


def test_a_module_constant_changed(project: Project) -> None:
    project.edit("flow.py", "LIMIT = 10", "LIMIT = 2")
    again = project.run()
    assert ran(again) == ["Doubled", "Scaled"]
    assert again["values"] == [5, 9]


def test_a_closure_value_changed(project: Project) -> None:
    project.edit("flow.py", "scale = make_scaler(2)", "scale = make_scaler(3)")
    again = project.run()
    assert ran(again) == ["Scaled"]
    assert again["values"] == [7, 13, 19]


def test_a_default_argument_changed(project: Project) -> None:
    project.edit("flow.py", "SHIFT = 1", "SHIFT = 5")
    again = project.run()
    assert ran(again) == ["Scaled"]
    assert again["Scaled"]["why"].startswith("ran because code changed: flow.shifted (flow.py, line ")
    assert again["values"] == [9, 13, 17]


def test_a_class_attribute_of_the_layer_changed(project: Project) -> None:
    project.edit("flow.py", "    offset = 0", "    offset = 1")
    again = project.run()
    assert ran(again) == ["Source", "Doubled", "Scaled"]
    assert again["values"] == [9, 13, 17]


def test_a_declared_input_file_changed(project: Project) -> None:
    (project.root / "data.txt").write_text("1 2 4")
    again = project.run()
    assert ran(again) == ["Source", "Doubled", "Scaled"]
    assert again["Source"]["why"] == "ran because input file changed: data.txt"
    assert again["values"] == [5, 9, 17]


def test_an_upstream_value_changed_while_its_reader_did_not(project: Project) -> None:
    project.edit(
        "flow.py", '@Numbers.register(inputs=["data.txt"])', '@Numbers.register(inputs=["$NUMBERS_EXTRA"])'
    )
    project.run(env={"NUMBERS_EXTRA": "a"})
    project.edit("flow.py", "int(x) + self.offset", "int(x) + self.offset + len(os.environ['NUMBERS_EXTRA'])")
    project.run(env={"NUMBERS_EXTRA": "a"})
    again = project.run(env={"NUMBERS_EXTRA": "bb"})
    assert ran(again) == ["Source", "Doubled", "Scaled"]
    assert again["Source"]["why"] == "ran because environment variable changed: NUMBERS_EXTRA"
    assert again["Doubled"]["why"] == "ran because input changed: artifact 'values' of layer Source"


def test_a_parameter_changed_says_old_and_new(project: Project) -> None:
    again = project.run(env={"BASE": "1"})
    assert ran(again) == list(LAYERS)
    assert again["Source"]["why"] == "ran because parameter changed: base 0 -> 1"


def test_a_refusing_layer_always_runs(project: Project) -> None:
    project.edit("flow.py", "@Numbers.register\nclass Scaled", "@Numbers.register(reuse=False)\nclass Scaled")
    project.run()
    again = project.run()
    assert ran(again) == ["Scaled"]
    assert again["Scaled"]["why"] == "ran because the layer refuses reuse (register(reuse=False))"


def test_forcing_a_layer_runs_it_and_its_dependents(project: Project) -> None:
    again = project.run(force="Doubled")
    assert ran(again) == ["Doubled", "Scaled"]
    assert again["Doubled"]["why"] == "ran because it was forced (asked for)"
    assert again["Scaled"]["why"] == "ran because it was forced (it depends on a forced layer)"


# ---- a third-party package's version -----------------------------------------------------------
def _wheel(folder: Path, version: str) -> Path:
    """A wheel of ``tinypkg`` at ``version``, its code the same in every version."""
    name = f"tinypkg-{version}"
    files = {
        "tinypkg/__init__.py": b"def triple(value):\n    return value * 3\n",
        f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n".encode(),
        f"{name}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}.dist-info/top_level.txt": b"tinypkg\n",
    }
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    lines.append(f"{name}.dist-info/RECORD,,")
    files[f"{name}.dist-info/RECORD"] = ("\n".join(lines) + "\n").encode()
    wheel = folder / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _install(wheel: Path, target: Path) -> None:
    uv = shutil.which("uv") or str(Path(__file__).parents[1] / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.fail("this test installs a wheel with uv: install uv (./run does)")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_a_third_party_package_version_changed(project: Project, tmp_path: Path) -> None:
    packages = tmp_path / "site"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    project.edit("flow.py", "import helpers\n", "import helpers\nimport tinypkg\n")
    project.edit("flow.py", "[shifted(scale(v))", "[tinypkg.triple(shifted(scale(v)))")
    env = {"PYTHONPATH": f"{project.root}:{packages}"}
    _install(_wheel(wheels, "1.0"), packages)
    project.run(env=env)
    assert ran(project.run(env=env)) == []
    _install(_wheel(wheels, "2.0"), packages)
    again = project.run(env=env)
    assert ran(again) == ["Scaled"]
    assert again["Scaled"]["why"] == "ran because package version changed: tinypkg 1.0 -> 2.0"


# ---- safety -------------------------------------------------------------------------------------
def test_a_forged_entry_costs_a_recomputation_not_a_wrong_value(project: Project) -> None:
    """An entry naming another execution's layer (whose values differ) is checked against its
    flow, layer and key; a rewritten one fails its checksum: either way the layer runs."""
    entries = project.store / layout.reuse_entries("Numbers", "Scaled")
    (entry,) = entries.iterdir()
    record = json.loads(entry.read_text())
    record["execution"] = "nowhere"
    entry.write_text(json.dumps(record))
    again = project.run()
    assert ran(again) == ["Scaled"]
    assert again["values"] == [5, 9, 13]


def test_a_well_formed_entry_naming_an_execution_with_other_inputs_is_not_trusted(project: Project) -> None:
    """A forger (or a damaged index) writes a sealed entry under this run's key naming an execution
    computed from other inputs: the layer's inputs are checked against that execution's records."""
    from laminar._storage.reuse_index import ReuseEntry

    other = project.run(env={"BASE": "1"})  # every layer ran from base 1: other values
    entries = project.store / layout.reuse_entries("Numbers", "Scaled")
    ours = next(p for p in entries.iterdir() if "run1" in p.read_text())
    honest = ReuseEntry.loads(ours.read_bytes())
    forged = ReuseEntry(honest.flow, honest.layer, honest.key, other["id"], honest.created, honest.components)
    ours.write_bytes(forged.dumps())
    again = project.run()
    assert "Scaled" in ran(again)
    assert again["values"] == [5, 9, 13]


def test_values_deleted_under_an_entry_make_the_layer_run(project: Project) -> None:
    (doubled,) = (project.store / layout.reuse_entries("Numbers", "Doubled")).iterdir()
    first = json.loads(doubled.read_text())["execution"]
    unpack_records(project.store)  # each layer's record a file of its own (not a line of a record pack)
    record = project.store / layout.record("Numbers", first, "Doubled")
    assert "held" in json.loads(record.read_text())  # its one split's record is in the layer's record
    record.unlink()
    again = project.run()
    assert "Doubled" in ran(again)
    assert again["values"] == [5, 9, 13]


def test_values_collected_under_an_entry_make_the_layer_run(project: Project) -> None:
    shutil.rmtree(project.store / "artifacts")
    again = project.run()
    assert ran(again) == ["Unrelated"]
    assert (
        again["Unrelated"]["why"] == "ran because the values execution run1 stored for it are gone or damaged"
    )


def test_keys_hold_no_absolute_path(project: Project) -> None:
    for entry in (project.store / "flows" / "Numbers" / "reuse").rglob("*.json"):
        text = entry.read_text()
        assert str(project.root) not in text and "checkout" not in text and str(project.store) not in text


def test_a_reused_layer_writes_only_records(project: Project) -> None:
    before = {p for p in (project.store / "artifacts").rglob("*") if p.is_file()}
    assert ran(project.run()) == []
    assert {p for p in (project.store / "artifacts").rglob("*") if p.is_file()} == before
    written = [p for p in (project.store / layout.execution("Numbers", "run2")).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in written) < 4 * 4096
