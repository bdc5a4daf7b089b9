"""A layer's reuse key, and the first difference between two keys, said in a line.

The key is the digest of its components, each a name and a digest: the code (``code`` and, to say
what changed, ``code:<module.qualname>`` per function and class reached), ``package:<name>`` and
``python`` versions, ``input:<Layer>.<artifact>`` per artifact of every layer it takes (summarised
per layer: its splits' content digests and protocols, so a key costs the same however many splits
the upstream layer had), ``parameter:<name>``, ``configuration`` (foreach, Catch) and the declared
extra inputs (``file:<path>``, ``env:<NAME>``: their contents' digests, never their values).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from laminar._runtime import fingerprint
from laminar._storage import reuse_index

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition
    from laminar._storage.records import SplitRecord
    from laminar._storage.store import ExecutionStore


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def root_of(flow: FlowDefinition) -> Path:
    """The project root of the flow's file (where its module lives)."""
    module = sys.modules.get(type(flow).__module__)
    file = getattr(module, "__file__", None) or inspect.getfile(type(flow))
    return fingerprint.project_root(file)


def outputs(store: ExecutionStore, layer: str) -> dict[str, str]:
    """A finished layer's values summarised per artifact: ``{name: digest}`` over every split's
    content digests, protocols and shards, in split order (and ``caught`` for errors Catch absorbed).

    Each artifact's text is gathered whole and hashed once, not fed to its hash split by split: the
    same digest, in much less time for a rerun keying the readers of a large foreach (figures:
    docs/performance.md).
    """
    return reuse_index.summarise(store.finished_splits(layer))


def split_digest(split: SplitRecord | None) -> str:
    """One finished split's values: its archives' content digests and protocols."""
    if split is None:
        return "missing"
    return _sha(
        ";".join(
            f"{name}:{archive.sharded}:"
            + ",".join(f"{a.hash}:{a.hexdigest}:{a.protocol}" for a in archive.artifacts)
            for name, archive in sorted(split.archives.items())
        )
        + f"|{split.caught}"
    )


def configuration_text(flow: FlowDefinition, name: str) -> str:
    """What of a layer's configuration changes what it produces: its foreach axes and Catch."""
    configuration = flow.registry[name].configuration
    axes = (
        [f"{p.layer.__name__}.{p.attribute}[{p.index}]" for p in configuration.foreach.parameters]
        if configuration.foreach is not None
        else None
    )
    catch = (
        sorted(f"{e.__module__}.{e.__qualname__}" for e in configuration.catch.exceptions)
        if configuration.catch is not None
        else None
    )
    return f"foreach={axes};catch={catch}"


def extra_inputs(inputs: tuple[str, ...], root: Path, layer: str) -> dict[str, str]:
    """Declared files (by content) and ``$NAME`` environment variables (by their value's digest)."""
    found: dict[str, str] = {}
    for declared in inputs:
        if declared.startswith("$"):
            value = os.environ.get(declared[1:])
            found[f"env:{declared[1:]}"] = "unset" if value is None else _sha(value)
            continue
        path = root / declared
        if path.is_dir():
            digest = hashlib.sha256()
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{file.relative_to(path).as_posix()}:{_sha(file.read_bytes())};".encode())
            found[f"file:{declared}"] = digest.hexdigest()
        elif path.is_file():
            found[f"file:{declared}"] = _sha(path.read_bytes())
        else:
            found[f"file:{declared}"] = "missing"
    return found


def key_of(components: Mapping[str, str]) -> str:
    return _sha("\n".join(f"{name}={value}" for name, value in sorted(components.items())))


def difference(
    old: Mapping[str, str],
    new: Mapping[str, str],
    places: Mapping[str, tuple[str, int]],
    parameters: tuple[Mapping[str, object], Mapping[str, object]] | None = None,
) -> str:
    """The first difference between two keys' components, said as why the layer ran."""
    changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    order = ("code:", "file:", "env:", "configuration", "parameter:", "input:", "package:", "python", "code")
    for prefix in order:
        for name in changed:
            if not name.startswith(prefix) or (prefix == "code" and name != "code"):
                continue
            kind, _, what = name.partition(":")
            if kind == "code" and what:
                file, line = places.get(what, ("?", 0))
                verb = "changed" if name in old and name in new else "added" if name in new else "removed"
                return f"code {verb}: {what} ({file}, line {line})"
            if kind == "code":
                return "code changed"
            if kind == "file":
                return f"input file changed: {what}"
            if kind == "env":
                return f"environment variable changed: {what}"
            if kind == "configuration":
                return f"configuration changed: {old.get(name)} -> {new.get(name)}"
            if kind == "parameter":
                if parameters is not None:
                    before = parameters[0].get(what, "(absent)")
                    after = parameters[1].get(what, "(absent)")
                    return f"parameter changed: {what} {before!r} -> {after!r}"
                return f"parameter changed: {what}"
            if kind == "input":
                layer, _, artifact = what.partition(".")
                return f"input changed: artifact {artifact!r} of layer {layer}"
            if kind == "package":
                return (
                    f"package version changed: {what} {old.get(name, '(none)')} -> {new.get(name, '(none)')}"
                )
            if kind == "python":
                return f"Python version changed: {old.get(name)} -> {new.get(name)}"
    return "its key changed" if changed else "no earlier execution finished it with this key"
