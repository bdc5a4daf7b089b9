"""Serialization protocols, keyed by exact type: ``@datastore.protocol(list, dict) class Json(serde.Protocol)``."""

from laminar._serialization.protocols import Pickle, Protocol

__all__ = ["Pickle", "Protocol"]
