"""The run records the command and the report show, read through the results API.

``execution.status.layers`` maps each layer (in plan order) to its status, splits and attempts, and
``execution.layer(A).state.logs(index=..., attempt=...)`` returns what a split attempt printed. A
Laminar whose status has no ``layers`` yet still gets a coarse view: finished or not started, from
the layers' records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import click

from laminar import Execution
from laminar.errors import ExecutionNotFound


class AttemptLike(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def ended(self) -> datetime | None: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def error(self) -> Mapping[str, str] | None: ...


class LayerLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def ended(self) -> datetime | None: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def splits(self) -> int | None: ...
    @property
    def attempts(self) -> Mapping[int, tuple[AttemptLike, ...]]: ...
    @property
    def error(self) -> Mapping[str, str] | None: ...


@dataclass(frozen=True)
class _Coarse:
    """A layer as its record tells it, for a Laminar without per-layer run records."""

    name: str
    status: str
    splits: int | None
    reason: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    duration: float | None = None
    attempts: Mapping[int, tuple[AttemptLike, ...]] = field(default_factory=dict)
    error: Mapping[str, str] | None = None


def status_of(execution: Execution) -> Any:
    """``execution.status``; an unknown id becomes a one-line error naming it."""
    try:
        return execution.status
    except ExecutionNotFound as error:
        raise click.ClickException(str(error)) from None


def layers_of(execution: Execution, status: Any | None = None) -> list[LayerLike]:
    """Every layer of the execution's flow but Parameters, in plan order, with its run record."""
    status = status if status is not None else status_of(execution)
    found = getattr(status, "layers", None)
    if found is not None:
        return [layer for name, layer in found.items() if name != "Parameters"]
    flow = execution.flow
    store = flow.configuration.store(flow.name, execution.id)
    coarse: list[LayerLike] = []
    for name in flow.layer_names():
        if name == "Parameters":
            continue
        record = store.record(name)
        coarse.append(
            _Coarse(
                name, "finished" if record is not None else "not started", record.splits if record else None
            )
        )
    return coarse


def layer_of(execution: Execution, name: str, status: Any | None = None) -> LayerLike:
    flow = execution.flow
    if name not in flow.registry:
        raise click.ClickException(
            f"flow {flow.name} has no layer {name!r}; its layers are {', '.join(flow.layer_names())}"
        )
    for layer in layers_of(execution, status):
        if layer.name == name:
            return layer
    raise click.ClickException(f"layer {name!r} of flow {flow.name} has no run record (it is Parameters)")


def logs(execution: Execution, layer: str, *, index: int | None, attempt: int | None) -> str:
    """What split ``index`` of ``layer`` printed on attempt ``attempt`` (``None``: the defaults)."""
    state = execution.layer(layer).state
    reader = getattr(state, "logs", None)
    if reader is None:
        raise click.ClickException("this Laminar does not store the logs of layers")
    text: str = reader(index=index, attempt=attempt)
    return text
