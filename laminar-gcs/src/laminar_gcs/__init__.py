"""Laminar's Google Cloud Storage datastore: ``Flow(datastore="gs://bucket/prefix")`` once installed.

The ``laminar`` entry point imports this package; :mod:`laminar_gcs.datastore` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_gcs.datastore import GCS, BucketNotFound

__all__ = ["GCS", "BucketNotFound"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_gcs.datastore"), name)
