"""A layer's code fingerprint: what of the user's code it runs, normalized, and the packages it uses.

The fingerprint follows the code from the layer's class (``__call__``, its layer hooks, every
method and class attribute) and the flow's own methods through every global name, closure cell,
default argument and module attribute the code names, into every function, class and constant of
the user's own modules (files under the project's root, outside ``site-packages`` and the
standard library), each once. Functions are read as their source parsed by ``ast`` and dumped
without line numbers and docstrings, so comments, formatting and docstrings do not count. A module
of a third-party distribution counts by that distribution's version, and the key holds Python's
minor version. Keys hold module and qualified names, never paths, so two checkouts of the same code
at different places give the same fingerprint.

What it cannot see (a file the code opens, an environment variable, the network, a value whose
``repr`` is not stable) is why layers can declare extra inputs or refuse reuse (docs/incremental.md).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import linecache
import sys
import sysconfig
import textwrap
import threading
import types
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Values whose ``repr`` is their content.
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
#: Top-level modules counted by their distribution's version even when they sit under the project's
#: root (Laminar itself, installed from a checkout).
_ALWAYS_THIRD_PARTY = frozenset({"laminar"})
#: Containers deeper than this are summarised by their type (a constant table, not a data set).
_DEPTH = 6


@dataclass(frozen=True)
class Fingerprint:
    """The digest of a layer's code, and what it is made of, for saying what changed."""

    #: The digest of the user's code reached (the packages' versions are kept apart).
    digest: str
    #: Each function and class of the user's code reached, by ``module.qualname``: its own digest.
    parts: Mapping[str, str] = field(default_factory=dict)
    #: Where each part is: its file relative to the project's root, and its first line.
    places: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    #: The third-party distributions the code reached, by name: their versions; and ``python``.
    packages: Mapping[str, str] = field(default_factory=dict)


@functools.cache
def _installed() -> tuple[tuple[importlib.metadata.Distribution, frozenset[str] | None, str], ...]:
    """Every installed distribution, read once per process: the top-level modules it declares
    (``top_level.txt``), or else its file list (``RECORD``) as text, with a newline before it."""
    found = []
    for distribution in importlib.metadata.distributions():
        declared = distribution.read_text("top_level.txt")
        listed = "" if declared else "\n" + (distribution.read_text("RECORD") or "")
        found.append((distribution, frozenset(declared.split()) if declared else None, listed))
    return tuple(found)


@functools.cache
def _distributions(top: str) -> tuple[str, ...]:
    """The distributions that provide top-level module ``top``, as
    ``importlib.metadata.packages_distributions()`` says, for a fraction of its cost: that infers
    every distribution's modules from its whole file list (half a second in an environment of 180
    distributions); this infers them only for a distribution whose list has a line starting with
    ``top``."""
    lines = ("\n" + top + "/", "\n" + top + ".", '\n"' + top)
    names = []
    for distribution, declared, listed in _installed():
        if declared is not None:
            provides = top in declared
        else:
            provides = any(line in listed for line in lines) and top in {
                file.parts[0] if len(file.parts) > 1 else file.with_suffix("").name
                for file in distribution.files or ()
                if file.suffix == ".py"
            }
        if provides:
            names.append(distribution.metadata["Name"])
    return tuple(names)


@functools.cache
def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _installed_roots() -> tuple[Path, ...]:
    """Where installed packages and the standard library live: never the user's code."""
    paths = sysconfig.get_paths()
    roots = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(Path(p).resolve() for p in roots if p)


def project_root(path: str | Path) -> Path:
    """The project a flow file belongs to: the nearest folder up holding ``pyproject.toml``,
    ``setup.py`` or ``.git``, else the file's own folder."""
    start = Path(path).resolve().parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("pyproject.toml", "setup.py", ".git")):
            return folder
    return start


def _normalized(source: str) -> str:
    """``source`` parsed, docstrings dropped, dumped without positions: its meaning, not its layout."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            first = body[0].value if body and isinstance(body[0], ast.Expr) else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _is_dunder(name: str) -> bool:
    """A module's own attribute (``__name__``, ``__spec__``...): where it is, not what it does."""
    return name.startswith("__") and name.endswith("__")


def _names(code: types.CodeType) -> set[str]:
    """Every global or attribute name ``code`` and the code nested in it use."""
    found = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found |= _names(constant)
    return found


