"""A run's store builds each layer's record key once (issue 29, item 3): a record written behind
is held, given its layer's status and written, each under that key, on the event loop twice, and
building it validates three names. Counted, never timed."""

from __future__ import annotations

from pathlib import Path

import pytest
from laminar import Flow, Layer
from laminar._storage import layout
from laminar.configurations import datastores, executors

from tests.helpers import recorded_layers


class Chain(Flow): ...


@Chain.register
class A(Layer):
    def __call__(self) -> None:
        self.value = 1


@Chain.register
class B(Layer):
    def __call__(self, a: A) -> None:
        self.value = a.value + 1


@Chain.register
class C(Layer):
    def __call__(self, b: B) -> None:
        self.value = b.value + 1


def test_a_run_builds_each_layer_s_record_key_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = layout.record

    def record(flow: str, execution: str, layer: str) -> str:
        built.append(layer)
        return real(flow, execution, layer)

    monkeypatch.setattr(layout, "record", record)
    execution = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="e")
    monkeypatch.undo()
    assert sorted(built) == ["A", "B", "C", "Parameters"]  # once each, whoever asked first
    assert execution.layer(C).value == 3
    assert recorded_layers(tmp_path, "Chain", "e") == ["A", "B", "C", "Parameters"]
