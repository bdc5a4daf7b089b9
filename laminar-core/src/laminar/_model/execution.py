"""Execution as a value: one run of a flow, identified by a sortable unique id.

Running it and reading its results is the application's (:mod:`laminar._app.execution`); this is the
part every layer below can hold without reaching up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from laminar._names import validate

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition

E = TypeVar("E", bound="Execution")


class Execution:
    """One run of ``flow``: the flow, the id, and whether this is a resumed run (``retry``)."""

    def __init__(self, *, flow: FlowDefinition, id: str, retry: bool = False) -> None:
        self.flow = flow
        self.id = validate(id, what="execution id")
        self.retry = retry

    def as_resumed(self: E) -> E:
        """This execution, as a resumed run (``retry``, its public name, is then true)."""
        return type(self)(flow=self.flow, id=self.id, retry=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and (other.flow.name, other.id) == (self.flow.name, self.id)

    def __hash__(self) -> int:
        return hash((self.flow.name, self.id))

    def __repr__(self) -> str:
        return f'Execution(flow={self.flow!r}, id="{self.id}", retry={self.retry})'
