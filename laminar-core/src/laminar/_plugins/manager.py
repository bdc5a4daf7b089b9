"""The plugin manager: loads the ``laminar`` entry-point group and resolves datastores, executors and
protocols through the hooks. Defaults are resolved the same way: the ``file`` scheme and the
``process`` executor name, which the built-in plugin provides like any other.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import warnings
from collections.abc import Iterator
from pathlib import Path

import pluggy

from laminar._plugins import builtin, discovery, hookspecs, log_capture, progress, status
from laminar._runtime.executor import Executor
from laminar._serialization.registry import ProtocolRegistry
from laminar._transport.datastore import Datastore
from laminar.errors import ConfigurationError, PluginNotFound

#: What a flow uses when neither its arguments nor the environment choose.
DEFAULT_EXECUTOR = "process"

#: Which distribution provides a scheme or executor Laminar knows of but that may not be installed.
#: Laminar is not on PyPI (the ``laminar`` there is an unrelated earlier project): the hint says how to
#: install from a checkout of this repository.
KNOWN_PROVIDERS = {
    scheme: f"{distribution} (in the Laminar repository run ./run build, then pip install "
    f"'laminar[{extra}]' --find-links dist/)"
    for distribution, extra, schemes in (
        ("laminar-s3", "s3", ("s3",)),
        ("laminar-gcs", "gcs", ("gs", "gcs")),
        ("laminar-azure", "azure", ("az", "azure", "abfs", "abfss")),
        ("laminar-dask", "dask", ("dask",)),
        ("laminar-fsspec", "fsspec", ("sftp",)),
    )
    for scheme in schemes
}


#: Entry points that failed to load: name -> why.
BROKEN: dict[str, str] = {}


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager: built-ins first, then every installed ``laminar`` entry point."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(builtin, name="laminar.builtin")
    manager.register(status, name="laminar.status")
    manager.register(progress, name="laminar.progress")
    manager.register(log_capture, name="laminar.logs")
    for entry_point in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        if manager.get_plugin(entry_point.name) is not None:
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except Exception as error:
            BROKEN[entry_point.name] = f"{entry_point.value}: {type(error).__name__}: {error}"
            warnings.warn(
                f"laminar plugin {entry_point.name!r} failed to load: {BROKEN[entry_point.name]}",
                stacklevel=2,
            )
    return manager


def datastore_classes() -> dict[str, type[Datastore]]:
    """URL scheme -> datastore class, from every plugin (later registrations do not override)."""
    found: dict[str, type[Datastore]] = {}
    for classes in reversed(plugin_manager().hook.laminar_datastores()):
        for kind in classes:
            for scheme in kind.schemes:
                found.setdefault(scheme, kind)
    return found


def executor_classes() -> dict[str, type[Executor]]:
    found: dict[str, type[Executor]] = {}
    for classes in reversed(plugin_manager().hook.laminar_executors()):
        for kind in classes:
            for name in kind.names:
                found.setdefault(name, kind)
    return found


@functools.lru_cache(maxsize=1)
def plugin_protocols() -> ProtocolRegistry:
    """The protocols plugins register for every datastore (a user's ``@datastore.protocol`` wins).

    Hook results come newest plugin first, so a later plugin wins over an earlier one per type.
    """
    registry = ProtocolRegistry()
    for pairs in plugin_manager().hook.laminar_protocols():
        for types, protocol in pairs:
            registry.add(types, protocol, replace=False)
    return registry


def _missing(kind: str, wanted: str, installed: list[str]) -> PluginNotFound:
    provider = KNOWN_PROVIDERS.get(wanted)
    bridged = [name for name in installed if name.startswith("fsspec+")]
    if len(bridged) > 3:  # laminar-fsspec serves every protocol fsspec knows: name them once
        installed = [name for name in installed if not name.startswith("fsspec+")] + ["fsspec+<protocol>://"]
    hint = f" It is provided by {provider}." if provider else ""
    broken = "".join(f" Plugin {name!r} failed to load ({why})." for name, why in BROKEN.items())
    return PluginNotFound(
        f"no installed plugin provides the {kind} {wanted!r}.{hint} Installed {kind}s: {', '.join(installed)}."
        + broken
    )


def resolve_datastore(spec: Datastore | str | None) -> Datastore:
    """A Datastore object as is; a URL through the plugin that registered its scheme; None: the default,
    the nearest ``.laminar`` to the working directory (see ``discovery``)."""
    if spec is None or spec == "":
        spec = discovery.nearest((Path.cwd(),)).url
    if isinstance(spec, Datastore):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"datastore must be a Datastore or a URL string, got {spec!r}")
    scheme, separator, _ = spec.partition("://")
    if not separator or not scheme:
        raise ConfigurationError(
            f"datastore URL {spec!r} has no scheme; write it as s3://bucket/prefix, gs://bucket/prefix, "
            "az://container/prefix, file:///absolute/path or memory://"
        )
    classes = datastore_classes()
    kind = classes.get(scheme.lower())
    if kind is None:
        raise _missing("datastore scheme", scheme.lower(), [f"{s}://" for s in sorted(classes)])
    return kind.from_url(spec)


def resolve_executor(spec: Executor | str | None) -> Executor:
    """An Executor object as is; a name or URL (``thread``, ``dask://host:8786``); None: the default."""
    if spec is None or spec == "":
        spec = DEFAULT_EXECUTOR
    if isinstance(spec, Executor):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"executor must be an Executor or a name such as 'thread', got {spec!r}")
    name = spec.partition("://")[0].lower()
    classes = executor_classes()
    kind = classes.get(name)
    if kind is None:
        raise _missing("executor", name, sorted(classes))
    return kind.from_url(spec)


@contextlib.contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Run without the named plugins (``"laminar.logs"``, ``"laminar.progress"``, an entry point's name).

    They are unregistered for the duration and registered again afterwards, in this process.
    """
    manager = plugin_manager()
    unknown = [name for name in names if manager.get_plugin(name) is None]
    if unknown:
        registered = ", ".join(sorted(name for name, _ in manager.list_name_plugin() if name))
        raise PluginNotFound(
            f"no plugin named {', '.join(unknown)} is registered; the registered ones: {registered}"
        )
    removed = [(name, manager.unregister(name=name)) for name in names]
    try:
        yield
    finally:
        for name, plugin in removed:
            manager.register(plugin, name=name)
