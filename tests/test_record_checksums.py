"""A record's checksum is checked whatever its spacing, and cannot be skipped by removing it.

Each kind of record that carries a checksum (split batch, layer record, layer status, execution
status, execution metadata) is written again by a JSON tool: with ordinary spacing (``json.dumps``'s
default separators, and ``indent=2``), with a member changed, with its checksum removed. Unchanged,
it reads as before; changed, or without its checksum, it is refused as damaged with an
``IntegrityError`` naming the record and its URL, and nothing is written. Records of layout 2 written
before checksums existed still read (so do the committed old stores: tests/test_integrity.py,
tests/test_old_artifacts.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Batched, Double, files, unpack_records
from laminar._plugins import run_records
from laminar._storage import layout
from laminar.configurations import datastores, executors
from laminar.errors import IntegrityError


def reader(root: Path) -> Any:
    return Batched(datastore=datastores.Local(root), executor=executors.Thread()).execution("x")


def first_batch(root: Path) -> Path:
    return min((root / layout.splits("Batched", "x", "Double")).iterdir())


def first_size(payload: dict[str, Any]) -> None:
    """Change the ``size`` of the first artifact in a split batch (what the issue found unchecked)."""
    split = next(iter(payload["splits"].values()))
    split["archives"]["value"]["artifacts"][0]["size"] += 1


@dataclass(frozen=True)
class Kind:
    """One kind of record: where it is, how Laminar reads it, what it is called, a change to it, the
    storage layout it is written in today."""

    path: Callable[[Path], Path]
    read: Callable[[Path], Any]
    named: str
    change: Callable[[dict[str, Any]], None]
    layout: int = 3


KINDS = {
    "split batch": Kind(
        first_batch,
        lambda root: list(reader(root).layer(Double).value),
        "split batch 0-",
        first_size,
    ),
    "layer record": Kind(
        lambda root: root / layout.record("Batched", "x", "Double"),
        lambda root: list(reader(root).layer(Double).value),
        "the record of layer Double",
        lambda payload: payload.update(splits=2),
    ),
    "layer status": Kind(
        lambda root: root / layout.layer_status("Batched", "x", "Double"),
        lambda root: reader(root).status.layers["Double"].status,
        "the status of layer Double",
        lambda payload: payload.update(status="failed"),
    ),
    "execution status": Kind(
        lambda root: root / layout.execution_status("Batched", "x"),
        lambda root: reader(root).status.status,
        "the status of execution x",
        lambda payload: payload.update(status="failed"),
    ),
    "execution metadata": Kind(
        lambda root: root / layout.execution_metadata("Batched", "x"),
        lambda root: Batched(datastore=datastores.Local(root)).configuration.store("Batched", "x").metadata(),
        "the metadata of execution x",
        lambda payload: payload.update(created=1.0),
        5,  # its layer records may be in record packs (records.PACKED_LAYOUT)
    ),
}

#: How a tool writes JSON again: the default separators (", " and ": "), and indented.
SPACINGS: dict[str, Callable[[dict[str, Any]], str]] = {
    "default": json.dumps,
    "indent": lambda payload: json.dumps(payload, indent=2),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("written")
    with pytest.MonkeyPatch.context() as patch:  # each layer's status a record of its own (a layer
        patch.setattr(run_records, "RUNNING_AFTER", 0.0)  # ending sooner: its layer record's, Record.ran)
        Batched(datastore=datastores.Local(root), executor=executors.Thread())(execution="x", n=3)
    unpack_records(root)  # each layer's record a file of its own (not a line of a record pack)
    return root


@pytest.fixture
def root(written: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(written, copy)
    return copy


def rewrite(path: Path, spacing: str, change: Callable[[dict[str, Any]], None] = lambda _: None) -> None:
    payload = json.loads(path.read_bytes())
    change(payload)
    path.write_text(SPACINGS[spacing](payload))


def refused(root: Path, kind: Kind, complaint: str) -> None:
    """Reading ``kind`` raises an IntegrityError naming it, its URL and ``complaint``; nothing is written."""
    before = {name: (root / name).read_bytes() for name in files(root)}
    with pytest.raises(IntegrityError, match=complaint) as raised:
        kind.read(root)
    message = str(raised.value)
    assert kind.named in message, message
    assert kind.path(root).as_uri() in message or str(kind.path(root)) in message, message
    assert {name: (root / name).read_bytes() for name in files(root)} == before


def test_every_kind_of_record_is_sealed_and_of_the_current_layout(written: Path) -> None:
    """Guards the cases below: each record they rewrite carries a checksum today."""
    for kind in KINDS.values():
        payload = json.loads(kind.path(written).read_bytes())
        assert set(payload) >= {"sha256", "layout"}, kind.named
        assert payload["layout"] == kind.layout, kind.named


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", KINDS)
def test_a_record_written_again_with_other_spacing_reads_as_before(
    written: Path, root: Path, name: str, spacing: str
) -> None:
    kind = KINDS[name]
    expected = kind.read(written)
    rewrite(kind.path(root), spacing)
    assert not kind.path(root).read_bytes().startswith(b'{"sha256":"')  # not as Laminar lays it out
    assert kind.read(root) == expected


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", KINDS)
def test_a_record_written_again_with_other_spacing_and_a_change_is_refused(
    root: Path, name: str, spacing: str
) -> None:
    kind = KINDS[name]
    rewrite(kind.path(root), spacing, kind.change)
    refused(root, kind, "do not match its checksum")


@pytest.mark.parametrize("spacing", ["compact", *SPACINGS])
@pytest.mark.parametrize("name", KINDS)
def test_a_record_without_its_checksum_is_refused(root: Path, name: str, spacing: str) -> None:
    kind = KINDS[name]
    path = kind.path(root)
    payload = json.loads(path.read_bytes())
    del payload["sha256"]
    kind.change(payload)
    if spacing == "compact":
        path.write_text(json.dumps(payload, separators=(",", ":")))
    else:
        path.write_text(SPACINGS[spacing](payload))
    refused(root, kind, f"it has no checksum, which every record of storage layout {kind.layout} carries")


@pytest.mark.parametrize("name", KINDS)
def test_a_record_of_layout_2_without_a_checksum_still_reads(written: Path, root: Path, name: str) -> None:
    """As the code before checksums wrote them (ordinary spacing, no sha256)."""
    kind = KINDS[name]
    expected = kind.read(written)
    payload = json.loads(kind.path(root).read_bytes())
    del payload["sha256"]
    kind.path(root).write_text(json.dumps({**payload, "layout": 2}))
    assert kind.read(root) == expected
