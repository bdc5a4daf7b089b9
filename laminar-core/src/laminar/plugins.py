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

from laminar._model.flow import FlowDefinition
from laminar._plugins.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
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
