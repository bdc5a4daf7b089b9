"""The built-in components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins.hookspecs import hookimpl
from laminar.runtime.executor import Executor
from laminar.runtime.process import Process
from laminar.runtime.thread import Thread
from laminar.storage.datastore import Datastore
from laminar.storage.local import Local
from laminar.storage.memory import Memory


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    return [Local, Memory]


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    return [Thread, Process]
