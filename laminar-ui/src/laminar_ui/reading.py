"""Reading a datastore without its flow files: which flows and executions it holds, a page at a time.

The datastore keeps each execution's run records (status, run history, each layer's attempts and
errors, logs) but not the flow's code. A flow whose file was given (``laminar ui --flow FILE``) is
read with its own class; any other with a stand-in class built from the layers and dependencies its
execution stored when it started (its metadata), so its DAG has its edges. An execution stored before
runs recorded their dependencies is read with the layers it stored, drawn without edges.

The list is newest first by when each execution was created, as its metadata says (ids are the
user's to choose, so their order says nothing): one listing per flow, then one small record per
execution, read in parallel on object stores and kept, since it never changes, so a page after the
first reads only the executions made since. Only the executions a page shows have their status and
parameters read, in parallel too.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from laminar import Flow, Layer, Parameters
from laminar._names import is_valid
from laminar._storage import layout
from laminar._storage.status import Status
from laminar.errors import DatastoreError, ExecutionNotFound
from laminar.plugins import Datastore

#: Executions read at once while a filter looks for a page's worth.
BATCH = 200

#: A flow's layers in plan order, each with the layers it depends on.
Shape = tuple[tuple[str, tuple[str, ...]], ...]

#: The statuses an execution can have.
STATUSES = ("running", "succeeded", "failed", "cancelled")


def _nothing(self: Layer) -> None:
    """The call of a stand-in layer: it is only read, never run."""


def _taking(dependencies: Sequence[type[Layer]]) -> Callable[..., None]:
    """A stand-in layer's call that takes ``dependencies`` (by annotation, as a layer's own call
    does), so the stand-in flow's plan has the stored edges."""

    def call(self: Layer, *given: Layer) -> None:
        """A stand-in layer's call: it is only read, never run."""

    names = [f"dependency_{position}" for position in range(len(dependencies))]
    call.__annotations__ = dict(zip(names, dependencies, strict=True))
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind)
            for name, kind in zip(names, dependencies, strict=True)
        ]
    )
    return call


@dataclass(frozen=True)
class Row:
    """One execution in the list."""

    flow: str
    id: str
    status: Status
    parameters: Mapping[str, Any]

    @property
    def resumed(self) -> bool:
        return len(self.status.runs) > 1


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next_start: int | None  # where the next page's scan starts; None: this is the last page
    scanned: int  # executions whose records were read for this page
    total: int  # executions in the datastore (of the chosen flow)


