"""A chain of small layers: what each layer writes, on which thread and in which order (issue 29).

A quick layer's "finished" status record is written by the status plugin's thread, after the layer's
record, so the event loop does not wait on it and a crash never leaves a layer "finished" without
its record.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from laminar import Flow, Layer
from laminar.configurations import datastores, executors


class Chain(Flow): ...


@Chain.register
class A(Layer):
    def __call__(self) -> None:
        self.carried = {"a": 1}


@Chain.register
class B(Layer):
    def __call__(self, a: A) -> None:
        self.carried = a.carried | {"b": 2}


@Chain.register
class C(Layer):
    def __call__(self, b: B) -> None:
        self.carried = b.carried | {"c": 3}


class Watching(datastores.Local):
    """Keeps, for each layer status record written, its layer, status, writing thread, and whether
    the layer's record existed then."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.statuses: list[tuple[str, str, str, bool]] = []

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/status.json") and "/layers/" in key:
            layer_directory = Path(self._path(key)).parent
            self.statuses.append(
                (
                    layer_directory.name,
                    json.loads(data)["status"],
                    threading.current_thread().name,
                    (layer_directory / "record.json").exists(),
                )
            )
        super().write_bytes(key, data)


def test_a_quick_layer_s_finished_status_is_written_off_the_event_loop_after_its_record(
    tmp_path: Path,
) -> None:
    datastore = Watching(tmp_path)
    execution = Chain(datastore=datastore, executor=executors.Thread())()
    assert execution.layer(C).carried == {"a": 1, "b": 2, "c": 3}
    assert sorted(datastore.statuses) == [
        ("A", "finished", "laminar-status", True),
        ("B", "finished", "laminar-status", True),
        ("C", "finished", "laminar-status", True),
    ]
    assert {name: layer.status for name, layer in execution.status.layers.items()} == {
        "A": "finished",
        "B": "finished",
        "C": "finished",
    }
