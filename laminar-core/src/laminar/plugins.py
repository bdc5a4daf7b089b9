"""The plugin author's API: everything a datastore or executor plugin needs, and nothing else.

A distribution exposes a module under the ``laminar`` entry-point group and implements hooks in it::

    [project.entry-points.laminar]
    foo = "laminar_foo.plugin"

    # laminar_foo/plugin.py
    from laminar.plugins import Datastore, hookimpl

    @hookimpl
    def laminar_datastores() -> list[type[Datastore]]:
        return [Foo]

The hookspecs (what each hook is called with and returns) are in :mod:`laminar._plugins.hookspecs`
and on the "Plugin API" docs page. Everything listed in ``__all__`` here is public and kept stable;
every other ``laminar._*`` module is internal and may change between releases.
"""

from typing import TYPE_CHECKING, Any

from laminar._plugins.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition
    from laminar._plugins.manager import disabled
    from laminar._runtime.environment import environment_for, mark_worker
    from laminar._runtime.executor import Executor, SplitNotStarted
    from laminar._runtime.run import Run, Stash, StashKey
    from laminar._runtime.shipping import FlowNotInstalled, FlowPacker, FlowUnpacker, PackedFlow, without_flow
    from laminar._runtime.split import recorded_outcome, run_split, run_splits
    from laminar._runtime.task import Binding, SplitOutcome, SplitTask
    from laminar._serialization.protocols import Protocol
    from laminar._transport.datastore import Datastore
    from laminar._transport.masking import causes, is_secret_name, masked, redact, scrub
    from laminar._transport.objectstore import BucketURL, ObjectStore, buffered_reader
    from laminar._transport.retries import StoragePolicy, caused_by, remaining, with_retries

#: Where each name is defined: imported when a plugin first asks for it, so that loading a plugin
#: that only needs ``hookimpl`` (or a datastore base class) does not import the runtime.
_WHERE = {
    "Binding": "laminar._runtime.task",
    "BucketURL": "laminar._transport.objectstore",
    "Datastore": "laminar._transport.datastore",
    "Executor": "laminar._runtime.executor",
    "FlowDefinition": "laminar._model.flow",
    "FlowNotInstalled": "laminar._runtime.shipping",
    "FlowPacker": "laminar._runtime.shipping",
    "FlowUnpacker": "laminar._runtime.shipping",
    "ObjectStore": "laminar._transport.objectstore",
    "PackedFlow": "laminar._runtime.shipping",
    "Protocol": "laminar._serialization.protocols",
    "Run": "laminar._runtime.run",
    "SplitNotStarted": "laminar._runtime.executor",
    "SplitOutcome": "laminar._runtime.task",
    "SplitTask": "laminar._runtime.task",
    "Stash": "laminar._runtime.run",
    "StashKey": "laminar._runtime.run",
    "StoragePolicy": "laminar._transport.retries",
    "buffered_reader": "laminar._transport.objectstore",
    "caused_by": "laminar._transport.retries",
    "causes": "laminar._transport.masking",
    "disabled": "laminar._plugins.manager",
    "environment_for": "laminar._runtime.environment",
    "is_secret_name": "laminar._transport.masking",
    "mark_worker": "laminar._runtime.environment",
    "masked": "laminar._transport.masking",
    "recorded_outcome": "laminar._runtime.split",
    "redact": "laminar._transport.masking",
    "remaining": "laminar._transport.retries",
    "run_split": "laminar._runtime.split",
    "run_splits": "laminar._runtime.split",
    "scrub": "laminar._transport.masking",
    "with_retries": "laminar._transport.retries",
    "without_flow": "laminar._runtime.shipping",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "Binding",
    "BucketURL",
    "Datastore",
    "Executor",
    "FlowDefinition",
    "FlowNotInstalled",
    "FlowPacker",
    "FlowUnpacker",
    "ObjectStore",
    "PackedFlow",
    "Protocol",
    "Run",
    "SplitNotStarted",
    "SplitOutcome",
    "SplitTask",
    "Stash",
    "StashKey",
    "StoragePolicy",
    "buffered_reader",
    "caused_by",
    "causes",
    "disabled",
    "environment_for",
    "hookimpl",
    "hookspec",
    "is_secret_name",
    "mark_worker",
    "masked",
    "recorded_outcome",
    "redact",
    "remaining",
    "run_split",
    "run_splits",
    "scrub",
    "with_retries",
    "without_flow",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'laminar.plugins' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
