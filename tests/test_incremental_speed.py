"""What an unchanged rerun waits for, counted rather than timed: the installed packages are scanned
at most once per process (and not at all for code that reaches no third-party module), and the
index entries of a chain of layers reused from one execution are read together, not one after
another.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import fingerprint
from laminar._storage import layout
from laminar.configurations import executors

from tests.helpers import CountingLocal

SCAN = """
import importlib.metadata, json, sys
from pathlib import Path

scans = []
distributions = importlib.metadata.distributions
importlib.metadata.distributions = lambda *a, **k: scans.append(1) or distributions(*a, **k)
parsed = []  # file lists (RECORD) parsed, to infer a distribution's modules
files = importlib.metadata.Distribution.files
importlib.metadata.Distribution.files = property(lambda self: parsed.append(1) or files.fget(self))
unlisted = sum(1 for d in distributions() if not d.read_text("top_level.txt"))

from laminar._runtime import fingerprint
import user

root = Path(sys.argv[1])
plain = fingerprint.fingerprint([user.plain], root=root)
after_plain = len(scans)
found = [fingerprint.fingerprint([f], root=root) for f in (user.with_yaml, user.with_yaml_again, user.with_click)]
print(json.dumps({"after_plain": after_plain, "after_all": len(scans), "parsed": len(parsed),
                  "unlisted": unlisted,
                  "packages": [sorted(f.packages) for f in found]}))
"""

USER = """
import json

import click
import yaml

def plain(x):
    return json.dumps(x)

def with_yaml(x):
    return yaml.safe_dump(x)

def with_yaml_again(x):
    return yaml.safe_load(x)

def with_click(x):
    return click.style(yaml.safe_dump(x))
