"""Reading the run records: how an execution's latest run went, layer by layer, split by split.

The status records say what the scheduler last wrote (see :mod:`laminar._plugins.run_records`): a
layer's own ``status.json``, or, for a quick layer that has none, the status its layer record carries
(``ExecutionStore.layer_state`` reads either); the lease says whether that scheduler is still alive, so a run whose scheduler was killed reads as
failed once its lease is no longer live, and so do the layers it was running.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from laminar._storage.lease import Lease
from laminar._storage.records import AttemptRecord, RunRecord
from laminar._storage.store import ExecutionStore
from laminar.errors import ExecutionNotFound


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value is not None else None


def _seconds(started: datetime | None, ended: datetime | None) -> float | None:
    return (ended - started).total_seconds() if started is not None and ended is not None else None


@dataclass(frozen=True)
class Attempt:
    """One attempt of split ``index``: when it ran and, if it failed, its ``error``.

    Attempts are numbered once across every run of the execution (0 first; a resume goes on after
    the last recorded). ``error`` holds ``type``, ``message`` and ``traceback`` (the text, the
    layer's own frames); ``caught``, in the same form, the error ``Catch`` absorbed in an attempt
    that finished so.
    """

    index: int
    attempt: int
    started: datetime
    ended: datetime | None
    error: Mapping[str, str] | None
    caught: Mapping[str, str] | None = None

    @property
    def duration(self) -> float | None:
        return _seconds(self.started, self.ended)

    @classmethod
    def from_record(cls, record: AttemptRecord) -> Attempt:
        started = _time(record.started)
        assert started is not None
        return cls(record.index, record.attempt, started, _time(record.ended), record.error, record.caught)


@dataclass(frozen=True)
class Run:
    """One run or resume of an execution: when it started and ended, and its ``status`` then
    (``running`` for the run under way, or one whose scheduler died)."""

    started: datetime
    ended: datetime | None
    status: str

    @property
    def duration(self) -> float | None:
        return _seconds(self.started, self.ended)

    @classmethod
    def from_record(cls, record: RunRecord, status: str | None = None, *, ended: bool = False) -> Run:
        """``record`` read as ``status`` (its own by default); an ``ended`` run (a later one started)
        still "running" had its scheduler die, and reads as failed."""
        started = _time(record.started)
        assert started is not None
        status = status or record.status
        return cls(started, _time(record.ended), "failed" if ended and status == "running" else status)


@dataclass(frozen=True)
class LayerStatus:
    """A layer's state in an execution: ``finished``, ``failed``, ``skipped``, ``running``,
    ``cancelled`` (stopped before it was done) or ``not started``.

    ``reason`` says why it was skipped or cancelled; ``attempts`` maps each split index (0 for a
    layer without ForEach) to its attempts, every failed or caught one kept and the others up to a
    limit (``omitted`` counts those left out); ``error`` is the error of its split that failed for
    good; ``caught`` counts the attempts that finished with an error ``Catch`` absorbed. In a run
    with reuse on, ``reused`` names the execution it was reused from and ``why`` says why it ran.
    """

    name: str
    status: str
    reason: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    splits: int | None = None
    attempts: Mapping[int, tuple[Attempt, ...]] = field(default_factory=dict)
    error: Mapping[str, str] | None = None
    omitted: int = 0
    #: With reuse on: the execution whose values the layer reused (None: it ran), and why, in a line.
    reused: str | None = None
    why: str | None = None

    @property
    def duration(self) -> float | None:
        return _seconds(self.started, self.ended)

    @property
    def caught(self) -> int:
        return sum(1 for found in self.attempts.values() for attempt in found if attempt.caught)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        return NotImplemented if not isinstance(other, LayerStatus) else self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((self.name, self.status))

    def __str__(self) -> str:
        return self.status


@dataclass(frozen=True, eq=False)
class Status:
    """An execution's status: ``running``, ``succeeded``, ``failed`` or ``cancelled``.

    Compares equal to its name (``execution.status == "failed"``). ``started`` / ``ended`` are the
    latest run's (a resume is a run), ``created`` when the execution first started; ``runs`` is
    the run history: every run and resume, the first first, each with its start, end and status
    (the latest as this status reads). ``error`` is the type, message and traceback of what ended
    a failed run, or why it reads as failed.
    ``layers`` (read on first use) maps each layer, in the flow's order, to its :class:`LayerStatus`.
    """

    status: str
    created: datetime
    started: datetime | None
    ended: datetime | None
    error: Mapping[str, str] | None
    flow: str
    id: str
    _read_layers: Callable[[Status], Mapping[str, LayerStatus]] = field(repr=False)
    _read_parameters: Callable[[], dict[str, Any]] = field(repr=False)
    runs: tuple[Run, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from the latest run's start to its end; None while it runs."""
        return _seconds(self.started, self.ended)

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters the execution was started with (read from its Parameters layer)."""
        return self._read_parameters()

    @functools.cached_property
    def layers(self) -> Mapping[str, LayerStatus]:
        return self._read_layers(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        return isinstance(other, Status) and (self.status, self.flow, self.id) == (
            other.status,
            other.flow,
            other.id,
        )

    def __hash__(self) -> int:
        return hash(self.status)

    def __str__(self) -> str:
        return self.status

    def __repr__(self) -> str:
        return f"Status({self.status!r}, started={self.started}, ended={self.ended})"


def not_found(store: ExecutionStore) -> ExecutionNotFound:
    return ExecutionNotFound(
        f"execution {store.execution} of flow {store.flow} does not exist in {store.datastore.url}; list "
        "the executions there with flow.configuration.datastore.list_executions(flow=flow)"
    )


def read_status(
    store: ExecutionStore,
    layers: Sequence[str],
    parameters: Callable[[], dict[str, Any]],
) -> Status:
    """The status of ``store``'s execution; ``layers`` are the flow's, in order (without Parameters).

    One small record is read; the metadata only for a record written before records held the
    creation time, and the lease only for a record that says "running".
    """
    recorded = store.status()
    if recorded is not None and recorded.created is not None:
        created = recorded.created
    else:  # no record, or one written before records held the creation time
        metadata = store.metadata()
        if metadata is None:
            raise not_found(store)
        created = metadata.created
    status, error = (recorded.status, recorded.error) if recorded is not None else ("running", None)
    # Only a record that says "running" needs its lease read: is its scheduler still alive?
    holder = Lease(store.datastore, store.flow, store.execution).current() if status == "running" else None
    if status == "running" and not (holder is not None and holder.live()):
        who = f" ({holder.describe()})" if holder is not None else ""
        status, error = (
            "failed",
            {
                "type": "SchedulerLost",
                "message": f"its scheduler{who} stopped without finishing: its lease is no longer live; "
                f"resume it with flow.execution({store.execution!r}).resume()",
                "traceback": "",
            },
        )

    runs: tuple[Run, ...] = ()
    if recorded is not None:  # each run as read: a dead scheduler's reads as failed
        *earlier, latest = recorded.history
        runs = (*(Run.from_record(run, ended=True) for run in earlier), Run.from_record(latest, status))

    def read_layers(read: Status) -> Mapping[str, LayerStatus]:
        found = store.datastore.map_parallel(lambda name: layer_status(store, name, read), list(layers))
        return dict(zip(layers, found, strict=True))

    return Status(
        status,
        created=datetime.fromtimestamp(created, tz=timezone.utc),
        started=_time(recorded.started) if recorded is not None else None,
        ended=_time(recorded.ended) if recorded is not None else None,
        error=error,
        flow=store.flow,
        id=store.execution,
        _read_layers=read_layers,
        _read_parameters=parameters,
        runs=runs,
    )


def layer_status(store: ExecutionStore, name: str, execution: Status | Callable[[], Status]) -> LayerStatus:
    """The state of layer ``name``; ``execution`` (or how to read it) tells a live run from a dead one."""
    record, finished = store.layer_state(name)  # a layer reused whole: as its record says
    if record is None:  # no run of it recorded a status: finished before records existed, or not started
        if finished is not None:
            return LayerStatus(name, "finished")
        if not store.metadata_exists():
            raise not_found(store)
        return LayerStatus(name, "not started")
    attempts: dict[int, list[Attempt]] = {}
    for attempt in record.attempts:
        attempts.setdefault(attempt.index, []).append(Attempt.from_record(attempt))
    status, reason = record.status, record.reason
    if status == "running":
        run = execution if isinstance(execution, Status) else execution()
        if run.status != "running":  # its scheduler stopped (or died) while the layer ran
            status = "failed" if run.status == "failed" else "cancelled"
            reason = f"the execution {run.status} while the layer ran" + (
                f": {run.error['message']}" if run.error else ""
            )
    return LayerStatus(
        name,
        status,
        reason=reason,
        started=_time(record.started),
        ended=_time(record.ended),
        splits=record.splits,
        attempts={
            index: tuple(sorted(found, key=lambda a: a.attempt)) for index, found in sorted(attempts.items())
        },
        error=record.error,
        omitted=record.omitted,
        reused=record.reused,
        why=record.why,
    )
