"""The ForEach grid of a layer, computed once per layer from its parameters' archives.

Split *i* maps to one coordinate per parameter by mixed-radix arithmetic (first parameter
outermost), so no grid is ever materialised and each split's bindings cost O(parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from laminar._model.layer_options import ForEach
from laminar._runtime.task import Binding, Bindings
from laminar._storage.records import Artifact, stored
from laminar._storage.store import ExecutionStore
from laminar.errors import ConfigurationError


@dataclass(frozen=True)
class Axis:
    layer: str
    attribute: str
    size: int
    artifacts: tuple[Artifact, ...] | None  # None: split i of the upstream foreach layer (index=None)


@dataclass(frozen=True)
class Grid:
    axes: tuple[Axis, ...]

    @property
    def splits(self) -> int:
        return math.prod(axis.size for axis in self.axes)

    def bindings(self, index: int) -> Bindings:
        result: Bindings = {}
        for axis in reversed(self.axes):  # the last parameter varies fastest
            index, position = divmod(index, axis.size)
            if axis.artifacts is None:
                binding = Binding(split=position)
            else:
                binding = Binding(artifact=axis.artifacts[position])
            result.setdefault(axis.layer, {})[axis.attribute] = binding
        return result


def grid(store: ExecutionStore, layer: str, foreach: ForEach) -> Grid:
    """Read the archives (or records) the parameters name and size each axis."""
    axes = []
    for parameter in foreach.parameters:
        upstream = parameter.layer.__name__
        if parameter.index is None:
            record = store.record(upstream)
            if record is None:
                raise ConfigurationError(
                    f"ForEach of layer {layer}: Parameter(layer={upstream}, attribute={parameter.attribute!r}, "
                    f"index=None) needs {upstream} to have finished, and it has not"
                )
            axes.append(Axis(upstream, parameter.attribute, record.splits, None))
            continue
        archive = store.archive(upstream, parameter.index, parameter.attribute)
        if archive is None:
            split = store.split_record(upstream, parameter.index)
            raise ConfigurationError(
                f"ForEach of layer {layer}: {upstream} has no artifact {parameter.attribute!r} in split "
                f"{parameter.index} (it stored: {stored(split)}); fix Parameter(layer={upstream}, "
                f"attribute={parameter.attribute!r})"
            )
        # A sharded attribute gives one split per item; any other value is given whole to every split.
        size = len(archive.artifacts) if archive.sharded else 1
        axes.append(Axis(upstream, parameter.attribute, size, archive.artifacts))
    return Grid(tuple(axes))
