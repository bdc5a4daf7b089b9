"""Entry point of ``laminar-fsspec`` (group ``laminar``): registers :class:`~laminar_fsspec.FSSpec`.

It serves ``fsspec+<protocol>://`` for every protocol fsspec knows, and a bare ``<protocol>://`` for
those no other Laminar distribution serves (:data:`laminar_fsspec.datastore.CLAIMED`). The hook runs
first (``tryfirst``), so its result comes last in the list the plugin manager reads, and every other
plugin, core's built-ins included, keeps a scheme it claims too (the first claim wins).
"""

from __future__ import annotations

from collections.abc import Sequence

from laminar.plugins import Datastore, hookimpl


@hookimpl(tryfirst=True)
def laminar_datastores() -> Sequence[type[Datastore]]:
    from laminar_fsspec.datastore import FSSpec, refresh_schemes

    refresh_schemes()  # protocols registered with fsspec since the last call are served too
    return [FSSpec]
