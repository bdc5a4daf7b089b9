"""An example third-party Laminar plugin: ``Flow(datastore="sqlite:///runs.sqlite")``.

The ``laminar`` entry point imports this package; :mod:`laminar_sqlite.datastore` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_sqlite.datastore import SQLite

__all__ = ["SQLite"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_sqlite.datastore"), name)
