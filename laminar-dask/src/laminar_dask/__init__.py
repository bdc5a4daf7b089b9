"""Run Laminar layer splits as Dask tasks: ``Flow(executor=Dask("tcp://host:8786"))`` or ``"dask://…"``.

The ``laminar`` entry point imports this package; :mod:`laminar_dask.executor` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_dask.executor import Dask

__all__ = ["Dask"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_dask.executor"), name)
