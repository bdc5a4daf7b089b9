"""The run object: one run (or resume) of one execution, built once by the scheduler.

Every lifecycle hook is handed it as ``run``. It says which execution runs, with which store,
whether it resumes and since when, and carries a :class:`Stash` where each plugin keeps what it
tracks of this run, under a :class:`StashKey` of its own (as pytest's ``Stash`` does for a test
session). The state of a run lives and dies with its run object, so executions running at once in
one process never see each other's, and a plugin keeps no per-run state at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable

    from laminar._model.execution import Execution
    from laminar._runtime.layer_records import LayerRecords
    from laminar._storage.records import Ran
    from laminar._storage.store import ExecutionStore

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key of a :class:`Stash`, typed by what it stores. Keys compare by identity: make one per
    kind of state, at module level (``RECORDS = StashKey[MyRecords]()``)."""

    __slots__ = ()


class Stash:
    """Each plugin's state of one run, keyed by the plugin's own :class:`StashKey`.

    A mapping typed per key: ``stash[key] = value`` checks against ``StashKey[T]`` for a type
    checker, and ``stash[key]`` gives a ``T`` back.
    """

    def __init__(self) -> None:
        self._values: dict[StashKey[Any], object] = {}
        # The first line of most hooks, several times a layer: the dict's own ``get``, no call of
        # a method of ours in between (an instance's member is found before the class's method).
        self.__dict__["get"] = self._values.get

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._values[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast("T", self._values[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        """The value under ``key``, or ``default`` when nothing is stored there. The first line of
        most hooks, several times a layer: typed by the key, not by a ``cast`` call. (An instance
        calls its dict's ``get`` instead, set in ``__init__``: the same, without this call.)"""
        return self._values.get(key, default)  # type: ignore[return-value]

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """The value under ``key``; ``default`` stored there first when there is none."""
        return cast("T", self._values.setdefault(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)


@dataclass(eq=False, repr=False)
class Run:
    """One run or resume of ``execution``, as the lifecycle hooks see it.

    ``store`` is the execution's store (the one its application object owns); ``resumed`` says
    whether this run resumes an execution an earlier run started; ``started`` is when this run
    started (``time.time()``); ``stash`` holds each plugin's state of this run.
    """

    execution: Execution
    store: ExecutionStore
    resumed: bool
    started: float
    stash: Stash = field(default_factory=Stash)
    #: With reuse on, each layer's explanation: the execution it was reused from (or None: it ran)
    #: and why, in a line.
    explanations: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    #: The layer records this run writes behind (set by the scheduler; see :meth:`landed`).
    records: LayerRecords | None = None

    def landed(self, layer: str) -> bool:
        """Whether the record of ``layer`` is on the store: a layer's record is written behind, after
        its finished event, so this waits for it (call it off the event loop, as a plugin's writer
        thread does before recording the layer "finished"). False: its write failed, and the run
        fails. True at once for a layer whose record this run did not write."""
        return self.records is None or self.records.landed(layer)

    def when_landed(self, layer: str, call: Callable[[], object]) -> bool:
        """Call ``call`` on the thread writing the record of ``layer`` this run writes behind, once it
        is written, before the next record is (never if it fails; ``call`` must not raise); False,
        and no call, if none is on its way: it is on the store already, or this run did not write it
        behind. A plugin recording the layer "finished" so writes that right after the record, on
        that thread, instead of waking one of its own."""
        return self.records is not None and self.records.when_written(layer, call)

    def carry_status(self, layer: str, ran: Ran) -> bool:
        """Have the record of ``layer`` this run writes behind carry the layer's final status
        (``Record.ran``) if it is not being written yet: True, and no status record of its own is
        to be written; False if it is (or was), or this run did not write it behind: the plugin
        writes the status record as before. See :meth:`LayerRecords.attach`."""
        return self.records is not None and self.records.attach(layer, ran)

    def __repr__(self) -> str:
        return (
            f"Run(flow={self.execution.flow.name}, execution={self.execution.id!r}, "
            f"resumed={self.resumed}, started={self.started:.3f})"
        )
