"""Registers the Dask executor with Laminar (entry point ``dask`` in the ``laminar`` group)."""

from __future__ import annotations

from collections.abc import Sequence

from laminar._plugins.hookspecs import hookimpl
from laminar._runtime.executor import Executor

from laminar_dask.executor import Dask


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    return [Dask]
