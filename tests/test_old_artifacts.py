"""Artifacts written before zstd and out-of-band pickles still read back.

``tests/data/zlib-inband-store`` was written by the code at commit a3dddfa (compressible values with
zlib level 1, pickles with their buffers in band) with ``tests/data/make_zlib_inband_store.py``, and
is committed unchanged. It holds a zlib-compressed numpy array, an uncompressed one, dicts inline and
under ``artifacts/``, a 10 MiB zlib value read as a stream, shards, and values stored with the safe
protocols (``.npy``, JSON, str) of that code. Each reads back with today's code, verified, the safe
ones from the store opened untrusted too.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from laminar import Flow, Layer, Parameters
from laminar._serialization.protocols import FRAMED
from laminar._storage import layout
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import IntegrityError

DATA = Path(__file__).parent / "data" / "zlib-inband-store"


class OldPickled(Flow): ...


@OldPickled.register
class Values(Layer):
    def __call__(self, parameters: Parameters) -> None:  # what the store was written with
        self.array = np.arange(50_000, dtype=np.int64).reshape(500, 100)


@OldPickled.register(foreach=ForEach(parameters=[Parameter(layer=Values, attribute="item")]))
class Doubled(Layer):
    def __call__(self, values: Values) -> None:
        self.doubled = values.item * 2


class OldSafe(Flow): ...


@OldSafe.register
class SafeValues(Layer):
    def __call__(self, parameters: Parameters) -> None: ...


@pytest.fixture
def store(tmp_path: Path) -> Path:
    copy = tmp_path / "old"
    shutil.copytree(DATA, copy)
    return copy


def artifacts(flow: str, layer: str) -> dict[str, Any]:
    (batch,) = (DATA / layout.splits(flow, "format1", layer)).iterdir()
    archives = json.loads(batch.read_bytes())["splits"]["0"]["archives"]
    return {name: archive["artifacts"][0] for name, archive in archives.items()}


def test_the_committed_store_is_in_the_earlier_format() -> None:
    """Guards the fixture: regenerated with today's code it would test nothing."""
    found = artifacts("OldPickled", "Values")
    assert {found[name]["codec"] for name in ("array", "table", "large")} == {"zlib"}
    assert found["noise"]["codec"] == "none"
    for name in ("array", "large"):
        serialized = zlib.decompress((DATA / layout.artifact(found[name]["hexdigest"])).read_bytes())
        assert serialized.startswith(b"\x80\x05") and not serialized.startswith(FRAMED)  # in band
    noise = (DATA / layout.artifact(found["noise"]["hexdigest"])).read_bytes()
    assert noise.startswith(b"\x80\x05")
    assert found["large"]["size"] > 8 << 20  # read as a stream
    assert {a["protocol"] for a in artifacts("OldSafe", "SafeValues").values()} == {
        "laminar.npy",
        "laminar.json",
        "laminar.str",
    }


def test_pickled_values_of_the_earlier_format_read_back(store: Path) -> None:
    execution = OldPickled(datastore=datastores.Local(store), executor=executors.Thread()).execution(
        "format1"
    )
    values = execution.layer(Values)
    assert np.array_equal(values.array, np.arange(50_000, dtype=np.int64).reshape(500, 100))
    assert values.array.flags.writeable
    noise = np.random.default_rng(3).integers(0, 2**63, size=4096, dtype=np.int64)
    assert np.array_equal(values.noise, noise)
    assert values.mapping == {"word": "abc", "numbers": list(range(100)), "nested": {"a": (1, 2.5)}}
    assert values.tiny == {"k": 1}
    assert values.table == {"rows": [{"id": i, "name": f"row {i}"} for i in range(2000)]}
    assert np.array_equal(values.large, np.repeat(np.arange(80, dtype=np.int64), 16384))
    assert list(execution.layer(Doubled).doubled) == [2, 4, 6]
    assert execution.layer(Parameters).word == "abc"


def test_safe_values_of_the_earlier_format_read_back_untrusted(store: Path) -> None:
    datastore = datastores.Local(store).untrusted()
    values = OldSafe(datastore=datastore, executor=executors.Thread()).execution("format1").layer(SafeValues)
    assert (
        np.array_equal(values.array, np.arange(1000, dtype=np.float32)) and values.array.dtype == np.float32
    )
    assert values.mapping == {"word": "abc", "numbers": list(range(500))}
    assert values.text == "laminar " * 300


def test_damage_to_an_earlier_zlib_artifact_is_still_named(store: Path) -> None:
    path = store / layout.artifact(artifacts("OldPickled", "Values")["large"]["hexdigest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(data)
    execution = OldPickled(datastore=datastores.Local(store), executor=executors.Thread()).execution(
        "format1"
    )
    with pytest.raises(
        IntegrityError, match=r"artifact 'large' of layer Values .* is corrupt: its bytes hash to"
    ):
        execution.layer(Values).large  # noqa: B018


def test_diff_compares_values_either_side_of_blake3_by_their_bytes(store: Path) -> None:
    # The store's execution addresses its artifacts by the chunked SHA-256; one written now, by BLAKE3.
    # The same values must not show as changed, and different ones must.
    from laminar._cli.diff import differences

    class OldSafe(Flow): ...  # the flow the store was written with, now writing BLAKE3 addresses

    @OldSafe.register
    class SafeValues(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.array = np.arange(1000, dtype=np.float32)
            self.mapping = {"word": parameters.word, "numbers": list(range(500))}
            self.text = "laminar " * 300

    flow = OldSafe(datastore=datastores.Local(store).use_safe_protocols(), executor=executors.Thread())
    flow(execution="same", word="abc")
    flow(execution="other", word="xyz")
    old = flow.execution("format1")
    assert differences(flow, old, flow.execution("same")) == []
    rows = differences(flow, old, flow.execution("other"))
    assert {(row["layer"], row["name"]) for row in rows} == {
        ("Parameters", "word"),
        ("SafeValues", "mapping"),
    }
