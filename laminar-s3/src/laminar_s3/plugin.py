"""Entry point of ``laminar-s3`` (group ``laminar``): registers the ``s3://`` datastore."""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Datastore, hookimpl


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_s3.datastore import S3

    return [S3]
