"""What the scheduler sends an executor (SplitTask) and what comes back (SplitOutcome). Picklable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from laminar._storage.records import Artifact, SplitRecord
from laminar._storage.schema import made_quickly

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition
    from laminar._model.layer_options import Configuration


@dataclass(frozen=True)
class Binding:
    """What one foreach split reads for one upstream attribute: one artifact, or one upstream split."""

    artifact: Artifact | None = None
    split: int | None = None


#: upstream layer name -> attribute -> binding
Bindings = dict[str, dict[str, Binding]]


@dataclass
class SplitTask:
    """Run split ``index`` of ``splits`` of layer ``layer`` in execution ``execution`` of ``flow``.

    ``index`` and ``splits`` are ``None`` for a layer without ForEach. ``attempt`` numbers the
    split's attempts across every run of the execution (a resume goes on from the last recorded).
    ``resumed`` says whether the split runs in a resumed run of the execution. ``configuration`` is
    set when submission hooks changed it for this split. ``bindings`` say which item of each
    ForEach parameter this split reads, computed once per layer by the scheduler.
    """

    flow: FlowDefinition
    execution: str
    layer: str
    index: int | None = None
    splits: int | None = None
    attempt: int = 0
    resumed: bool = False
    configuration: Configuration | None = None
    bindings: Bindings = field(default_factory=dict)

    @property
    def retry(self) -> bool:
        """The earlier name of ``resumed`` (a resumed run, not a retried attempt)."""
        return self.resumed

    def describe(self) -> str:
        split = f", split {self.index} of {self.splits}" if self.index is not None else ""
        return f"layer {self.layer} of flow {self.flow.name} (execution {self.execution}{split}, attempt {self.attempt})"


@made_quickly  # (made once a split)
@dataclass(frozen=True)
class SplitOutcome:
    """How a split ended: its record (archives, and the error ``Catch`` absorbed).

    ``caught`` is that error's type, message and traceback text, for the run records (the split
    record keeps only its one-line form); ``None`` when nothing was caught or it was not measured.

    The split's large artifacts are stored by then; its record is not. The scheduler writes the
    records of splits that finish close together as one batch, so an executor must hand this back.
    """

    record: SplitRecord
    #: When the split ran, by the clock where it ran (``time.time()``); 0 when not measured.
    started: float = 0.0
    ended: float = 0.0
    caught: Mapping[str, str] | None = None
