"""Laminar's S3 datastore: ``Flow(datastore="s3://bucket/prefix")`` once this is installed.

The ``laminar`` entry point imports this package; :mod:`laminar_s3.datastore` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_s3.datastore import S3, BucketNotFound, CredentialsRejected

__all__ = ["S3", "BucketNotFound", "CredentialsRejected"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_s3.datastore"), name)
