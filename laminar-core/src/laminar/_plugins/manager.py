"""The plugin manager: loads the ``laminar`` entry-point group and resolves datastores, executors and
protocols through the hooks. Defaults are resolved the same way: the ``file`` scheme and the
``process`` executor name, which the built-in plugin provides like any other.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import warnings
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, cast

import pluggy

from laminar._plugins import discovery, hookspecs
from laminar._runtime.executor import Executor
from laminar._transport.datastore import Datastore
from laminar.errors import ConfigurationError, PluginNotFound

if TYPE_CHECKING:
    from laminar._serialization.registry import ProtocolRegistry

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


#: Entry points that failed to load: name -> why. Entry points load once per process (``_entry_points``).
BROKEN: dict[str, str] = {}

#: The plugins every flow is configured with, in registration order: ``name -> module``, imported
#: when the installed plugins are first needed (:func:`plugin_manager`).
_BUILT_IN: tuple[tuple[str, str], ...] = (
    ("laminar.builtin", "laminar._plugins.builtin"),
    ("laminar.status", "laminar._plugins.run_records"),
    ("laminar.progress", "laminar._plugins.progress"),
    ("laminar.logs", "laminar._plugins.log_capture"),
)


class _Manager(pluggy.PluginManager):
    """A plugin manager that reads a module plugin's hook implementations from its namespace.

    pluggy looks every name of a plugin up with ``inspect.getattr_static``, a few microseconds each:
    registering the installed plugins (a module of a hundred names or so each) cost a few
    milliseconds per flow object. A module's own functions are read straight from its namespace,
    which is what ``getattr_static`` finds there; anything else goes to pluggy as before.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if isinstance(plugin, ModuleType):
            value = plugin.__dict__.get(name, _ABSENT)
            if value is _ABSENT or isinstance(value, (staticmethod, classmethod, MethodType)):
                return super().parse_hookimpl_opts(plugin, name)
            if not isinstance(value, FunctionType):
                return None  # neither a function nor a method (nor what a module's type has): no hook
            if not name.startswith("__"):  # pluggy's own reading of a function
                opts = getattr(value, f"{self.project_name}_impl", None)
                return opts if isinstance(opts, dict) else None
        return super().parse_hookimpl_opts(plugin, name)


_ABSENT = object()


def _new_manager() -> pluggy.PluginManager:
    manager = _Manager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


@functools.cache
def _entry_points() -> tuple[tuple[str, object], ...]:
    """Every installed ``laminar`` entry point, loaded once per process (a broken one is warned of
    once and listed in ``BROKEN``)."""
    loaded: list[tuple[str, object]] = []
    taken = {name for name, _ in _BUILT_IN}
    for entry_point in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        if entry_point.name in taken:
            continue
        try:
            loaded.append((entry_point.name, entry_point.load()))
        except Exception as error:
            BROKEN[entry_point.name] = f"{entry_point.value}: {type(error).__name__}: {error}"
            warnings.warn(
                f"laminar plugin {entry_point.name!r} failed to load: {BROKEN[entry_point.name]}",
                stacklevel=3,
            )
            continue
        taken.add(entry_point.name)
    return tuple(loaded)


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The installed plugins: built-ins first, then every ``laminar`` entry point.

    Each flow is configured with a manager of its own (:func:`configured_manager`), a copy of this
    one as it is when the flow is made; this one resolves what no flow is asked for (the
    ``laminar`` command's ``--datastore``, ``laminar plugins``). Registering a plugin here (a test
    does) configures the flows made afterwards with it.
    """
    import importlib

    manager = _new_manager()
    for name, module in _BUILT_IN:
        manager.register(importlib.import_module(module), name=name)
    for name, plugin in _entry_points():
        manager.register(plugin, name=name)
    return manager


def command_plugins() -> pluggy.PluginManager:
    """The plugins that add ``laminar`` commands (``laminar_cli_commands``): the installed ones as
    :func:`plugin_manager` has them once this process made it; before that, the entry points alone,
    since no built-in plugin adds a command, so listing the commands does not import the runtime."""
    if plugin_manager.cache_info().currsize:
        return plugin_manager()
    manager = _new_manager()
    for name, plugin in _entry_points():
        manager.register(plugin, name=name)
    return manager


#: Every flow's manager still in use, so that ``disabled`` reaches them all (see there).
_configured: weakref.WeakSet[pluggy.PluginManager] = weakref.WeakSet()


def configured_manager() -> pluggy.PluginManager:
    """A plugin manager of one flow's own: the installed plugins registered now, and nothing a
    plugin registers on another flow's manager. Entry points are not loaded again."""
    manager = _new_manager()
    for name, plugin in plugin_manager().list_name_plugin():
        manager.register(plugin, name=name)
    _configured.add(manager)
    return manager


