"""``Execution``: one run of a flow, with what users do with one: run, resume, chain, read results."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from laminar._app.status import Status, read_status
from laminar._model import execution as model
from laminar._model.layer import Layer, Parameters
from laminar._runtime.context import LayerContext
from laminar.errors import ConfigurationError, FlowDefinitionError

if TYPE_CHECKING:
    from laminar._app.flow import Flow


class Execution(model.Execution):
    """One run of ``flow``. Read its results with ``execution.layer(A).foo``."""

    flow: Flow

    def layer(self, layer: type[Layer] | str) -> Layer:
        """Layer ``layer`` of this execution, reading its artifacts from the flow's datastore."""
        name = layer if isinstance(layer, str) else getattr(layer, "__name__", repr(layer))
        if name not in self.flow.registry:
            raise FlowDefinitionError(
                f"flow {self.flow.name} has no layer {name!r}; its layers are {', '.join(sorted(self.flow.registry))}"
            )
        return LayerContext.reader(self, name)

    @property
    def status(self) -> Status:
        """How the latest run went: running, succeeded, failed or cancelled, with times and error.

        Raises ``ExecutionNotFound`` if this execution does not exist in the flow's datastore.
        """
        return read_status(self)

    def run(self, *, parameters: dict[str, Any] | None = None, resume: bool = False) -> Execution:
        """Run (or resume) this execution with the flow's scheduler; raise the first layer failure."""
        self.flow.configuration.scheduler.run(self, parameters=parameters or {}, resume=resume)
        return self

    def resume(self) -> Execution:
        """Run this execution again, skipping layers and foreach splits that already finished."""
        return self.retried().run(resume=True)

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