class _Walk:
    """One fingerprint's walk through the code; each object visited once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[int, str] = {}  # id of a function or class -> its reference in digests
        self.keep: list[object] = []  # keeps ids unique while the walk runs
        self.parts: dict[str, str] = {}
        self.places: dict[str, tuple[str, int]] = {}
        self.packages: dict[str, str] = {}
        self.skip: tuple[type, ...] = ()

    # ---- where code comes from ----------------------------------------------------------------
    def _is_users(self, module_name: str | None) -> bool:
        if not module_name or module_name.partition(".")[0] in _ALWAYS_THIRD_PARTY:
            return False
        module = sys.modules.get(module_name)
        file = getattr(module, "__file__", None)
        if file is None:
            return module_name == "__main__"
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in _installed_roots()):
            return False
        return path.is_relative_to(self.root)

    def _named(self, module_name: str) -> str:
        """A user's module as keys name it: its file's path under the project's root, dotted, so a
        flow file run as ``__main__``, or imported by the ``laminar`` command under a name of its
        own, is keyed as the same module."""
        file = getattr(sys.modules.get(module_name), "__file__", None)
        if file is None:
            return module_name
        path = Path(file).resolve()
        if not path.is_relative_to(self.root):
            return module_name
        parts = path.relative_to(self.root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)

    def _package(self, module_name: str | None) -> str:
        """Count a third-party module by its distribution's version; what to put in the digest."""
        top = (module_name or "").partition(".")[0]
        if not top or top in sys.stdlib_module_names or top == "builtins":
            return f"stdlib:{top}"
        for distribution in _distributions(top):
            self.packages[distribution] = _version(distribution)
        return f"package:{top}"

    # ---- values -------------------------------------------------------------------------------
    def value(self, value: Any, depth: int = 0) -> str:
        if isinstance(value, _PLAIN):
            return repr(value)
        if depth > _DEPTH:
            return f"<deep {type(value).__qualname__}>"
        if isinstance(value, (tuple, list, set, frozenset)):
            items = [self.value(item, depth + 1) for item in value]
            if isinstance(value, (set, frozenset)):
                items.sort()
            return f"{type(value).__name__}({','.join(items)})"
        if isinstance(value, dict):
            pairs = sorted(f"{self.value(k, depth + 1)}:{self.value(v, depth + 1)}" for k, v in value.items())
            return f"dict({','.join(pairs)})"
        if isinstance(value, types.ModuleType):
            if self._is_users(value.__name__):
                return f"module:{self._named(value.__name__)}"
            return self._package(value.__name__)
        if isinstance(value, types.MethodType):
            return self.value(value.__func__, depth)
        if isinstance(value, types.FunctionType):
            return self.function(value)
        if isinstance(value, (staticmethod, classmethod)):
            return self.value(value.__func__, depth)
        if isinstance(value, property):
            return "property(" + ",".join(self.value(f, depth + 1) for f in (value.fget, value.fset)) + ")"
        if isinstance(value, functools.partial):
            return f"partial({self.value(value.func, depth + 1)},{self.value(value.args, depth + 1)},{self.value(value.keywords, depth + 1)})"
        if isinstance(value, type):
            return self.cls(value)
        kind = type(value)
        if self._is_users(kind.__module__):
            state = getattr(value, "__dict__", None)
            return f"{self.cls(kind)}{{{self.value(state, depth + 1) if state is not None else ''}}}"
        origin = self._package(kind.__module__)
        text = repr(value)
        if " at 0x" in text:  # an object's identity, not its content: count its type only
            text = ""
        return f"{origin}:{kind.__qualname__}:{text}"

    def function(self, function: types.FunctionType) -> str:
        if not self._is_users(function.__module__):
            return f"{self._package(function.__module__)}:{function.__qualname__}"
        name = f"{self._named(function.__module__)}.{function.__qualname__}"
        if id(function) in self.seen:
            return self.seen[id(function)]
        self.seen[id(function)] = f"fn:{name}"
        self.keep.append(function)
        try:
            body = _normalized(inspect.getsource(function))
        except (OSError, TypeError, SyntaxError):  # no source (built in a string): its bytecode
            body = function.__code__.co_code.hex() + repr(function.__code__.co_consts)
        pieces = [body]
        names = _names(function.__code__)
        namespace = function.__globals__
        for global_name in sorted(names):
            if global_name in ("__file__", "__cached__") and isinstance(namespace.get(global_name), str):
                pieces.append(f"{global_name}={self._relative(namespace[global_name])}")
            elif global_name in namespace and not _is_dunder(global_name):
                pieces.append(f"{global_name}={self.reference(namespace[global_name], names)}")
        for cell_name, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # not yet filled
                contents = "<empty>"
            pieces.append(f"closure {cell_name}={self.value(contents)}")
        pieces.append(f"defaults={self.value(function.__defaults__)}")
        pieces.append(f"kwdefaults={self.value(function.__kwdefaults__)}")
        self._record(name, pieces, function)
        return f"fn:{name}"

    def _relative(self, file: str) -> str:
        """A path the code reads as a global, as the key may hold it: relative to the project."""
        path = Path(file).resolve()
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else path.name

    def reference(self, value: Any, names: set[str]) -> str:
        """A global the code names; a user's module is followed through the attributes it uses."""
        if isinstance(value, types.ModuleType) and self._is_users(value.__name__):
            used = sorted(n for n in names if n in vars(value))
            inner = ",".join(f"{n}={self.value(vars(value)[n])}" for n in used)
            return f"module:{self._named(value.__name__)}({inner})"
        return self.value(value)

    def cls(self, kind: type) -> str:
        if not self._is_users(kind.__module__):
            return f"{self._package(kind.__module__)}:{kind.__qualname__}"
        name = f"{self._named(kind.__module__)}.{kind.__qualname__}"
        if kind in self.skip:  # another layer: its values are inputs, its code is its own key's
            return f"layer:{name}"
        if id(kind) in self.seen:
            return self.seen[id(kind)]
        self.seen[id(kind)] = f"class:{name}"
        self.keep.append(kind)
        pieces = [f"bases={','.join(self.value(base) for base in kind.__bases__)}"]
        for attribute, member in sorted(vars(kind).items()):
            if attribute in ("__module__", "__dict__", "__weakref__", "__doc__", "__qualname__"):
                continue
            if attribute in ("__annotations__", "__static_attributes__", "__firstlineno__"):
                continue
            pieces.append(f"{attribute}={self.value(member)}")
        self._record(name, pieces, kind)
        return f"class:{name}"

    def _record(self, name: str, pieces: list[str], thing: Any) -> None:
        self.parts[name] = hashlib.sha256("\n".join(pieces).encode()).hexdigest()
        try:
            file = Path(inspect.getsourcefile(thing) or "").resolve()
            line = _first_line(thing)
            where = file.relative_to(self.root).as_posix() if file.is_relative_to(self.root) else file.name
        except (OSError, TypeError, ValueError):
            where, line = "?", 0
        self.places[name] = (where, line)