def datastore_classes(manager: pluggy.PluginManager | None = None) -> dict[str, type[Datastore]]:
    """URL scheme -> datastore class, from every plugin of ``manager`` (the installed ones by
    default); later registrations do not override."""
    found: dict[str, type[Datastore]] = {}
    for classes in reversed((manager or plugin_manager()).hook.laminar_datastores()):
        for kind in classes:
            for scheme in kind.schemes:
                found.setdefault(scheme, kind)
    return found


def executor_classes(manager: pluggy.PluginManager | None = None) -> dict[str, type[Executor]]:
    """Executor name -> class, from every plugin of ``manager`` (the installed ones by default)."""
    found: dict[str, type[Executor]] = {}
    for classes in reversed((manager or plugin_manager()).hook.laminar_executors()):
        for kind in classes:
            for name in kind.names:
                found.setdefault(name, kind)
    return found


@functools.lru_cache(maxsize=1)
def plugin_protocols() -> ProtocolRegistry:
    """The protocols the installed plugins register (see :func:`protocols_of`)."""
    return protocols_of(plugin_manager())


def protocols_of(manager: pluggy.PluginManager) -> ProtocolRegistry:
    """The protocols ``manager``'s plugins register for every datastore (a user's
    ``@datastore.protocol`` wins). Hook results come newest plugin first, so a later plugin wins
    over an earlier one per type.
    """
    from laminar._serialization.registry import ProtocolRegistry

    registry = ProtocolRegistry()
    for pairs in manager.hook.laminar_protocols():
        for types, protocol in pairs:
            registry.add(types, protocol, replace=False)
    return registry


def _first_claim(hook: pluggy.HookCaller, claims: str, wanted: str) -> Any:  # a class, or None
    """The class of the plugin that wins ``wanted`` (a scheme or an executor name) among the results
    of the no-argument ``hook``, as :func:`datastore_classes` and :func:`executor_classes` decide:
    the first registered claim wins. The plugins are asked in that order and the asking stops at the
    first claim, so resolving ``file://`` or ``process`` does not import every plugin's classes (and
    what they import: fsspec, to list its protocols). None: no plugin claims it.
    """
    implementations = hook.get_hookimpls()
    if any(each.hookwrapper or each.wrapper for each in implementations):  # wrappers see the whole call
        for classes in reversed(hook()):
            for kind in classes:
                if wanted in getattr(kind, claims):
                    return kind
        return None
    for implementation in implementations:  # the order pluggy calls them in, reversed
        claimed = cast("Iterable[Any]", implementation.function() or ())
        for kind in claimed:
            if wanted in getattr(kind, claims):
                return kind
    return None


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


def resolve_datastore(spec: Datastore | str | None, manager: pluggy.PluginManager | None = None) -> Datastore:
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
    kind: type[Datastore] | None = _first_claim(
        (manager or plugin_manager()).hook.laminar_datastores, "schemes", scheme.lower()
    )
    if kind is None:
        classes = datastore_classes(manager)
        raise _missing("datastore scheme", scheme.lower(), [f"{s}://" for s in sorted(classes)])
    return kind.from_url(spec)


def resolve_executor(spec: Executor | str | None, manager: pluggy.PluginManager | None = None) -> Executor:
    """An Executor object as is; a name or URL (``thread``, ``dask://host:8786``); None: the default."""
    if spec is None or spec == "":
        spec = DEFAULT_EXECUTOR
    if isinstance(spec, Executor):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"executor must be an Executor or a name such as 'thread', got {spec!r}")
    name = spec.partition("://")[0].lower()
    kind: type[Executor] | None = _first_claim(
        (manager or plugin_manager()).hook.laminar_executors, "names", name
    )
    if kind is None:
        raise _missing("executor", name, sorted(executor_classes(manager)))
    return kind.from_url(spec)


@contextlib.contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Run without the named plugins (``"laminar.logs"``, ``"laminar.progress"``, an entry point's name).

    They are unregistered for the duration, from the installed plugins and from every flow's own
    manager in this process, and registered again afterwards where they were.
    """
    manager = plugin_manager()
    unknown = [name for name in names if manager.get_plugin(name) is None]
    if unknown:
        registered = ", ".join(sorted(name for name, _ in manager.list_name_plugin() if name))
        raise PluginNotFound(
            f"no plugin named {', '.join(unknown)} is registered; the registered ones: {registered}"
        )
    removed: list[tuple[pluggy.PluginManager, str, object]] = []
    try:
        for each in (manager, *list(_configured)):
            for name in names:
                if each.get_plugin(name) is not None:
                    removed.append((each, name, each.unregister(name=name)))
        yield
    finally:
        for each, name, plugin in removed:
            each.register(plugin, name=name)
