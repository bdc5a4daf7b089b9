"""Datastores: where artifacts, archives and records live. Cloud backends ship as their own distributions."""

from laminar.model.accessor import Accessor
from laminar.storage.datastore import Datastore
from laminar.storage.local import Local
from laminar.storage.memory import Memory
from laminar.storage.records import Archive, Artifact, Record

__all__ = ["Accessor", "Archive", "Artifact", "Datastore", "Local", "Memory", "Record"]
