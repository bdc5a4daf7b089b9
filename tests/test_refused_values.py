"""Values that cannot come back are refused, not stored as something else.

cloudpickle stores an open file as a ``StringIO`` of what was left to read, and fails on a socket or a
lock with a message naming neither the artifact nor what to do. Laminar refuses them all with one
error that names the artifact, what the value is and what to store instead, and stores nothing of
the split.
"""

from __future__ import annotations

import io
import re
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import EXECUTORS, files
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.errors import SerializationError, UnstorableValue
from laminar.exceptions import LayerError

#: How each value is made inside the layer (``path`` is a text file's path), and the message's part
#: that says what it is and what to store instead.
VALUES: dict[str, tuple[Any, str]] = {
    "text file": (
        lambda path: open(path),  # noqa: SIM115
        "it is an open file (_io.TextIOWrapper '{path}'), which cannot come back when the value is read in "
        "another process or later; store what you read from it, or its path instead",
    ),
    "binary file": (
        lambda path: open(path, "rb"),  # noqa: SIM115
        "it is an open file (_io.BufferedReader '{path}'), which cannot come back",
    ),
    "file open for writing": (
        lambda path: open(path, "a"),  # noqa: SIM115
        "it is an open file (_io.TextIOWrapper '{path}')",
    ),
    "stdout": (lambda path: sys.stdout, "it is an open file ("),
    "socket": (
        lambda path: socket.socket(),
        "it is a socket (socket.socket), which cannot come back when the value is read in another process or "
        "later; store the address to connect to, and connect where it is used instead",
    ),
    "lock": (
        lambda path: threading.Lock(),
        "it is a lock (_thread.lock), which cannot come back when the value is read in another process or "
        "later; create the lock where it is used instead",
    ),
    "rlock": (lambda path: threading.RLock(), "it is a lock (_thread.RLock)"),
    "condition": (lambda path: threading.Condition(), "it is a lock (threading.Condition)"),
    "file in a dict": (
        lambda path: {"rows": [1, 2], "source": [open(path)]},  # noqa: SIM115
        "it holds an open file (_io.TextIOWrapper '{path}'), which cannot come back",
    ),
    "generator": (
        lambda path: (line for line in ["a", "b"]),
        "it is a generator (builtins.generator), which cannot come back when the value is read in another "
        "process or later; store list(...) of what it yields instead",
    ),
}


def make_flow(kind: str, *, shard: bool = False) -> type[Flow]:
    class Refusing(Flow): ...

    @Refusing.register
    class Holds(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.kept = "assigned before"
            value = VALUES[kind][0](parameters.path)
            if shard:
                self.shard(bad=["fine", value])
            else:
                self.bad = value

    return Refusing


def expected(kind: str, path: Path) -> str:
    return re.escape(
        "artifact 'bad' of layer Holds cannot be serialized: UnstorableValue: "
        + VALUES[kind][1].format(path=path)
    )


def assert_nothing_stored_for_the_split(root: Path) -> None:
    stored = files(root)
    assert [name for name in stored if "/layers/Holds/" in name and "status.json" not in name] == []
    assert [name for name in stored if name.startswith("artifacts/")] == []


@pytest.mark.parametrize("kind", list(VALUES))
def test_a_value_that_cannot_come_back_is_refused_naming_the_artifact(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line\n")
    flow = make_flow(kind)(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with pytest.raises(SerializationError, match=expected(kind, path)) as error:
        flow(path=str(path))
    assert isinstance(error.value, LayerError)  # as the earlier laminar raised it
    assert isinstance(error.value.__cause__, UnstorableValue)
    assert_nothing_stored_for_the_split(tmp_path / "store")


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("kind", ["text file", "socket", "lock"])
def test_refused_on_every_executor_and_in_a_shard(tmp_path: Path, kind: str, executor: Any) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("text")
    flow = make_flow(kind, shard=True)(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    with pytest.raises(SerializationError, match=expected(kind, path)):
        flow(path=str(path))
    assert_nothing_stored_for_the_split(tmp_path / "store")


def test_a_parameter_that_cannot_come_back_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("text")

    class Configured(Flow): ...

    flow = Configured(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    with path.open() as handle, pytest.raises(SerializationError) as error:
        flow(source=handle)
    assert str(error.value).startswith(
        f"parameter 'source' of flow Configured cannot be serialized: UnstorableValue: it is an open file "
        f"(_io.TextIOWrapper '{path}'), which cannot come back"
    )
    assert files(tmp_path / "store") == []


def test_in_memory_files_and_ordinary_values_still_come_back(tmp_path: Path) -> None:
    class Kept(Flow): ...

    @Kept.register
    class Memory(Layer):
        def __call__(self) -> None:
            self.buffer = io.BytesIO(b"bytes")
            self.text = io.StringIO("text")
            self.nested = {"buffers": [io.BytesIO(b"x")], "number": 1}

    layer = Kept(datastore=datastores.Local(tmp_path), executor=executors.Thread())().layer(Memory)
    assert layer.buffer.getvalue() == b"bytes" and layer.text.getvalue() == "text"
    assert layer.nested["buffers"][0].getvalue() == b"x" and layer.nested["number"] == 1
