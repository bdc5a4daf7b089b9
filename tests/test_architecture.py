"""The core's layers import one way, and no module of laminar-core takes part in an import cycle.

Imports are read from the source with ``ast``, including those made inside functions; imports under
``if TYPE_CHECKING:`` are left out (they never run), except for the layers of :data:`NAMES_NOTHING_ABOVE`,
which may not even name a layer above them in an annotation. See docs/architecture.md for the picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "laminar-core" / "src"

#: Bottom up. A module may import modules of its own layer and of the layers below, never above.
#: Layers of one rank do not import each other: the model and serialization are both pure and
#: independent (rank 3), and so are the small helpers of rank 2.
LAYERS: list[tuple[str, int]] = [
    ("laminar.exceptions", 0),
    ("laminar.errors", 1),
    ("laminar._names", 2),
    ("laminar._ids", 2),
    ("laminar.types", 2),
    ("laminar._model", 3),
    ("laminar._serialization", 3),
    ("laminar._transport", 4),
    ("laminar._storage", 5),
    ("laminar._runtime", 6),
    ("laminar._plugins", 7),
    ("laminar._app", 8),
    # the public faces, on top: they re-export
    ("laminar.configurations", 9),
    ("laminar.plugins", 9),
    ("laminar.testing", 9),
    ("laminar._cli", 9),  # the `laminar` command and the HTML report
    ("laminar", 9),
]


#: Layers that know nothing above them, not even a type: the transport moves bytes and knows no flows
#: (the results API it hosts is installed from above, by the application).
NAMES_NOTHING_ABOVE = ("laminar._transport",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str], *, type_checking: bool = False) -> set[str]:
    """The laminar modules ``path`` imports at run time (``from a import b`` counts ``a.b`` if a module);
    with ``type_checking``, those it imports for type checkers only too."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {name for name in found if name in modules}


def graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    paths = sorted((SOURCE / "laminar").rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {
        module_name(path): imports_of(path, modules, type_checking=type_checking) - {module_name(path)}
        for path in paths
    }


def rank(module: str) -> tuple[str, int]:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix, level
    raise AssertionError(f"{module} is in no layer of LAYERS; add it to tests/test_architecture.py")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(edges.items()):
        layer, level = rank(module)
        for target in sorted(imported):
            target_layer, target_level = rank(target)
            if target_level > level or (target_level == level and target_layer != layer and level < 9):
                found.append(
                    f"{module} imports {target} ({layer} is layer {level}, {target_layer} {target_level})"
                )
    return found


def names_above(edges: dict[str, set[str]]) -> list[str]:
    """Imports (type-only ones included in ``edges``) by a module of :data:`NAMES_NOTHING_ABOVE` of a layer above it."""
    found = []
    for module, imported in sorted(edges.items()):
        layer, level = rank(module)
        if layer not in NAMES_NOTHING_ABOVE:
            continue
        for target in sorted(imported):
            target_layer, target_level = rank(target)
            if target_level > level:
                found.append(f"{module} names {target} ({layer} knows nothing of {target_layer})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_module_of_laminar_core_is_in_an_import_cycle() -> None:
    assert cycles(graph()) == []


def test_every_layer_imports_only_from_the_layers_below_it() -> None:
    assert upward_imports(graph()) == []


def test_the_model_imports_nothing_from_runtime_storage_or_plugins() -> None:
    edges = graph()
    model = {m: targets for m, targets in edges.items() if m.startswith("laminar._model")}
    assert model, "no model modules found"
    assert {t for targets in model.values() for t in targets if not t.startswith("laminar._model")} <= {
        "laminar.errors",
        "laminar._names",
    }


def test_every_module_of_laminar_core_is_placed_in_a_layer() -> None:
    for module in graph():
        rank(module)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from laminar._runtime import scheduler\n", "upward"),
        ("def f():\n    from laminar._storage.store import ExecutionStore\n", "upward"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from laminar._app.flow import Flow\n",
            None,
        ),
    ],
)
def test_the_checks_see_imports_inside_functions_and_ignore_type_checking_ones(
    tmp_path: Path, source: str, expected: str | None
) -> None:
    """The checks themselves: a model module that reached up would be caught, even lazily."""
    path = SOURCE / "laminar" / "_model" / "flow.py"
    edges = graph()
    planted = imports_of(_planted(tmp_path, source), set(edges))
    edges["laminar._model.flow"] = edges["laminar._model.flow"] | planted
    assert bool(upward_imports(edges)) == (expected == "upward")
    assert path.exists()


def test_a_cycle_is_found_when_one_is_planted() -> None:
    edges = graph()
    edges["laminar._model.layer"] = edges["laminar._model.layer"] | {"laminar._model.flow"}
    assert ["laminar._model.flow", "laminar._model.layer"] in [c[:2] for c in cycles(edges)] or any(
        {"laminar._model.flow", "laminar._model.layer"} <= set(c) for c in cycles(edges)
    )


