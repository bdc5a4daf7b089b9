"""Entry point of ``laminar-azure`` (group ``laminar``): registers the ``az://`` datastore."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Datastore, hookimpl


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_azure.datastore import Azure

    return [Azure]
