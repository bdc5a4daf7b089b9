"""``laminar plugins``: the datastores, executors and protocols installed, and who provides them."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import click

from laminar._cli.output import emit_json, json_option, table
from laminar._plugins.manager import BROKEN, plugin_manager
from laminar.plugins import ENTRY_POINT_GROUP


def _distributions() -> dict[str, tuple[str, str]]:
    """Plugin name -> (distribution, version), from the entry points; the built-ins are laminar-core's."""
    core = ("laminar-core", importlib.metadata.version("laminar-core"))
    found = {"laminar.builtin": core, "laminar.status": core}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        if dist is not None:
            found[entry_point.name] = (dist.metadata["Name"], dist.version)
    return found


def installed() -> list[dict[str, Any]]:
    """One row per component a plugin provides: kind, name(s), class, plugin, distribution, version."""
    manager = plugin_manager()
    distributions = _distributions()
    rows: list[dict[str, Any]] = []
    for plugin_name, plugin in manager.list_name_plugin():
        dist, version = distributions.get(plugin_name, ("?", "?"))
        where = {"plugin": plugin_name, "distribution": dist, "version": version}
        if hasattr(plugin, "laminar_datastores"):
            for kind in plugin.laminar_datastores():
                rows.append(
                    {
                        "kind": "datastore",
                        "names": [f"{s}://" for s in kind.schemes],
                        "class": _qualified(kind),
                        **where,
                    }
                )
        if hasattr(plugin, "laminar_executors"):
            for kind in plugin.laminar_executors():
                rows.append(
                    {"kind": "executor", "names": list(kind.names), "class": _qualified(kind), **where}
                )
        if hasattr(plugin, "laminar_protocols"):
            for types, protocol in plugin.laminar_protocols():
                rows.append(
                    {
                        "kind": "protocol",
                        "names": [t.__name__ for t in types],
                        "class": protocol.name + (" (safe)" if protocol.safe else ""),
                        **where,
                    }
                )
    return rows


def _names(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names) - most} more; --json lists all)"


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List the installed datastores, executors and serialization protocols, with their distributions."""
    rows = installed()
    if as_json:
        emit_json({"components": rows, "broken": dict(BROKEN)})
        return
    table(
        ("kind", "names", "class", "distribution", "version"),
        [(r["kind"], _names(r["names"]), r["class"], r["distribution"], r["version"]) for r in rows],
    )
    for name, why in BROKEN.items():
        click.echo(f"plugin {name!r} failed to load: {why}", err=True)