# ---- per-run state lives in the run object, not in plugin modules -----------------------------------

#: The plugin modules: the built-in ones and laminar-otel.
PLUGIN_MODULES = [
    *sorted((SOURCE / "laminar" / "_plugins").glob("*.py")),
    *sorted((SOURCE.parents[1] / "laminar-otel" / "src" / "laminar_otel").glob("*.py")),
]

#: The mutable containers a plugin module may keep at module level: each is a constant or the
#: process's own, never one execution's (what a run tracks goes in its run object's stash).
PROCESS_WIDE = {
    ("manager.py", "KNOWN_PROVIDERS"): "a constant table: which distribution provides a scheme",
    ("manager.py", "BROKEN"): "entry points that failed to load, loaded once per process",
    ("manager.py", "_configured"): "every flow's plugin manager, which disabled() reaches",
    ("log_capture.py", "_tees"): "this process's wrapped stdout and stderr",
}

#: Calls that make a mutable container.
MUTABLE_CALLS = {
    "dict",
    "set",
    "list",
    "defaultdict",
    "OrderedDict",
    "Counter",
    "deque",
    "WeakSet",
    "WeakKeyDictionary",
    "WeakValueDictionary",
}
MUTABLE_DISPLAYS = (ast.Dict, ast.Set, ast.List, ast.DictComp, ast.SetComp, ast.ListComp)


def _makes_a_container(value: ast.expr | None) -> bool:
    if isinstance(value, MUTABLE_DISPLAYS):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in MUTABLE_CALLS
    return False


def module_state(path: Path) -> list[str]:
    """The names ``path`` binds at module level (also under ``if``/``try``) to a mutable container,
    but for the process-wide ones ``PROCESS_WIDE`` lists."""
    found = []

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, (ast.If, ast.Try)):
                visit(statement.body)
                visit(statement.orelse)
                continue
            value: ast.expr | None
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign):
                targets, value = [statement.target], statement.value
            else:
                continue
            if not _makes_a_container(value):
                continue
            for target in targets:
                for name in ast.walk(target):
                    if (
                        isinstance(name, ast.Name)
                        and name.id != "__all__"
                        and (path.name, name.id) not in PROCESS_WIDE
                    ):
                        found.append(f"{path.name}: {name.id}")

    visit(ast.parse(path.read_text(), str(path)).body)
    return found


def test_no_plugin_module_keeps_per_run_state_at_module_level() -> None:
    assert len(PLUGIN_MODULES) > 5 and any(path.name == "run_records.py" for path in PLUGIN_MODULES)
    assert [found for path in PLUGIN_MODULES for found in module_state(path)] == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("_runs: dict[tuple[str, str], float] = {}\n", ["_runs"]),
        ("_seen = set()\n", ["_seen"]),
        ("import collections\n_spans = collections.defaultdict(list)\n", ["_spans"]),
        ("try:\n    _layers = {(f, e): 0 for f, e in ()}\nexcept ImportError:\n    pass\n", ["_layers"]),
        ("_tees: list[object] = []\n", ["_tees"]),  # process-wide in log_capture.py only
        ("from laminar.plugins import StashKey\nSPANS = StashKey[int]()\n", []),
        ("def hook() -> None:\n    seen = {}\n", []),
        ("LIMIT = 10\nNAMES = ('a', 'b')\n", []),
    ],
)
def test_the_check_finds_module_level_state_planted_in_a_plugin(
    tmp_path: Path, source: str, flagged: list[str]
) -> None:
    path = tmp_path / "status.py"
    path.write_text(source)
    assert module_state(path) == [f"status.py: {name}" for name in flagged]


def _planted(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "planted.py"
    path.write_text(source)
    return path


def test_the_transport_names_nothing_above_it_not_even_for_type_checking() -> None:
    assert names_above(graph(type_checking=True)) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from laminar._app.flow import Flow\n",
            True,
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from laminar._app import execution\n",
            True,
        ),
        ("def f():\n    from laminar._app.results import Results\n", True),
        ("import laminar._storage.layout\n", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from laminar._model.flow import FlowDefinition\n",
            False,
        ),
    ],
)
def test_a_transport_module_naming_the_application_is_caught(
    tmp_path: Path, source: str, expected: bool
) -> None:
    """The check itself: the datastore module importing the application, even for type checkers only."""
    edges = graph(type_checking=True)
    planted = imports_of(_planted(tmp_path, source), set(edges), type_checking=True)
    edges["laminar._transport.datastore"] = edges["laminar._transport.datastore"] | planted
    assert bool(names_above(edges)) == expected
