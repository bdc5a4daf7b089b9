"""Reading a datastore without its flow files: which flows and executions it holds, a page at a time.

The datastore keeps each execution's run records (status, run history, each layer's attempts and
errors, logs) but not the flow's code. A flow whose file was given (``laminar ui --flow FILE``) is
read with its own class, so its DAG has its edges; any other is read with a stand-in class built
from the layers its execution stored, which draws the layers without dependencies.

Execution ids sort by creation time, so the newest first is one listing per flow; only the
executions a page shows have their records read, in parallel (batched requests on object stores).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from laminar import Flow, Layer
from laminar._names import is_valid
from laminar._storage import layout
from laminar._storage.status import Status
from laminar.errors import ExecutionNotFound
from laminar.plugins import Datastore

#: Executions read at once while a filter looks for a page's worth.
BATCH = 200

#: The statuses an execution can have.
STATUSES = ("running", "succeeded", "failed", "cancelled")


def _nothing(self: Layer) -> None:
    """The call of a stand-in layer: it is only read, never run."""


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
        self._stand_ins: dict[tuple[str, tuple[str, ...]], Flow] = {}

    def flow_names(self) -> list[str]:
        return [name for name in self.datastore.list_prefix("flows/") if is_valid(name)]

    def execution_ids(self, flow: str) -> list[str]:
        return [i for i in self.datastore.list_prefix(layout.executions(flow)) if is_valid(i)]

    def stored_layers(self, flow: str, execution: str) -> list[str]:
        found = self.datastore.list_prefix(layout.layers(flow, execution))
        return [name for name in found if is_valid(name) and name != "Parameters"]

    def flow(self, name: str, execution: str | None = None) -> Flow:
        """The flow to read ``name``'s executions with: its own when its file was given, else a
        stand-in with the layers ``execution`` stored."""
        if name in self.flows:
            return self.flows[name]
        layers = tuple(self.stored_layers(name, execution)) if execution is not None else ()
        key = (name, layers)
        if key not in self._stand_ins:
            kind: type[Flow] = type(name, (Flow,), {"__module__": __name__, "__qualname__": name})
            for layer in layers:
                kind.register(type(layer, (Layer,), {"__module__": __name__, "__call__": _nothing}))
            self._stand_ins[key] = kind(datastore=self.datastore)
        return self._stand_ins[key]

    def has_dag(self, name: str) -> bool:
        """Whether ``name``'s dependencies are known (its file was given)."""
        return name in self.flows

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

    def _newest_first(self, flow: str | None) -> list[tuple[str, str]]:
        names = [flow] if flow is not None else self.flow_names()
        found = [(execution, name) for name in names for execution in self.execution_ids(name)]
        found.sort(reverse=True)  # ids sort by creation time, across flows too
        return [(name, execution) for execution, name in found]

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
