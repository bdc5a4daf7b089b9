"""Registers the Dask executor with Laminar (entry point ``dask`` in the ``laminar`` group)."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Executor, hookimpl


@hookimpl
def laminar_executors() -> Sequence[type[Executor]]:
    from laminar_dask.executor import Dask  # when an executor is looked up by name, not at start-up

    return [Dask]
