"""The run records the command and the report show, read through the results API.

``execution.status.layers`` maps each layer (in plan order) to its status, splits and attempts, and
``execution.layer(A).state.logs(index=..., attempt=...)`` returns what a split attempt printed.
"""

from __future__ import annotations

import click

from laminar import Execution
from laminar._storage.status import Attempt, LayerStatus, Status
from laminar.errors import ExecutionNotFound

__all__ = ["Attempt", "LayerStatus", "caught_text", "layers_of", "logs", "status_of"]


def status_of(execution: Execution) -> Status:
    """``execution.status``; an unknown id becomes a one-line error naming it."""
    try:
        return execution.status
    except ExecutionNotFound as error:
        raise click.ClickException(str(error)) from None


def layers_of(execution: Execution, status: Status | None = None) -> list[LayerStatus]:
    """Every layer of the execution's flow but Parameters, in plan order, with its run record."""
    status = status if status is not None else status_of(execution)
    return list(status.layers.values())


def logs(execution: Execution, layer: str, *, index: int | None, attempt: int | None) -> str:
    """What split ``index`` of ``layer`` printed on attempt ``attempt`` (``None``: the defaults)."""
    return execution.layer(layer).state.logs(index=index, attempt=attempt)


def caught_text(layer: LayerStatus) -> str:
    """``2 errors caught (Catch)`` for a layer whose splits finished so, else ``""``."""
    caught = layer.caught
    return f"{caught} error{'s' if caught != 1 else ''} caught (Catch)" if caught else ""
