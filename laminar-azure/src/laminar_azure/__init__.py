"""Laminar's Azure Blob Storage datastore: ``Flow(datastore="az://container/prefix")`` once installed.

The ``laminar`` entry point imports this package; :mod:`laminar_azure.datastore` (and what it imports)
loads when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar_azure.datastore import Azure, ContainerNotFound, CredentialsRejected

__all__ = ["Azure", "ContainerNotFound", "CredentialsRejected"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("laminar_azure.datastore"), name)
