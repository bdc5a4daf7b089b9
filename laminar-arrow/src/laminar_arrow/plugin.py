"""Entry point of ``laminar-arrow`` (group ``laminar``): its protocols, registered for reading only.

Registered for no type, they write nothing by themselves (a datastore opts in with
:func:`laminar_arrow.use`), but what they stored reads back in every process that has laminar-arrow
installed, whatever its datastores opted into.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from laminar.plugins import Protocol, hookimpl


@hookimpl
def laminar_protocols() -> Sequence[tuple[tuple[type, ...], Protocol[Any]]]:
    from laminar_arrow.protocols import ArrowIPC, Parquet

    return [((), ArrowIPC()), ((), Parquet())]
