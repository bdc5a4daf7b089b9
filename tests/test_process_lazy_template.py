"""Where the worker template cannot be forked from the scheduler (a thread runs in it: an object
store's client, say), it is a new interpreter, started when the first split needs a worker: a run
whose layers are all reused starts none, instead of one importing Laminar on the CPUs its reuse
checks use."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._runtime.forking import WorkerTemplate
from laminar.configurations import datastores, executors


class Pair(Flow): ...


@Pair.register
class Start(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.n


@Pair.register
class Double(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.value * 2


def test_a_new_interpreter_template_starts_only_when_a_split_needs_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    original = WorkerTemplate.start.__func__  # type: ignore[attr-defined]

    def counted(cls: type[WorkerTemplate]) -> Any:
        started.append("template")
        return original(cls)

    monkeypatch.setattr(WorkerTemplate, "start", classmethod(counted))
    release = threading.Event()
    holder = threading.Thread(target=release.wait, name="holds-the-fork", daemon=True)
    holder.start()  # a thread running here: the template cannot be forked from this process
    try:
        flow = Pair(datastore=datastores.Local(tmp_path), executor=executors.Process(concurrency=2))
        first = flow(n=21, reuse=True)
        assert first.layer(Double).value == 42
        assert started == ["template"]  # once, for both layers' splits
        started.clear()
        rerun = flow(n=21, reuse=True)
        assert [rerun.store.layer_status(n).reused for n in ("Start", "Double")] == [first.id] * 2  # type: ignore[union-attr]
        assert rerun.layer(Double).value == 42
        assert started == []  # nothing ran: no template
    finally:
        release.set()
        holder.join()
