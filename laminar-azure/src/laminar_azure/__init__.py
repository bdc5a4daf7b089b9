"""Laminar's Azure Blob Storage datastore: ``Flow(datastore="az://container/prefix")`` once installed."""

from __future__ import annotations

from laminar_azure.datastore import Azure, ContainerNotFound, CredentialsRejected

__all__ = ["Azure", "ContainerNotFound", "CredentialsRejected"]
