"""Flows and helpers several test modules share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter

#: The two executors every flow-level behaviour is checked on.
EXECUTORS = [pytest.param(executors.Thread, id="thread"), pytest.param(executors.Process, id="process")]


def files(root: Path) -> list[str]:
    """Every file a datastore wrote below ``root``, ignoring the empty staging directory."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def unpack_records(root: Path) -> None:
    """Write the layer records of every record pack below ``root`` as their layers' ``record.json``
    and remove the packs, as ``laminar verify --repair`` does before it sets a pack aside: for a test
    about one layer's record file (records of layers finishing together are written as one pack;
    the key layout is internal: ``laminar._storage.layout``)."""
    from laminar._serialization.registry import Protocols
    from laminar._storage.store import ExecutionStore

    datastore = datastores.Local(root)
    for pack in sorted(root.glob("flows/*/executions/*/records/*.jsonl")):
        flow, execution = pack.parts[-5], pack.parts[-3]
        ExecutionStore(datastore, flow, execution, Protocols()).unpack(
            pack.relative_to(root).as_posix(), leaving=()
        )
        pack.unlink()


def recorded_layers(root: Path, flow: str, execution: str) -> list[str]:
    """The layers of ``execution`` below ``root`` with a record stored: a ``record.json`` of their
    own, or a line of a record pack."""
    from laminar._storage import layout

    stored = root / layout.execution(flow, execution)
    found = {path.parent.name for path in stored.glob("layers/*/record.json")}
    for pack in stored.glob("records/*.jsonl"):
        found |= {json.loads(line)["layer"] for line in pack.read_bytes().split(b"\n")}
    return sorted(found)


def stored_record(datastore: datastores.Datastore, flow: str, execution: str, layer: str) -> bytes:
    """The bytes of ``layer``'s record as ``datastore`` holds them (read past any cache): its
    ``record.json``, or its line of the record pack holding it (layers finishing together have their
    records written as one pack)."""
    from laminar._storage import layout

    try:
        return bytes(datastore.read_bytes(layout.record(flow, execution, layer)))
    except FileNotFoundError:
        pass
    for name in datastore.list_prefix(layout.record_packs(flow, execution)):
        for line in datastore.read_bytes(layout.record_pack(flow, execution, name)).split(b"\n"):
            if json.loads(line)["layer"] == layer:
                return bytes(line)
    raise FileNotFoundError(f"no record of layer {layer} of execution {execution} of flow {flow}")


def records_one_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have this process's runs write each layer record as a file of its own, never a record pack:
    for a test that watches one layer's record file being written."""
    from laminar._runtime import layer_records

    monkeypatch.setattr(layer_records, "PACK", 1)


def executions_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("flows/*/executions/*"))


def batch_files(root: Path, execution: str, layer: str) -> list[str]:
    """The split-record batches of ``layer`` of Batched ``execution`` stored under ``root`` (the stored
    key layout is internal: ``laminar._storage.layout``)."""
    from laminar._storage import layout

    directory = root / layout.splits("Batched", execution, layer)
    return sorted(os.listdir(directory)) if directory.exists() else []


def run_script(directory: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python *args`` in ``directory`` (importable from there) and return its standard output."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(directory), **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def append(path: str | Path, line: str) -> None:
    """Append one line; O_APPEND keeps lines whole across processes."""
    with open(path, "a") as file:
        file.write(line + "\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class _Resolver(Flow):
    """A flow with no layers, only built to resolve a datastore URL the way a user's flow does."""


def datastore_at(url: str) -> datastores.Datastore:
    """The datastore ``Flow(datastore=url)`` resolves ``url`` to."""
    return _Resolver(datastore=url, executor="thread").configuration.datastore


class CountingLocal(datastores.Local):
    """A Local datastore that records the keys it reads and writes and the prefixes it lists (in this
    process)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.reads: list[str] = []
        self.writes: list[str] = []
        self.listings: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)

    def open_read(self, key: str) -> BinaryIO:
        self.reads.append(key)
        return super().open_read(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().write_bytes(key, data)

    def write_file(self, key: str, path: str) -> None:
        self.writes.append(key)
        super().write_file(key, path)

    def list_prefix(self, prefix: str) -> list[str]:
        self.listings.append(prefix)
        return super().list_prefix(prefix)


# ---- Diamond: Start -> (Left, Right) -> Join, each recording the process it ran in ---------------


class Diamond(Flow): ...


@Diamond.register
class Start(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.seed
        self.pid = os.getpid()


@Diamond.register
class Left(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.value + 1
        self.pid = os.getpid()


@Diamond.register
class Right(Layer):
    def __call__(self, start: Start) -> None:
        self.value = start.value * 10
        self.pid = os.getpid()


@Diamond.register
class Join(Layer):
    def __call__(self, left: Left, right: Right) -> None:
        self.value = left.value + right.value
        self.pid = os.getpid()


# ---- Batched: a foreach of ``n`` splits and a join, for the split records' batches ---------------


class Batched(Flow): ...


@Batched.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Batched.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Double(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.item * 2
        if items.item % 100 == 0:
            self.marker = items.item


@Batched.register
class Sum(Layer):
    def __call__(self, double: Double) -> None:
        self.total = sum(double.value)


def compressed_otherwise(stored: bytes) -> bytes:
    """The value in zstd bytes ``stored``, compressed again as one frame of another level: what another
    zstandard (or frame layout) would have stored, a valid stream unlike any record's digest."""
    value = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True).read()
    other = zstandard.ZstdCompressor(level=3).compress(value)  # one frame: Laminar writes 1 MiB frames
    assert other != stored  # not the bytes recorded
    return other
