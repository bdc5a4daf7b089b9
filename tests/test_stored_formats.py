"""Stores written by the code at da5febf (storage layout 3) read back, and records are written as then.

``tests/data/records-store`` was written by that code with ``tests/data/make_records_store.py`` and
is committed unchanged: every record kind (execution metadata, an execution status with a run
history, layer records, layer statuses with a retried failure and a caught error, split batches
with plain and sharded archives) and artifacts of each codec that code writes, inline and under
``artifacts/``, with the pickle and the safe protocols. ``fields.json`` beside it holds every field
of every record as that code read it. Today's code reads each record to the same fields, writes the
same records to the same bytes, and reads every value back verified.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from laminar import Flow, Layer, Parameters
from laminar._storage import records
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Catch, ForEach, Parameter, Retry

DATA = Path(__file__).parent / "data" / "records-store"
FIELDS: dict[str, Any] = json.loads((DATA / "fields.json").read_text())


class Stored(Flow): ...


@Stored.register
class Values(Layer):
    def __call__(self, parameters: Parameters) -> None: ...


@Stored.register(
    foreach=ForEach(parameters=[Parameter(layer=Values, attribute="item")]),
    catch=Catch(ValueError),
    retry=Retry(attempts=2, delay=0),
)
class Fetched(Layer):
    def __call__(self, values: Values, parameters: Parameters) -> None: ...


@Stored.register
class Joined(Layer):
    def __call__(self, fetched: Fetched) -> None: ...


class Safe(Flow): ...


@Safe.register
class SafeValues(Layer):
    def __call__(self, parameters: Parameters) -> None: ...


def kind(path: str) -> Any:
    """The record class of the file at ``path`` (as the generating script decides it)."""
    parts = path.split("/")
    if parts[-2] == "splits":
        return records.SplitBatch
    if parts[-1] == "status.json":
        return records.LayerStatusRecord if parts[-3] == "layers" else records.ExecutionStatus
    return {"execution.json": records.ExecutionMetadata, "record.json": records.Record}[parts[-1]]


def fields(value: Any) -> Any:
    """Every field of a record as JSON, as the generating script wrote them (``origin`` is not stored)."""
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


def test_the_committed_store_holds_every_record_kind() -> None:
    """Guards the fixture: each kind and each case the tests below rest on is in it."""
    assert {kind(path) for path in FIELDS} == {
        records.ExecutionMetadata,
        records.ExecutionStatus,
        records.Record,
        records.LayerStatusRecord,
        records.SplitBatch,
    }
    for path in FIELDS:
        assert json.loads((DATA / path).read_bytes())["layout"] == 3
    status = FIELDS["flows/Stored/executions/stored/status.json"]
    assert [run["status"] for run in status["runs"]] == ["failed"] and status["status"] == "succeeded"
    attempts = FIELDS["flows/Stored/executions/stored/layers/Fetched/status.json"]["attempts"]
    assert any(attempt["error"] for attempt in attempts) and any(attempt["caught"] for attempt in attempts)
    assert "\\u00ab" in (DATA / "flows/Stored/executions/stored/layers/Fetched/status.json").read_text()
    batch = FIELDS["flows/Stored/executions/stored/layers/Values/splits/0-0.json"]
    archives = batch["splits"]["0"]["archives"]
    found = {name: archive["artifacts"][0] for name, archive in archives.items()}
    assert archives["item"]["sharded"] and len(archives["item"]["artifacts"]) == 3
    assert found["zeros"]["codec"] == "zstd" and found["zeros"]["inline"] is not None
    assert found["runs"]["codec"] == "zstd" and found["runs"]["inline"] is None and found["runs"]["stored"]
    assert found["noise"]["codec"] == "none" and found["noise"]["inline"] is None
    assert found["number"]["inline"] is not None


#: Fields records gained since da5febf, and what a record written before them reads them as.
ADDED_SINCE: dict[Any, dict[str, Any]] = {
    records.ExecutionMetadata: {"parameters": None, "dependencies": None, "packed": False},
    records.LayerStatusRecord: {"reused": None, "why": None},
    records.Record: {
        "borrowed": {},
        "held": {},
        "key": None,
        "base": None,
        "reused": None,
        "outputs": {},
        "ran": None,
    },
}


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_every_record_reads_back_with_every_field(path: str) -> None:
    read = fields(kind(path).loads((DATA / path).read_bytes()))
    for name, absence in ADDED_SINCE.get(kind(path), {}).items():
        assert read.pop(name) == absence
    assert read == FIELDS[path]


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_every_record_is_written_byte_for_byte_as_before(path: str) -> None:
    data = (DATA / path).read_bytes()
    assert kind(path).loads(data).dumps() == data


@pytest.fixture
def store(tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(DATA, copy)
    return copy


def test_every_value_reads_back(store: Path) -> None:
    flow = Stored(datastore=datastores.Local(str(store)), executor=executors.Thread())
    execution = flow.execution("stored")
    values = execution.layer(Values)
    assert values.number == 42 and values.text == "café ünïcode"
    assert values.mapping == {"word": "abc", "nested": {"a": (1, 2.5)}}
    np.testing.assert_array_equal(values.zeros, np.zeros(1 << 20, dtype=np.uint8))
    np.testing.assert_array_equal(values.runs, np.repeat(np.arange(2000, dtype=np.int64), 16))
    noise = np.random.default_rng(7).integers(0, 2**63, size=4096, dtype=np.int64)
    np.testing.assert_array_equal(values.noise, noise)
    assert list(values.item) == ["a", "bad", "c"]
    assert list(execution.layer(Fetched).page) == ["A", "BAD", "C"]
    assert execution.layer(Joined).pages == ["A", "BAD", "C"]
    status = execution.status
    assert status == "succeeded" and [run.status for run in status.runs] == ["failed", "succeeded"]
    fetched = status.layers["Fetched"]
    assert fetched.caught == 1 and [a.attempt for a in fetched.attempts[2]] == [0, 1]


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
def test_the_safe_values_read_back(store: Path, trust: str) -> None:
    datastore = datastores.Local(str(store)).use_safe_protocols()
    if trust == "untrusted":
        datastore = datastore.untrusted()
    values = Safe(datastore=datastore, executor=executors.Thread()).execution("safe").layer(SafeValues)
    assert values.mapping == {"word": "abc", "numbers": list(range(500))}
    assert values.text == "laminar " * 300 and values.blob == bytes(range(256)) * 8
    np.testing.assert_array_equal(values.array, np.arange(1000, dtype=np.float32))


def ill_typed(document: Any) -> Iterator[Any]:
    """``document`` with one member or item at a time replaced by a value no member may hold."""
    if isinstance(document, dict):
        for name, value in document.items():
            if name not in ("sha256", "layout"):
                yield {**document, name: [[]]}
                for changed in ill_typed(value):
                    yield {**document, name: changed}
    elif isinstance(document, list):
        for position, value in enumerate(document):
            yield [*document[:position], [[]], *document[position + 1 :]]
            for changed in ill_typed(value):
                yield [*document[:position], changed, *document[position + 1 :]]


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_every_member_of_every_record_is_checked(path: str) -> None:
    """Each member and item, nested ones too, replaced by a value of no type it may have, is refused:
    the codec checks what it reads everywhere, as a store that may be damaged or hostile needs."""
    document = json.loads((DATA / path).read_bytes())
    del document["sha256"]  # sealed again below, so the shape, not the checksum, refuses it
    count = 0
    for changed in ill_typed(document):
        with pytest.raises(records.Malformed, match="it does not have the shape Laminar writes"):
            kind(path).loads(records.seal(changed))
        count += 1
    assert count >= 3  # flow, id, created: the smallest record
