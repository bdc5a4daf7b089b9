"""Serialization protocols, keyed by exact type: ``@datastore.protocol(list, dict) class Json(serde.Protocol)``.

``Pickle`` is the default (cloudpickle); ``PickleProtocol`` is its earlier name. ``dtype(cls)`` names
a type as the earlier laminar recorded it (``"module.Name"``).
"""

from laminar._serialization.protocols import Pickle, Protocol, dtype

#: The earlier laminar's name for the cloudpickle protocol.
PickleProtocol = Pickle

__all__ = ["Pickle", "PickleProtocol", "Protocol", "dtype"]
