"""The module named by this distribution's entry point::

    [project.entry-points.laminar]
    sqlite = "laminar_sqlite.plugin"

Laminar's plugin manager loads it and calls its hooks. ``laminar_datastores`` returns the datastore
classes; each one's ``schemes`` says which URLs it serves.
"""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Datastore, hookimpl


@hookimpl
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_sqlite.datastore import SQLite

    return [SQLite]
