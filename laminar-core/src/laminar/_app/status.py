"""``execution.status``: how an execution's latest run went, read from any process.

The status record says what the scheduler last wrote; its lease says whether that scheduler is
still alive, so a run whose scheduler was killed reads as failed once the lease is no longer live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from laminar._storage.lease import Lease
from laminar.errors import ExecutionNotFound

if TYPE_CHECKING:
    from laminar._app.execution import Execution


@dataclass(frozen=True, eq=False)
class Status:
    """An execution's status: ``running``, ``succeeded``, ``failed`` or ``cancelled``.

    Compares equal to its name (``execution.status == "failed"``). ``started`` / ``ended`` are the
    latest run's (a resume is a run), ``created`` when the execution first started; ``error`` is
    the type, message and traceback of what ended a failed run, or why it reads as failed.
    """

    status: str
    created: datetime
    started: datetime | None
    ended: datetime | None
    error: Mapping[str, str] | None
    execution: Execution

    @property
    def duration(self) -> float | None:
        """Seconds from the latest run's start to its end; None while it runs."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters the execution was started with (read from its Parameters layer)."""
        layer = self.execution.layer("Parameters")
        names = self.execution.flow.configuration.datastore.list_artifacts(layer=layer)
        return {name: getattr(layer, name) for name in names}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        return isinstance(other, Status) and (self.status, self.execution) == (other.status, other.execution)

    def __hash__(self) -> int:
        return hash(self.status)

    def __str__(self) -> str:
        return self.status

    def __repr__(self) -> str:
        return f"Status({self.status!r}, started={self.started}, ended={self.ended})"


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value is not None else None


def read_status(execution: Execution) -> Status:
    flow = execution.flow
    store = flow.configuration.store(flow.name, execution.id)
    metadata = store.metadata()
    if metadata is None:
        raise ExecutionNotFound(
            f"execution {execution.id} of flow {flow.name} does not exist in {store.datastore.url}; list "
            "the executions there with flow.configuration.datastore.list_executions(flow=flow)"
        )
    recorded = store.status()
    status, error = (recorded.status, recorded.error) if recorded is not None else ("running", None)
    # Only a record that says "running" needs its lease read: is its scheduler still alive?
    holder = Lease(store.datastore, flow.name, execution.id).current() if status == "running" else None
    if status == "running" and not (holder is not None and holder.live()):
        who = f" ({holder.describe()})" if holder is not None else ""
        status, error = (
            "failed",
            {
                "type": "SchedulerLost",
                "message": f"its scheduler{who} stopped without finishing: its lease is no longer live; "
                f"resume it with flow.execution({execution.id!r}).resume()",
                "traceback": "",
            },
        )
    return Status(
        status,
        created=datetime.fromtimestamp(metadata.created, tz=timezone.utc),
        started=_time(recorded.started) if recorded is not None else None,
        ended=_time(recorded.ended) if recorded is not None else None,
        error=error,
        execution=execution,
    )
