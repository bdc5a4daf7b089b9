"""The results API's listings: what one flow stored in one datastore.

``datastore.list_executions(flow=...)``, ``list_layers`` and ``list_artifacts`` (the seed's API, on
the datastore object) are answered here: :func:`install` sets :class:`Listings` as every datastore's
``results_api`` (the transport forwards to it and knows no flows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from laminar._model import execution as model
from laminar._model.flow import FlowDefinition
from laminar._model.layer import Layer
from laminar._names import is_valid
from laminar._storage import layout
from laminar._transport.datastore import Datastore, FlowOf
from laminar.errors import ExecutionNotFound

if TYPE_CHECKING:
    from laminar._app.execution import Execution
    from laminar._app.flow import Flow
    from laminar._storage.store import ExecutionStore


class Results:
    """Reads the executions, layers and artifact names ``flow`` stored in ``datastore``."""

    def __init__(self, flow: Flow, datastore: Datastore) -> None:
        self.flow = flow
        self.datastore = datastore

    def _store(self, execution: Execution) -> ExecutionStore:
        """The execution's own store; one in ``datastore`` when that is not the flow's."""
        if self.datastore is self.flow.configuration.datastore:
            return execution.store
        return self.flow.configuration.store(self.flow.name, execution.id, datastore=self.datastore)

    def executions(self) -> list[Execution]:
        """The flow's executions, oldest first (ids sort by creation time), each with its ``status``.

        The statuses are read with the listing, one small record per execution, in parallel (so in
        batches of concurrent requests on an object store); only a record saying "running" costs a
        second read, of its lease. A directory left by a run killed before it stored anything is
        not an execution and is not listed.
        """
        ids = self.datastore.list_prefix(layout.executions(self.flow.name))
        # Entries that cannot be execution ids (``.DS_Store``, ``notes.txt~``) are not Laminar's.
        executions = [
            self.flow.execution(execution_id) for execution_id in sorted(ids) if is_valid(execution_id)
        ]

        def status(execution: Execution) -> Execution:
            try:
                execution._listed = execution._read_status(self._store(execution))
            except ExecutionNotFound:
                execution._listed = None
            return execution

        listed = self.datastore.map_parallel(status, executions)
        return [execution for execution in listed if execution._listed is not None]

    def layers(self, execution: Execution) -> list[Layer]:
        """The layers that stored artifacts in ``execution``, sorted by name (as the earlier laminar did)."""
        store = self._store(execution)
        return [
            execution.layer(name)
            for name in store.layer_names()
            if name in self.flow.registry and store.artifact_names(name)
        ]

    def artifacts(self, layer: Layer) -> list[str]:
        """Names of the artifacts ``layer`` stored, across its splits, sorted."""
        execution = layer.execution
        assert execution is not None  # Listings checked
        return self._store(execution).artifact_names(layer.name)  # type: ignore[arg-type]  # an app Execution


class Listings:
    """The datastore's results API (:class:`~laminar._transport.datastore.ResultsAPI`): checks what the
    user passed, then reads with :class:`Results`."""

    def executions(self, datastore: Datastore, flow: FlowOf[model.Execution]) -> list[model.Execution]:
        if not isinstance(flow, FlowDefinition):
            raise TypeError(f"list_executions(flow=...) takes a flow object, MyFlow(), not {flow!r}")
        return list(Results(_app_flow(flow), datastore).executions())

    def layers(self, datastore: Datastore, execution: model.Execution) -> list[Layer]:
        if not isinstance(execution, model.Execution):
            raise TypeError(
                f"list_layers(execution=...) takes an execution, flow.execution(id), not {execution!r}"
            )
        return Results(_app_flow(execution.flow), datastore).layers(cast("Execution", execution))

    def artifacts(self, datastore: Datastore, layer: Layer) -> list[str]:
        if not isinstance(layer, Layer):
            raise TypeError(
                f"list_artifacts(layer=...) takes a layer of an execution, execution.layer(A), not {layer!r}"
            )
        execution = layer.execution
        if execution is None:
            raise ValueError(f"{layer!r} is not bound to an execution; use flow.execution(id).layer(...)")
        return Results(_app_flow(execution.flow), datastore).artifacts(layer)


def _app_flow(flow: FlowDefinition) -> Flow:
    """Every flow a user holds is the application's ``Flow`` (the model's definition is its base)."""
    return cast("Flow", flow)


def install() -> None:
    """Answer every datastore's ``list_executions``, ``list_layers`` and ``list_artifacts`` from here."""
    Datastore.results_api = Listings()
