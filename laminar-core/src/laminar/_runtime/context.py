"""LayerContext: binds a Layer instance to a flow, an execution and a split, and reads its artifacts.

A *writer* context is the layer running its ``__call__``; a *reader* context is a dependency (or a
results-API layer) whose attributes are read lazily from the datastore.
"""

from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING, Any

from laminar._model.accessor import Accessor
from laminar._model.layer import Layer
from laminar._runtime.task import Binding
from laminar._storage import layout
from laminar._storage.logs import read_logs
from laminar._storage.records import Archive, stored
from laminar._storage.status import LayerStatus, Status, layer_status, not_found, read_status
from laminar._storage.store import ExecutionStore
from laminar.errors import ExecutionNotFound, SplitNotFound

if TYPE_CHECKING:
    from laminar._model.configuration import Configuration
    from laminar._model.execution import Execution
    from laminar._model.flow import FlowDefinition


def store_for(execution: Execution) -> ExecutionStore:
    """The store of ``execution``, from its flow's configuration."""
    return execution.flow.configuration.store(execution.flow.name, execution.id)


class LayerContext:
    """Everything Laminar knows about one Layer instance (the model's ``layer.Context``)."""

    def __init__(
        self,
        execution: Execution,
        name: str,
        *,
        index: int | None = None,
        splits: int | None = None,
        attempt: int = 0,
        configuration: Configuration | None = None,
        bindings: dict[str, Binding] | None = None,
        writer: bool = False,
        store: ExecutionStore | None = None,
    ) -> None:
        definition = execution.flow.registry[name]
        self.execution = execution
        self.name = name
        self.index = index
        self.splits = splits
        self.attempt = attempt
        self._configuration = configuration
        self._registered = definition.configuration
        self.bindings = bindings or {}
        self.writer = writer
        self.store = store or store_for(execution)
        self._class = definition.layer
        self._layer: weakref.ref[Layer] | None = None

    def bind(self) -> Layer:
        """A new instance of the layer, bound to this context.

        The layer owns its context; the context links back weakly, so no reference cycle keeps
        large artifacts alive until the garbage collector happens to run.
        """
        layer: Layer = object.__new__(self._class)
        object.__setattr__(layer, "_context", self)
        self._layer = weakref.ref(layer)
        return layer

    @classmethod
    def reader(
        cls,
        execution: Execution,
        name: str,
        *,
        bindings: dict[str, Binding] | None = None,
        store: ExecutionStore | None = None,
    ) -> Layer:
        """Layer ``name`` of ``execution``, reading its artifacts lazily from the datastore."""
        return cls(execution, name, bindings=bindings, store=store).bind()

    @property
    def configuration(self) -> Configuration:
        """This layer's configuration; a private copy, so changing it never alters the flow's registry."""
        if self._configuration is None:
            self._configuration = copy.deepcopy(self._registered)
        return self._configuration

    @property
    def flow(self) -> FlowDefinition:
        return self.execution.flow

    def finished(self) -> bool:
        return self.store.record(self.name) is not None

    # ---- run records --------------------------------------------------------------------------
    def layer_status(self) -> LayerStatus:
        def execution_status() -> Status:
            return read_status(self.store, (), dict)

        return layer_status(self.store, self.name, execution_status)

    def logs(self, index: int | None, attempt: int | None) -> str:
        """What split ``index``'s ``attempt`` printed and logged; the valid range named otherwise."""
        status = self.layer_status()  # raises ExecutionNotFound for an execution that does not exist
        where = f"layer {self.name} of execution {self.execution.id}"
        if status.status == "not started" or status.splits == 0:
            raise SplitNotFound(f"{where} has not run ({status.status}), so it has no logs")
        foreach = self._registered.foreach is not None
        splits = status.splits if status.splits is not None else self._recorded_splits()
        if index is None:
            index = 0
        elif not foreach and index != 0:
            raise SplitNotFound(
                f"{where} has no ForEach, so it has one split: ask for index=None (or 0), not {index}"
            )
        if not 0 <= index < splits:
            raise SplitNotFound(f"{where} has no split {index}: its splits are 0 to {splits - 1}")
        attempts = sorted({a.attempt for a in status.attempts.get(index, ())}) or self._logged_attempts(index)
        if attempt is None:
            if not attempts:
                return ""
            attempt = attempts[-1]
        if attempt not in attempts:
            valid = (
                f"its attempts are {', '.join(map(str, attempts))}"
                if attempts
                else "it has no recorded attempts"
            )
            raise SplitNotFound(f"split {index} of {where} has no attempt {attempt}: {valid}")
        flow = self.flow.name
        return read_logs(self.store.datastore, flow, self.execution.id, self.name, index, attempt)

    def _recorded_splits(self) -> int:
        record = self.store.record(self.name)
        return record.splits if record is not None else 0

    def _logged_attempts(self, index: int) -> list[int]:
        prefix = layout.logs(self.flow.name, self.execution.id, self.name, index)
        return sorted(int(name) for name in self.store.datastore.list_prefix(prefix) if name.isdigit())

    # ---- reading ------------------------------------------------------------------------------
    def read(self, attribute: str) -> Any:
        if self.writer:
            raise AttributeError(
                f"{self.name!r} has no attribute {attribute!r} (it has not been assigned yet)"
            )
        value = self._read(attribute)
        layer = self._layer() if self._layer is not None else None
        if layer is not None:
            object.__setattr__(layer, attribute, value)  # read once per instance
        return value

    def _read(self, attribute: str) -> Any:
        binding = self.bindings.get(attribute)
        if binding is not None:
            if binding.artifact is not None:
                return self.store.load(binding.artifact)
            assert binding.split is not None
            return self._value(self._archive(binding.split, attribute))
        if self._registered.foreach is None:
            return self._value(self._archive(0, attribute))
        record = self.store.record(self.name)
        if record is None:
            raise self._missing(attribute)
        if record.splits and attribute not in record.artifacts:
            raise self._missing(attribute)  # no split stored it: fail now, so hasattr() is truthful

        def read_many(indices: range) -> list[Any]:
            archives = self.store.archives(self.name, indices, attribute)
            if any(archive is None for archive in archives):
                missing = next(i for i, archive in zip(indices, archives, strict=True) if archive is None)
                raise self._missing(attribute, missing)
            if not any(archive.sharded for archive in archives if archive is not None):
                return self.store.load_many(
                    [archive.artifacts[0] for archive in archives if archive is not None]
                )
            return [self._value(archive) for archive in archives if archive is not None]

        return Accessor(
            record.splits,
            lambda i: self._value(self._archive(i, attribute)),
            read_many=read_many,
            description=f"{self.name}.{attribute} over {record.splits} splits",
        )

    def _archive(self, index: int, attribute: str) -> Archive:
        archive = self.store.archive(self.name, index, attribute)
        if archive is None:
            raise self._missing(attribute, index)
        return archive

    def _value(self, archive: Archive) -> Any:
        if archive.sharded:
            artifacts = archive.artifacts
            return Accessor(
                len(artifacts),
                lambda i: self.store.load(artifacts[i]),
                read_many=lambda indices: self.store.load_many([artifacts[i] for i in indices]),
            )
        return self.store.load(archive.artifacts[0])

    def _missing(self, attribute: str, index: int = 0) -> AttributeError | ExecutionNotFound:
        where = f"in execution {self.execution.id} of flow {self.flow.name}"
        if not self.writer and not self.store.metadata_exists():
            return not_found(self.store)  # no such execution: not a missing attribute
        if self.store.record(self.name) is None:  # no record, whatever batches exist: not finished
            record = self.store.url(self.store.record_key(self.name))
            return AttributeError(
                f"{self.name} has no artifact {attribute!r} {where}: layer {self.name} has not finished "
                f"(it was skipped, failed, or has not run yet; there is no record at {record})"
            )
        split = self.store.split_record(self.name, index)
        return AttributeError(
            f"{self.name} has no artifact {attribute!r} {where}: layer {self.name} finished without assigning it "
            f"(it stored: {stored(split)})"
        )