def _first_line(thing: Any) -> int:
    """Where ``thing`` starts (its first decorator), as ``inspect.getsourcelines`` says, without
    what that costs each time: a function's code says it; a class is found in its file's classes,
    parsed once per file's text (``inspect`` parses the whole file again for every class)."""
    code = getattr(thing, "__code__", None)
    if isinstance(code, types.CodeType):
        return code.co_firstlineno
    file = inspect.getsourcefile(thing)
    module = sys.modules.get(thing.__module__)
    lines = linecache.getlines(file, vars(module)) if file and module is not None else []
    found = _class_lines(file or "", tuple(lines)).get(thing.__qualname__) if lines else None
    return found if found is not None else inspect.getsourcelines(thing)[1]


@functools.lru_cache(maxsize=64)
def _class_lines(file: str, lines: tuple[str, ...]) -> dict[str, int]:
    """Each class defined in ``lines`` (the text of ``file``) by qualified name: its first line
    (its first decorator's), the first definition of a name as ``inspect`` finds it."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, qualname: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, [*qualname, child.name, "<locals>"])
            elif isinstance(child, ast.ClassDef):
                name = [*qualname, child.name]
                first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                found.setdefault(".".join(name), first)
                visit(child, name)
            else:
                visit(child, qualname)

    try:
        visit(ast.parse("".join(lines), file), [])
    except (SyntaxError, ValueError):
        return {}
    return found


def fingerprint(objects: Iterable[Any], *, root: Path, skip: Iterable[type] = ()) -> Fingerprint:
    """The fingerprint of the code ``objects`` (classes, functions) reach; ``skip`` are classes
    counted by name only (the flow's other layers)."""
    walk = _Walk(root)
    walk.skip = tuple(skip)
    top = [walk.value(thing) for thing in objects]
    packages = {
        **dict(sorted(walk.packages.items())),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }
    # The packages are a part of the key of their own (so a new version is said as such).
    whole = "\n".join([*top, *(f"{name}:{digest}" for name, digest in sorted(walk.parts.items()))])
    return Fingerprint(
        hashlib.sha256(whole.encode()).hexdigest(),
        dict(sorted(walk.parts.items())),
        walk.places,
        packages,
    )


_cache: weakref.WeakKeyDictionary[type, dict[str, Fingerprint]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
#: One fingerprint computed at a time: ``inspect.getsource`` reads through ``linecache`` and
#: ``inspect``'s module maps, which other threads computing at once can empty under it, and a
#: function whose source is not found is fingerprinted by its bytecode instead (another digest).
_computing = threading.Lock()


def of_layer(flow: type, layer: type, name: str, layers: Iterable[type], root: Path) -> Fingerprint:
    """The fingerprint of layer ``name`` of ``flow``: its class and the flow's own methods, computed
    once per flow class per process."""
    with _cache_lock:
        cached = _cache.setdefault(flow, {}).get(name)
    if cached is not None:
        return cached
    with _computing:
        with _cache_lock:
            cached = _cache.setdefault(flow, {}).get(name)
        return cached if cached is not None else _computed(flow, layer, name, layers, root)


def _computed(flow: type, layer: type, name: str, layers: Iterable[type], root: Path) -> Fingerprint:
    flow_methods = [
        member
        for _, member in sorted(vars(flow).items())
        if isinstance(member, (types.FunctionType, staticmethod, classmethod))
    ]
    others = tuple(other for other in layers if other is not layer)
    found = fingerprint([layer, *flow_methods], root=root, skip=others)
    with _cache_lock:
        _cache.setdefault(flow, {})[name] = found
    return found
