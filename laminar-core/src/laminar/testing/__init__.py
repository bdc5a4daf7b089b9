"""Test helpers for plugin authors: :class:`DatastoreConformance` runs Laminar's datastore contract
against any backend (see :mod:`laminar.testing.datastore`).

Importing this package does not import pytest; the conformance classes load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar.testing.datastore import DatastoreConformance

__all__ = ["DatastoreConformance"]


def __getattr__(name: str) -> Any:
    if name == "DatastoreConformance":
        from laminar.testing.datastore import DatastoreConformance

        return DatastoreConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
