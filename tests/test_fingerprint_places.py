"""Where a fingerprint says each part of the code starts (``Fingerprint.places``, shown when a layer
runs because its code changed) is what ``inspect.getsourcelines`` says, found without parsing the
file once per class."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from laminar._runtime import fingerprint

SOURCE = """
import functools


def plain(x):
    return x


@functools.lru_cache
def decorated(x):
    return x


class Bare:
    def method(self):
        return 1

    class Inner:
        pass


def register(kind):
    return kind


@register
@register
class Decorated:
    pass


def factory():
    class Local:
        pass

    return Local


class Bare2:  # a second class of the same shape, further down
    pass
"""


@pytest.fixture
def module(tmp_path: Path) -> Iterator[ModuleType]:
    path = tmp_path / "places_module.py"
    path.write_text(textwrap.dedent(SOURCE))
    spec = importlib.util.spec_from_file_location("places_module", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["places_module"] = loaded
    spec.loader.exec_module(loaded)
    yield loaded
    del sys.modules["places_module"]


def test_each_class_and_function_starts_where_inspect_says(module: ModuleType) -> None:
    things = [
        module.plain,
        module.decorated.__wrapped__,
        module.Bare,
        module.Bare.method,
        module.Bare.Inner,
        module.Decorated,
        module.factory(),
        module.Bare2,
    ]
    for thing in things:
        assert fingerprint._first_line(thing) == inspect.getsourcelines(thing)[1], thing
    assert fingerprint._first_line(module.Decorated) == SOURCE.splitlines().index("@register", 20) + 1


def test_a_files_classes_are_parsed_once(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        kind: inspect.getsourcelines(kind)[1] for kind in (module.Bare, module.Bare.Inner, module.factory())
    }

    def unwanted(thing: object) -> None:
        raise AssertionError(f"inspect parsed the file again for {thing}")

    monkeypatch.setattr(inspect, "getsourcelines", unwanted)
    fingerprint._class_lines.cache_clear()
    for kind, line in expected.items():
        assert fingerprint._first_line(kind) == line
    fingerprint._first_line(module.Decorated)
    assert fingerprint._class_lines.cache_info().misses == 1


def test_a_class_without_source_says_so_as_inspect_does() -> None:
    made = type("Made", (), {"__module__": "places_nowhere"})
    with pytest.raises((OSError, TypeError)):
        fingerprint._first_line(made)