"""


def test_the_installed_packages_are_scanned_once_per_process_and_only_when_needed(tmp_path: Path) -> None:
    """Fingerprinting code that reaches only the standard library and the user's own modules scans
    no installed package; code reaching third-party modules scans them once for the process, however
    many fingerprints ask, without parsing every distribution's file list, and still counts the
    distribution by its version."""
    (tmp_path / "user.py").write_text(USER)
    (tmp_path / "scan.py").write_text(SCAN)
    out = subprocess.run(
        [sys.executable, "scan.py", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        },
    ).stdout
    import json

    counted = json.loads(out.strip().splitlines()[-1])
    assert counted["after_plain"] == 0
    assert counted["after_all"] == 1
    # packages_distributions() parsed the file list of each of the many distributions that declare
    # no top-level modules; the look-up parses only those listing a file under ``yaml`` or
    # ``click`` (click's own, which declares none): one per module at most.
    assert counted["unlisted"] > 10
    assert counted["parsed"] <= 2
    assert counted["packages"] == [["PyYAML", "python"], ["PyYAML", "python"], ["PyYAML", "click", "python"]]


def test_modules_map_to_the_distributions_packages_distributions_names() -> None:
    """The lazy look-up gives, for every top-level module installed here, exactly the distributions
    ``importlib.metadata.packages_distributions()`` gives (the scan it replaces), and none for a
    module no distribution provides."""
    expected = importlib.metadata.packages_distributions()
    assert len(expected) > 20
    wrong = {
        top: (sorted(fingerprint._distributions(top)), sorted(names))
        for top, names in expected.items()
        if sorted(fingerprint._distributions(top)) != sorted(names)
    }
    assert wrong == {}
    assert fingerprint._distributions("no_such_module_anywhere") == ()


class Steps(Flow): ...


@Steps.register
class Start(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.total = parameters.start


@Steps.register
class One(Layer):
    def __call__(self, start: Start) -> None:
        self.total = start.total + 1


@Steps.register
class Two(Layer):
    def __call__(self, one: One) -> None:
        self.total = one.total + 2


@Steps.register
class Three(Layer):
    def __call__(self, two: Two) -> None:
        self.total = two.total + 3


@Steps.register
class Four(Layer):
    def __call__(self, three: Three) -> None:
        self.total = three.total + 4


DOWNSTREAM = ("One", "Two", "Three", "Four")


class Gathering(CountingLocal):
    """A Local datastore on threads that holds each read of a downstream layer's index entry until
    all of them have started (or a deadline passed): read one after another, each would wait for
    entries that are only asked once it returns."""

    max_workers = 8

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.started: set[str] = set()
        self.lock = threading.Lock()
        self.all_started = threading.Event()
        self.waited_out: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        layer = key.split("/")[3] if key.startswith(layout.reuse_index("Steps")) else None
        if layer in DOWNSTREAM:
            with self.lock:
                self.started.add(layer)
                if self.started == set(DOWNSTREAM):
                    self.all_started.set()
            if not self.all_started.wait(timeout=10):  # a deadline for a hang, not a timing
                self.waited_out.append(layer)
                self.all_started.set()  # the others need not wait out their deadline too
        return super().read_bytes(key)


def test_the_entries_of_a_chain_reused_from_one_execution_are_read_together(tmp_path: Path) -> None:
    """Each layer's key needs its upstream layers' values, so down a chain of reused layers each
    waited for one entry read after its upstream's. Once the first layer is reused from an
    execution, the entries of the layers after it are read at once, with the keys they have if their
    upstream layers are reused from it too: no downstream entry read waits for another to end."""
    first = Steps(datastore=CountingLocal(tmp_path), executor=executors.Thread())(start=1, reuse=True)
    datastore = Gathering(tmp_path)
    second = Steps(datastore=datastore, executor=executors.Thread())(start=1, reuse=True)
    assert [second.store.layer_status(n).reused for n in ("Start", *DOWNSTREAM)] == [first.id] * 5  # type: ignore[union-attr]
    assert second.layer(Four).total == 11
    assert datastore.waited_out == []
    entries = [key.split("/")[3] for key in datastore.reads if key.startswith(layout.reuse_index("Steps"))]
    assert sorted(entries) == sorted(["Start", *DOWNSTREAM])  # each once: every guessed key was right


class Bonus(Flow): ...


@Bonus.register
class Base(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.total = parameters.start


@Bonus.register(inputs=["$LAMINAR_TEST_BONUS"])
class Added(Layer):
    def __call__(self, base: Base) -> None:
        self.total = base.total + int(os.environ["LAMINAR_TEST_BONUS"])


@Bonus.register
class Doubled(Layer):
    def __call__(self, added: Added) -> None:
        self.total = added.total * 2


@Bonus.register
class Tripled(Layer):
    def __call__(self, doubled: Doubled) -> None:
        self.total = doubled.total * 3


def test_entries_read_ahead_under_keys_that_prove_wrong_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Base is reused, so the entries of Doubled and Tripled are read ahead under the keys they
    have if Added is reused too. Added's declared input changed, so it runs and gives a new value:
    those keys were wrong, and Doubled and Tripled run with the new value instead of reusing the
    entries read ahead (which name the first execution's, for the old one)."""
    monkeypatch.setenv("LAMINAR_TEST_BONUS", "1")
    first = Bonus(datastore=CountingLocal(tmp_path), executor=executors.Thread())(start=1, reuse=True)
    assert first.layer(Tripled).total == 12
    monkeypatch.setenv("LAMINAR_TEST_BONUS", "5")
    datastore = CountingLocal(tmp_path)
    second = Bonus(datastore=datastore, executor=executors.Thread())(start=1, reuse=True)
    layers = ("Base", "Added", "Doubled", "Tripled")
    assert [second.store.layer_status(n).reused for n in layers] == [first.id, None, None, None]  # type: ignore[union-attr]
    assert second.layer(Tripled).total == 36
    doubled = {key for key in datastore.reads if key.startswith(layout.reuse_entries("Bonus", "Doubled"))}
    assert len(doubled) == 2  # read ahead under the guessed key, then under its own
