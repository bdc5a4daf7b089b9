"""Entry point of ``laminar-azure`` (group ``laminar``): registers the ``az://`` datastore."""

from __future__ import annotations

from collections.abc import Sequence

from laminar._plugins.hookspecs import hookimpl
from laminar._transport.datastore import Datastore


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_azure.datastore import Azure

    return [Azure]
