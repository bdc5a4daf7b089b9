"""``Execution``: one run of a flow, with what users do with one: run, resume, chain, read results.

The runtime and the storage it reads through are imported when an execution is read or run, not
with ``import laminar``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from laminar._app import reading
from laminar._model import execution as model
from laminar._model.layer import RESERVED, Layer, Parameters
from laminar._names import validate
from laminar.errors import ConfigurationError, DatastoreError, FlowDefinitionError, Interrupted, add_note

if TYPE_CHECKING:
    from laminar._app.flow import Flow
    from laminar._runtime.context import Missing
    from laminar._storage.status import Status
    from laminar._storage.store import ExecutionStore


class Execution(model.Execution):
    """One run of ``flow``. Read its results with ``execution.layer(A).foo``."""

    flow: Flow
    _listed: Status | None = None  # the status a listing read with it

    @functools.cached_property
    def store(self) -> ExecutionStore:
        """This execution's storage in the flow's datastore (internal): built once, on first use,
        and used by everything that reads or writes the execution through this object."""
        return self.flow.configuration.store(self.flow.name, self.id)

    def layer(self, layer: type[Layer] | str, *, missing: Missing = "raise") -> Layer:
        """Layer ``layer`` of this execution, reading its artifacts from the flow's datastore.

        ``missing`` says what an artifact of a foreach layer that some splits have no value of (a
        split ``Catch`` ended before it assigned it) reads as: ``"raise"`` (an error naming those
        splits, when one is read), ``"skip"`` (an Accessor over the splits that have it; its
        ``skipped`` names the others) or ``None`` (``None`` in their place).
        """
        name = layer if isinstance(layer, str) else getattr(layer, "__name__", repr(layer))
        if isinstance(layer, type) and issubclass(layer, Parameters):
            name = "Parameters"  # the class declaring them, or Parameters itself
        if name not in self.flow.registry:
            raise FlowDefinitionError(
                f"flow {self.flow.name} has no layer {name!r}; its layers are {', '.join(sorted(self.flow.registry))}"
            )
        if missing not in ("raise", "skip", None):
            raise ConfigurationError(
                f"execution.layer({name!r}, missing=...) takes 'raise', 'skip' or None, not {missing!r}"
            )
        from laminar._runtime.context import LayerContext

        return LayerContext.reader(self, name, missing=missing)

    @property
    def status(self) -> Status:
        """How the latest run went: running, succeeded, failed or cancelled, with times and error.

        Raises ``ExecutionNotFound`` if this execution does not exist in the flow's datastore. An
        execution from ``list_executions`` has the status read with the listing (as of then).
        """
        if self._listed is not None:
            return self._listed
        return self._read_status(self.store)

    def _read_status(self, store: ExecutionStore) -> Status:
        from laminar._storage.status import read_status

        layers = [name for name in self.flow.plan.order if name != "Parameters"]
        return read_status(store, layers, self._parameters)

    def _parameters(self) -> dict[str, Any]:
        layer = self.layer("Parameters")
        names = self.flow.configuration.datastore.list_artifacts(layer=layer)
        return {name: getattr(layer, name) for name in names}

    def run(
        self,
        *,
        parameters: dict[str, Any] | None = None,
        resume: bool = False,
        reuse: bool | None = None,
        force: Iterable[str] = (),
    ) -> Execution:
        """Run (or resume) this execution with the flow's scheduler; raise the first layer failure.

        The error raised shows the layer's own frames, wherever it ran, without Laminar's and
        asyncio's (``LAMINAR_DEBUG=1`` keeps them), and says how to resume the execution. While a
        flow file is imported for reading (by the ``laminar`` command) nothing runs: ``RunAtImport``.
        """
        for name in parameters or {}:  # named as parameters, before anything is stored
            validate(name, what="parameter name")
        reserved = sorted(set(parameters or {}) & RESERVED)
        if reserved:
            raise ConfigurationError(
                f"parameter names {', '.join(map(repr, reserved))} are reserved on layers (layer.{reserved[0]} is "
                "set by Laminar) and could not be read back; choose other names"
            )
        if resume and parameters:
            raise ConfigurationError(
                f"execution {self.id} of flow {self.flow.name} resumes with the parameters it was started "
                f"with; it cannot take {', '.join(map(repr, parameters))}. Run a new execution to change them"
            )
        declared = self.flow.declared_parameters()
        if declared is not None and not resume:  # checked and converted, defaults filled in
            parameters = declared.validate(parameters or {}, flow=self.flow.name)
        reading.refuse_run(self.flow.name)
        try:
            reusing = self.flow.reuse if reuse is None else reuse
            if reusing or force:  # only then: a scheduler of its own need not know reuse
                self.flow.configuration.scheduler.run(
                    self, parameters=parameters or {}, resume=resume, reuse=reusing, force=force
                )
            else:
                self.flow.configuration.scheduler.run(self, parameters=parameters or {}, resume=resume)
        except BaseException as error:
            if self._resumable_after(error):
                add_note(
                    error,
                    f"resume execution {self.id} with flow.execution({self.id!r}).resume(), or "
                    f"`laminar resume {_script()} {self.id}`; what finished is kept",
                )
            from laminar._runtime import tracebacks

            tracebacks.for_user(error)
            raise
        return self

    def _resumable_after(self, error: BaseException) -> bool:
        """Whether the failed run left an execution to resume (a layer failed, not the set-up)."""
        if isinstance(error, (DatastoreError, FlowDefinitionError, ConfigurationError, Interrupted)):
            return False  # no execution, or the store fails (a read would wait out another deadline)
        try:
            return self.store.metadata_exists()
        except Exception:
            return False

    def resume(self) -> Execution:
        """Run this execution again, skipping layers and foreach splits that already finished."""
        return self.as_resumed().run(resume=True)

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


def _script() -> str:
    """The script being run (``python etl.py``), as a path from the working directory: the ``FILE``
    of ``laminar resume FILE ID``."""
    main: object = getattr(sys.modules.get("__main__"), "__file__", None)
    path = str(main) if main else ""
    if not path.endswith(".py"):
        return "FILE"
    with contextlib.suppress(ValueError):  # another drive, on Windows
        relative = os.path.relpath(path)
        if not relative.startswith(os.pardir):
            return relative
    return path
