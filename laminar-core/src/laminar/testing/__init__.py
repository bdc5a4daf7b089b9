"""Test helpers for plugin authors: :class:`DatastoreConformance` and :class:`ExecutorConformance` run
Laminar's datastore and executor contracts against any backend (see :mod:`laminar.testing.datastore`
and :mod:`laminar.testing.executor`); both run the incremental-run checks of
:mod:`laminar.testing.reuse`.

Importing this package does not import pytest; the conformance classes load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar.testing.datastore import DatastoreConformance
    from laminar.testing.executor import ExecutorConformance

__all__ = ["DatastoreConformance", "ExecutorConformance"]


def __getattr__(name: str) -> Any:
    if name == "DatastoreConformance":
        from laminar.testing.datastore import DatastoreConformance

        return DatastoreConformance
    if name == "ExecutorConformance":
        from laminar.testing.executor import ExecutorConformance

        return ExecutorConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
