"""Serialization protocols, keyed by exact type: ``@datastore.protocol(list, dict) class Json(serde.Protocol)``.

``Pickle`` is the default (cloudpickle); ``PickleProtocol`` is its earlier name. ``dtype(cls)`` names
a type as the earlier laminar recorded it (``"module.Name"``).

The safe protocols run no code when they read, so a datastore opened untrusted can read them:
``Json`` (plain data), ``Bytes``, ``Text`` (``str``) and ``Npy`` (numpy arrays, without pickle).
``datastore.use_safe_protocols()`` registers them all; see ``docs/trust.md``.
"""

from laminar._serialization.protocols import Pickle, Protocol, dtype
from laminar._serialization.safe import Bytes, Json, Npy, Text

#: The earlier laminar's name for the cloudpickle protocol.
PickleProtocol = Pickle

__all__ = ["Bytes", "Json", "Npy", "Pickle", "PickleProtocol", "Protocol", "Text", "dtype"]
