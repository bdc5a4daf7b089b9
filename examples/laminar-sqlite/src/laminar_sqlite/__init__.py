"""An example third-party Laminar plugin: ``Flow(datastore="sqlite:///runs.sqlite")``."""

from __future__ import annotations

from laminar_sqlite.datastore import SQLite

__all__ = ["SQLite"]
