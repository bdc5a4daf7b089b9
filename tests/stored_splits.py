"""Where a store keeps its split records, for tests that read or tamper with them.

A layer of several splits writes them in split batch files (``layers/<L>/splits/<first>-<last>.json``,
member ``"splits"``); a layer of one split holds its split's record in its layer record itself
(``layers/<L>/record.json``, member ``"held"``, layout 4). ``Stored`` is either, so a test reads,
changes and seals again the split records wherever the code under test reads them from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import unpack_records
from laminar._storage import layout, records


@dataclass(frozen=True)
class Stored:
    """A file holding split records, and the member of its JSON that maps split index to record."""

    path: Path
    member: str  # "splits" (a split batch file) or "held" (a layer record holding its split)

    def payload(self) -> dict[str, Any]:
        """The whole stored JSON, its checksum member included."""
        payload: dict[str, Any] = json.loads(self.path.read_bytes())
        return payload

    def splits(self) -> dict[str, Any]:
        """Split index (as stored, a string) to split record."""
        found: dict[str, Any] = self.payload()[self.member]
        return found

    def split(self, index: int = 0) -> dict[str, Any]:
        record: dict[str, Any] = self.splits()[str(index)]
        return record

    def artifact(self, name: str, index: int = 0, position: int = 0) -> dict[str, Any]:
        """The stored JSON of artifact ``name`` of split ``index``."""
        entry: dict[str, Any] = self.split(index)["archives"][name]["artifacts"][position]
        return entry

    def rewrite(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the payload (checksum removed) and seal it again, as a writer would,
        so only the changed part is wrong (a layer record keeps its layout, 4)."""
        payload = self.payload()
        payload.pop("sha256")
        change(payload)
        self.path.write_bytes(records.seal(payload))

    def rewrite_split(self, change: Callable[[dict[str, Any]], None], index: int = 0) -> None:
        """Apply ``change`` to split ``index``'s record and seal the file again."""
        self.rewrite(lambda payload: change(payload[self.member][str(index)]))


def member(key: str, payload: dict[str, Any]) -> str | None:
    """The member of the stored JSON at ``key`` (a datastore key or a path) that holds split records:
    ``"splits"`` for a split batch, ``"held"`` for a layer record holding its split, else None."""
    parts = key.split("/")
    if len(parts) >= 4 and parts[-4] == "layers" and parts[-2] == "splits" and parts[-1].endswith(".json"):
        return "splits"
    if len(parts) >= 3 and parts[-3] == "layers" and parts[-1] == "record.json" and payload.get("held"):
        return "held"
    return None


def of_layer(root: Path, flow: str, execution: str, layer: str) -> list[Stored]:
    """Every file holding split records of ``layer``: its batch files, and its record if it holds one
    (a record in a record pack is first written as a file of its own: ``helpers.unpack_records``)."""
    unpack_records(root)
    found = [
        Stored(path, "splits")
        for path in sorted((root / layout.splits(flow, execution, layer)).glob("*.json"))
    ]
    record = root / layout.record(flow, execution, layer)
    if record.exists() and json.loads(record.read_bytes()).get("held"):
        found.append(Stored(record, "held"))
    return found


def holding(root: Path, flow: str, execution: str, layer: str, index: int = 0) -> Stored:
    """The file holding the record of split ``index`` of ``layer`` (exactly one must)."""
    (found,) = [s for s in of_layer(root, flow, execution, layer) if str(index) in s.splits()]
    return found


def in_store(root: Path) -> list[Stored]:
    """Every file below ``root`` holding split records: batch files and layer records holding theirs
    (records in record packs first written as files of their own)."""
    unpack_records(root)
    found = []
    for path in sorted([*root.rglob("layers/*/splits/*.json"), *root.rglob("layers/*/record.json")]):
        name = member(path.as_posix(), json.loads(path.read_bytes()))
        if name is not None:
            found.append(Stored(path, name))
    return found