class Reader:
    """Reads ``datastore``; ``flows`` are the flows whose files were given, by name."""

    def __init__(self, datastore: Datastore, flows: Mapping[str, Flow] | None = None) -> None:
        self.datastore = datastore
        self.flows = dict(flows or {})
        self._stand_ins: dict[tuple[str, Shape], Flow] = {}
        self._created: dict[tuple[str, str], float] = {}  # (flow, execution): when it was created
        self._reading = threading.Lock()

    def warm(self) -> None:
        """Read when every execution was created, so the first page asked for finds it known (the
        UI starts this as it starts serving). A datastore that cannot be read is reported by the
        page that reads it, not here."""
        with contextlib.suppress(Exception):
            self._newest_first(None)

    def flow_names(self) -> list[str]:
        return [name for name in self.datastore.list_prefix("flows/") if is_valid(name)]

    def execution_ids(self, flow: str) -> list[str]:
        return [i for i in self.datastore.list_prefix(layout.executions(flow)) if is_valid(i)]

    def stored_layers(self, flow: str, execution: str) -> list[str]:
        """The layers ``execution`` stored anything of (a directory, or a record in a record pack)."""
        found = self._stand_in(flow, ()).execution(execution).store.layer_names()
        return [name for name in found if name != "Parameters"]

    def stored_dependencies(self, flow: str, execution: str) -> Mapping[str, tuple[str, ...]] | None:
        """Each layer of ``execution`` with the layers it depends on, as its run stored them when it
        started; None for an execution stored before runs recorded them, or with no metadata."""
        metadata = self._stand_in(flow, ()).execution(execution).store.metadata()
        return None if metadata is None else metadata.dependencies

    def flow(self, name: str, execution: str | None = None) -> Flow:
        """The flow to read ``name``'s executions with: its own when its file was given, else a
        stand-in with the layers and dependencies ``execution`` stored (:meth:`shape`)."""
        if name in self.flows:
            return self.flows[name]
        return self._stand_in(name, self.shape(name, execution)[0] if execution is not None else ())

    def flow_of(self, name: str, execution: str) -> tuple[Flow, bool]:
        """The flow to read ``execution`` with (as :meth:`flow`), and whether its dependencies are
        known: its flow's file was given, or its run stored them."""
        if name in self.flows:
            return self.flows[name], True
        shape, known = self.shape(name, execution)
        return self._stand_in(name, shape), known

    def shape(self, flow: str, execution: str) -> tuple[Shape, bool]:
        """``execution``'s layers, each with the layers it depends on, and whether those are known:
        stored by its run, else (an execution stored before runs recorded them) the layers it
        stored, without dependencies."""
        stored = self.stored_dependencies(flow, execution)
        if stored is None:
            return tuple((layer, ()) for layer in self.stored_layers(flow, execution)), False
        return tuple(_drawable(stored)), True

    def _stand_in(self, name: str, shape: Shape) -> Flow:
        key = (name, shape)
        if key not in self._stand_ins:
            kind: type[Flow] = type(name, (Flow,), {"__module__": __name__, "__qualname__": name})
            made: dict[str, type[Layer]] = {"Parameters": Parameters}
            for layer, dependencies in shape:
                call = _taking([made[d] for d in dependencies]) if dependencies else _nothing
                made[layer] = kind.register(type(layer, (Layer,), {"__module__": __name__, "__call__": call}))
            self._stand_ins[key] = kind(datastore=self.datastore)
        return self._stand_ins[key]

    def _row(self, flow: str, execution: str) -> Row | None:
        try:
            status = self.flow(flow).execution(execution).status
        except ExecutionNotFound:
            return None  # a run killed before it stored anything
        try:
            parameters: Mapping[str, Any] = status.parameters
        except Exception as error:  # an untrusted store's pickled parameters, a damaged record
            parameters = {"(not read)": f"{type(error).__name__}"}
        return Row(flow, execution, status, parameters)

    def created(self, flow: str, execution: str) -> float | None:
        """When ``execution`` was created, from its metadata; None when it has none (a run killed
        before it stored it) or it cannot be read. Only its ``created`` member is parsed, unchecked
        (cheaper than reading the record whole, for each of every execution): it only places the
        row, and the row's own records are read checked."""
        try:
            created = json.loads(self.datastore.read_bytes(layout.execution_metadata(flow, execution)))[
                "created"
            ]
        except (FileNotFoundError, DatastoreError, ValueError, TypeError, KeyError):
            return None
        return float(created) if type(created) in (int, float) else None

    def _newest_first(self, flow: str | None) -> list[tuple[str, str]]:
        """Every execution (of ``flow``, or of every flow), the most recently created first; those
        created at once by id, and those with no readable metadata last."""
        names = [flow] if flow is not None else self.flow_names()
        found = [(name, execution) for name in names for execution in self.execution_ids(name)]
        with self._reading:  # one reader of what is not known yet; the others wait and find it
            unknown = [pair for pair in found if pair not in self._created]
            read = self.datastore.map_parallel(lambda pair: self.created(*pair), unknown)
            for pair, created in zip(unknown, read, strict=True):
                if created is not None:  # a missing one may be written yet: read again next time
                    self._created[pair] = created
        found.sort(
            key=lambda pair: (pair in self._created, self._created.get(pair, 0.0), pair[1]), reverse=True
        )
        return found

    def page(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        parameter: tuple[str, str] | None = None,
        start: int = 0,
        size: int = 50,
    ) -> Page:
        """Up to ``size`` executions, newest first, from position ``start`` of the newest-first list,
        that match the filters. Records are read a batch at a time until the page is full."""
        listed = self._newest_first(flow)

        def matches(row: Row | None) -> bool:
            if row is None or (status is not None and row.status.status != status):
                return False
            if parameter is not None:
                name, wanted = parameter
                return name in row.parameters and _text(row.parameters[name]) == wanted
            return True

        rows: list[Row] = []
        position = start
        for batch in _batches(listed, start, size if status is None and parameter is None else BATCH):
            read = self.datastore.map_parallel(lambda item: self._row(*item), batch)
            for row in read:
                position += 1
                if matches(row):
                    assert row is not None
                    rows.append(row)
                    if len(rows) == size:
                        break
            if len(rows) == size:
                break
        return Page(rows, position if position < len(listed) else None, position - start, len(listed))


def _drawable(stored: Mapping[str, tuple[str, ...]]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The stored layers that can be drawn, each with its dependencies among the layers before it
    (a damaged or hostile record's other names, and edges that would make a cycle, are left out)."""
    seen = {"Parameters"}
    for layer, dependencies in stored.items():
        if is_valid(layer) and layer not in seen:
            yield layer, tuple(dict.fromkeys(d for d in dependencies if d in seen))
            seen.add(layer)


def _text(value: Any) -> str:
    """A parameter's value as a filter compares it: a string as itself, anything else as its repr."""
    return value if isinstance(value, str) else repr(value)


def _batches(items: list[Any], start: int, size: int) -> Iterator[list[Any]]:
    for first in range(start, len(items), size):
        yield items[first : first + size]


def parse_parameter(text: str | None) -> tuple[str, str] | None:
    """``name=value`` from the filter box; None when empty."""
    if not text:
        return None
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"filter parameters as name=value, e.g. n=3, not {text!r}")
    return name.strip(), value.strip()
