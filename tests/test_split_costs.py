"""What a small layer's split does once, not each time (issue 29, item 3): counted, never timed.

A chain of small layers pays the engine's work per split on its critical path: what a split can
work out once (a layer's record key) is worked out once, and what it reads of the environment it
reads when it needs it.
"""

from __future__ import annotations

from typing import Any

import pytest
from laminar import Flow, Layer
from laminar._storage import layout
from laminar.configurations import datastores, executors


class Short(Flow): ...


@Short.register
class First(Layer):
    def __call__(self) -> None:
        self.carried = {"first": 1}


@Short.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.carried = first.carried | {"second": 2}


@Short.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.carried = second.carried | {"third": 3}


def test_a_layers_record_key_is_worked_out_once_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer's record is looked up several times in a run (held, written, read by the next
    layer); its key is built (and its names validated) once."""
    built: list[str] = []
    original = layout.record

    def counted(flow: str, execution: str, layer: str) -> str:
        built.append(layer)
        return original(flow, execution, layer)

    monkeypatch.setattr(layout, "record", counted)
    execution: Any = Short(datastore=datastores.Memory(), executor=executors.Thread())()
    assert execution.layer("Third").carried == {"first": 1, "second": 2, "third": 3}
    assert {"First", "Second", "Third"} <= set(built)
    assert sorted(built) == sorted(set(built)), built  # each once
