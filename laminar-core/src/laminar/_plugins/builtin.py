"""The built-in components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from collections.abc import Sequence

from laminar._plugins.hookspecs import hookimpl
from laminar._runtime.executor import Executor
from laminar._runtime.process import Process
from laminar._runtime.thread import Thread
from laminar._transport.datastore import Datastore
from laminar._transport.local import Local
from laminar._transport.memory import Memory


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    return [Local, Memory]


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    return [Thread, Process]
