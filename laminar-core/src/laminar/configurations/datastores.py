"""Datastores: where artifacts, archives and records live. Cloud backends ship as their own distributions."""

from laminar._model.accessor import Accessor
from laminar._storage.records import Archive, Artifact, Record
from laminar._transport.datastore import Datastore
from laminar._transport.local import Local
from laminar._transport.memory import Memory

#: The earlier laminar's name for the Datastore base class.
DataStore = Datastore

__all__ = ["Accessor", "Archive", "Artifact", "DataStore", "Datastore", "Local", "Memory", "Record"]
