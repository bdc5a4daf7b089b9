"""LayerContext: binds a Layer instance to a flow, an execution and a split, and reads its artifacts.

A *writer* context is the layer running its ``__call__``; a *reader* context is a dependency (or a
results-API layer) whose attributes are read lazily from the datastore.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from laminar._model.accessor import Accessor
from laminar._model.layer import Layer
from laminar._runtime.task import Binding
from laminar._serialization import threads
from laminar._storage.logs import logged_attempts, read_logs
from laminar._storage.records import Archive, stored
from laminar._storage.status import LayerStatus, Status, layer_status, not_found, read_status
from laminar._storage.store import ExecutionStore
from laminar.errors import ExecutionNotFound, MissingArtifact, SplitNotFound

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.flow import FlowDefinition
    from laminar._model.layer_options import Configuration


#: What a foreach layer's artifact that some splits have no value of reads as (``LayerContext.reader``).
Missing = Literal["raise", "skip"] | None


def store_for(execution: Execution) -> ExecutionStore:
    """The store of ``execution``: the one the application's ``Execution`` owns for its whole life,
    or, for a bare model execution (a ``FlowDefinition``'s), one from its flow's configuration."""
    owned = getattr(execution, "store", None)
    if isinstance(owned, ExecutionStore):
        return owned
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
        missing: Missing = "raise",
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
        self.missing = missing
        self.store = store or store_for(execution)
        self._class = definition.layer
        self._layer: weakref.ref[Layer] | None = None

    def bind(self) -> Layer:
        """A new instance of the layer, bound to this context.

        The layer owns its context; the context links back weakly, so no reference cycle keeps
        large artifacts alive until the garbage collector happens to run.
        """
        layer: Layer = object.__new__(self._class)
        # Into its dict, as ``object.__setattr__`` would put it past ``Layer.__setattr__`` (which
        # refuses the name), without that call's cost (three layer instances a layer of a chain).
        layer.__dict__["_context"] = self
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
        missing: Missing = "raise",
    ) -> Layer:
        """Layer ``name`` of ``execution``, reading its artifacts lazily from the datastore.

        ``missing``: what a foreach layer's artifact that some splits have no value of reads as:
        ``"raise"`` (an error naming them, when one is read), ``"skip"`` (what exists) or ``None``
        (``None`` in their place). See :class:`~laminar._model.accessor.Accessor`.
        """
        return cls(execution, name, bindings=bindings, store=store, missing=missing).bind()

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
        # The record may lack attempts (a run whose scheduler died, the limits): their logs still count.
        attempts = sorted(
            {a.attempt for a in status.attempts.get(index, ())}.union(self._logged_attempts(index))
        )
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
        return logged_attempts(self.store.datastore, self.flow.name, self.execution.id, self.name, index)

    # ---- reading ------------------------------------------------------------------------------
    def read(self, attribute: str) -> Any:
        if self.writer:
            raise AttributeError(
                f"{self.name!r} has no attribute {attribute!r} (it has not been assigned yet)"
            )
        value = self._read(attribute)
        layer = self._layer() if self._layer is not None else None
        if layer is not None:
            layer.__dict__[attribute] = value  # read once per instance (past Layer.__setattr__)
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
        splits = record.splits

        def read_many(indices: Sequence[int]) -> list[Any]:
            records = self.store.split_records(self.name, indices)
            archives = [split.archives.get(attribute) if split is not None else None for split in records]
            if any(archive is None for archive in archives):
                missing = next(i for i, archive in zip(indices, archives, strict=True) if archive is None)
                raise self._missing(attribute, missing)
            if not any(archive.sharded for archive in archives if archive is not None):
                return self.store.load_many(
                    [archive.artifacts[0] for archive in archives if archive is not None]
                )
            return [self._value(archive) for archive in archives if archive is not None]

        accessor = Accessor(
            splits,
            lambda i: self._value(self._archive(i, attribute)),
            read_many=read_many,
            description=f"{self.name}.{attribute} over {splits} splits",
            missing=lambda: self._splits_without(attribute, splits),
            # A pass reads one value a core from its first window on (``load_many``: a local disk's
            # large values one a core, an object store's in parallel), not one alone first.
            first_window=threads.cores(),
        )
        if self.missing == "skip":
            return accessor.skip_missing()
        if self.missing is None:
            return accessor.fill_missing(None)
        return accessor

    def _splits_without(self, attribute: str, splits: int) -> list[int]:
        """The splits of this foreach layer that have no value of ``attribute`` (records only)."""
        records = self.store.split_records(self.name, range(splits))
        return [i for i, split in enumerate(records) if split is None or attribute not in split.archives]

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
                first_window=threads.cores(),
            )
        return self.store.load(archive.artifacts[0])

    def _missing(self, attribute: str, index: int = 0) -> MissingArtifact | ExecutionNotFound:
        where = f"in execution {self.execution.id} of flow {self.flow.name}"
        if not self.writer and not self.store.metadata_exists():
            return not_found(self.store)  # no such execution: not a missing attribute
        if self.store.record(self.name) is None:  # no record, whatever batches exist: not finished
            record = self.store.url(self.store.record_key(self.name))
            return MissingArtifact(
                f"{self.name} has no artifact {attribute!r} {where}: layer {self.name} has not finished "
                f"(it was skipped, failed, or has not run yet; there is no record at {record})"
            )
        split = self.store.split_record(self.name, index)
        finished = self.store.record(self.name)
        if self._registered.foreach is None or finished is None:
            return MissingArtifact(
                f"{self.name} has no artifact {attribute!r} {where}: layer {self.name} finished without assigning "
                f"it (it stored: {stored(split)})"
            )
        splits = finished.splits
        if attribute not in finished.artifacts:
            error = MissingArtifact(
                f"{self.name} has no artifact {attribute!r} {where}: layer {self.name} finished without assigning "
                f"it in any of its {splits} splits (they stored: {', '.join(finished.artifacts) or 'nothing'})"
            )
            error.missing, error.splits = tuple(range(splits)), splits
            return error
        missing = self._splits_without(attribute, splits)
        caught = split.caught if split is not None and isinstance(split.caught, str) else None
        present = splits - len(missing)
        error = MissingArtifact(
            f"{self.name} has no artifact {attribute!r} in split {index} {where}: split {index} finished without "
            f"assigning it (it stored: {stored(split)})"
            + (f", ended by Catch ({caught})" if caught else "")
            + f"; {len(missing)} of its {splits} splits {'lacks' if len(missing) == 1 else 'lack'} it "
            f"({list_splits(missing)}) and {present} {'has' if present == 1 else 'have'} it: read those with "
            f".{attribute}.skip_missing() or execution.layer({self.name!r}, missing='skip'), or None in place "
            "of the missing with missing=None"
        )
        error.missing, error.splits = tuple(missing), splits
        return error


def list_splits(indices: Sequence[int], shown: int = 10) -> str:
    """``"2, 4"``: the split indices for a message, the first ``shown`` then ``", ... (20 in all)"``."""
    listed = ", ".join(map(str, indices[:shown]))
    return listed if len(indices) <= shown else f"{listed}, ... ({len(indices)} in all)"
