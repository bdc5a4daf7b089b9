"""Entry point of ``laminar-gcs`` (group ``laminar``): registers the ``gs://`` datastore."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Datastore, hookimpl


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_gcs.datastore import GCS

    return [GCS]
