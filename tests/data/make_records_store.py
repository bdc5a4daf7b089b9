"""Wrote tests/data/records-store with the code at da5febf (storage layout 3), for test_stored_formats.py.

One execution of each flow, holding every record kind that code writes: execution metadata, an
execution status with a run history (the first run fails, a resume finishes it), layer records, layer
statuses with attempts (a retried failure) and a caught error, split batches with plain and sharded
archives, and artifacts of each codec it writes (``none`` inline and under ``artifacts/``, ``zstd``)
with the pickle and the safe protocols. ``fields.json`` holds every field of every record as that
code read it back, for the test to compare with.

    .venv/bin/python tests/data/make_records_store.py tests/data/records-store
"""

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from laminar import Flow, Layer, Parameters
from laminar._storage import records
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter, Retry

root = Path(sys.argv[1])
FIXED = root.parent / "records-store.fixed"  # present: the resumed run no longer fails


class Stored(Flow): ...


@Stored.register
class Values(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.number = 42  # a scalar pickle, inline
        self.text = "café ünïcode"  # inline, non-ASCII
        self.zeros = np.zeros(1 << 20, dtype=np.uint8)  # zstd, inline
        self.runs = np.repeat(np.arange(2000, dtype=np.int64), 16)  # zstd, under artifacts/
        self.noise = np.random.default_rng(7).integers(0, 2**63, size=4096, dtype=np.int64)  # none
        self.mapping = {"word": parameters.word, "nested": {"a": (1, 2.5)}}  # inline
        self.shard(item=["a", "bad", "c"])  # a sharded archive


@Stored.register(
    foreach=ForEach(parameters=[Parameter(layer=Values, attribute="item")]),
    catch=Catch(ValueError),
    retry=Retry(attempts=2, delay=0),
)
class Fetched(Layer):
    def __call__(self, values: Values, parameters: Parameters) -> None:
        if values.item == "c" and self.attempt == 0:
            raise ConnectionError("c is down on its first attempt")  # retried: a failed attempt
        self.page = values.item.upper()
        if values.item == "bad":
            raise ValueError("cannot parse bad: «ü»")  # caught (the layer finishes); not ASCII


@Stored.register
class Joined(Layer):
    def __call__(self, fetched: Fetched) -> None:
        if not os.path.exists(FIXED):
            raise RuntimeError("the first run fails here; the resume finishes")
        self.pages = list(fetched.page)


class Safe(Flow): ...


@Safe.register
class SafeValues(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.mapping = {"word": parameters.word, "numbers": list(range(500))}  # laminar.json
        self.text = "laminar " * 300  # laminar.str
        self.blob = bytes(range(256)) * 8  # laminar.bytes
        self.array = np.arange(1000, dtype=np.float32)  # laminar.npy


def fields(value: Any) -> Any:
    """Every field of a record, as JSON: dataclasses by field name, nested, bytes as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: fields(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "origin"
        }
    if isinstance(value, dict):
        return {str(k): fields(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [fields(v) for v in value]
    if isinstance(value, bytes):
        return list(value)
    return value


def kind(path: Path) -> Any:
    """The record class of the file at ``path`` (see ``layout``)."""
    if path.parent.name == "splits":
        return records.SplitBatch
    if path.name == "status.json":
        return records.LayerStatusRecord if path.parent.parent.name == "layers" else records.ExecutionStatus
    return {"execution.json": records.ExecutionMetadata, "record.json": records.Record}[path.name]


def main() -> None:
    datastore = datastores.Local(str(root))
    datastore.worth_compressing = 0.85  # as on an object store: what shrinks at all is compressed
    flow = Stored(datastore=datastore, executor=executors.Thread())
    try:
        flow(execution="stored", word="abc")
    except Exception as error:
        print(f"first run failed as planned: {type(error).__name__}")
    FIXED.touch()
    try:
        flow.execution("stored").resume()
    finally:
        FIXED.unlink()
    safe = datastores.Local(str(root)).use_safe_protocols()
    Safe(datastore=safe, executor=executors.Thread())(execution="safe", word="abc")

    found: dict[str, Any] = {}
    for path in sorted((root / "flows").rglob("*")):
        if path.is_dir() or "logs" in path.parts or "leases" in path.parts:
            continue
        found[path.relative_to(root).as_posix()] = fields(kind(path).loads(path.read_bytes()))
    (root / "fields.json").write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"written: {len(found)} records")


main()
