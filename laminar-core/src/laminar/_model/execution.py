"""Execution: one run of a flow, identified by a sortable unique id."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from laminar.errors import ConfigurationError, FlowDefinitionError
from laminar._model.layer import Layer, Parameters
from laminar._names import validate

if TYPE_CHECKING:
    from laminar._model.flow import Flow


class Execution:
    """One run of ``flow``. Read its results with ``execution.layer(A).foo``."""

    def __init__(self, *, flow: Flow, id: str, retry: bool = False) -> None:
        self.flow = flow
        self.id = validate(id, what="execution id")
        self.retry = retry

    def layer(self, layer: type[Layer] | str) -> Layer:
        """Layer ``layer`` of this execution, reading its artifacts from the flow's datastore."""
        from laminar._runtime.context import LayerContext

        name = layer if isinstance(layer, str) else getattr(layer, "__name__", repr(layer))
        if name not in self.flow.registry:
            raise FlowDefinitionError(
                f"flow {self.flow.name} has no layer {name!r}; its layers are {', '.join(sorted(self.flow.registry))}"
            )
        return LayerContext.reader(self, name)

    def run(self, *, parameters: dict[str, Any] | None = None, resume: bool = False) -> Execution:
        """Run (or resume) this execution with the flow's scheduler; raise the first layer failure."""
        self.flow.configuration.scheduler.run(self, parameters=parameters or {}, resume=resume)
        return self

    def resume(self) -> Execution:
        """Run this execution again, skipping layers and foreach splits that already finished."""
        resumed = Execution(flow=self.flow, id=self.id, retry=True)
        return resumed.run(resume=True)

    def next(self, *, flow: Flow, linker: Callable[[Execution], Parameters]) -> Execution:
        """Run ``flow`` with this execution's id and parameters ``linker(self)``; returns its Execution."""
        parameters = linker(self)
        if not isinstance(parameters, Parameters):
            raise ConfigurationError(
                f"the linker passed to next() must return Parameters(...), e.g. "
                f"lambda e: Parameters(foo=e.layer(A).foo); it returned {parameters!r}"
            )
        values, shards = parameters._artifacts()
        if shards:
            raise ConfigurationError("Parameters returned by a linker cannot be sharded")
        return flow(execution=self.id, **values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and (other.flow.name, other.id) == (self.flow.name, self.id)

    def __hash__(self) -> int:
        return hash((self.flow.name, self.id))

    def __repr__(self) -> str:
        return f'Execution(flow={self.flow!r}, id="{self.id}", retry={self.retry})'
