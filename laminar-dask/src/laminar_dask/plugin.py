"""Registers the Dask executor with Laminar (entry point ``dask`` in the ``laminar`` group)."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Executor, hookimpl

from laminar_dask.executor import Dask


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    return [Dask]
