"""What a run with reuse on does once, not once a layer: the flow's project folder is looked up once
(a walk up the file system's folders), not once for each key computed."""

from __future__ import annotations

from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime import reuse
from laminar.configurations import datastores, executors


class Five(Flow): ...


@Five.register
class First(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.start


@Five.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


@Five.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.value = second.value + 1


@Five.register
class Fourth(Layer):
    def __call__(self, third: Third) -> None:
        self.value = third.value + 1


def test_a_run_looks_up_its_project_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[str] = []
    root_of = reuse.root_of
    monkeypatch.setattr(reuse, "root_of", lambda flow: looked.append(flow.name) or root_of(flow))
    flow = Five(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow(start=1, reuse=True).layer(Fourth).value == 4
    assert looked == ["Five"]
    looked.clear()
    assert flow(start=1, reuse=True).layer(Fourth).value == 4  # reused: every layer keyed again
    assert looked == ["Five"]
