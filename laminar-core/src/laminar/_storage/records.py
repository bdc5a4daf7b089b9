"""The metadata Laminar stores: Artifact, Archive, SplitRecord, SplitBatch, Record. Immutable, JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from laminar.errors import DatastoreError

#: The storage layout these records belong to. Records of another layout are refused on read,
#: with a message, rather than misread (layout 1 kept one file per split and archive).
LAYOUT = 2

#: Split indices as inclusive ``(first, last)`` runs, e.g. ``((0, 150), (152, 156))``.
Runs = tuple[tuple[int, int], ...]


def runs(indices: Iterable[int]) -> Runs:
    """Sorted split indices folded into inclusive runs."""
    found: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if found and found[-1][1] == index - 1:
            found[-1] = (found[-1][0], index)
        else:
            found.append((index, index))
    return tuple(found)


def _check_layout(payload: dict[str, Any], what: str) -> None:
    found = payload.get("layout", 1)
    if found != LAYOUT:
        raise DatastoreError(
            f"this {what} was written in Laminar storage layout {found}, and this Laminar reads layout "
            f"{LAYOUT}; read it with the Laminar release that wrote it"
        )


@dataclass(frozen=True)
class Artifact:
    """One stored value: its content hash, the codec its bytes use, and the protocol that reads it.

    ``inline`` holds the stored bytes of a small value (see ``artifacts.INLINE_LIMIT``), kept in its
    archive instead of under ``artifacts/``: a request per tiny value would cost more than the value.
    """

    hexdigest: str
    codec: str = "none"
    protocol: str = "cloudpickle"
    size: int = 0
    inline: bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "hexdigest": self.hexdigest,
            "codec": self.codec,
            "protocol": self.protocol,
            "size": self.size,
        }
        if self.inline is not None:
            data["inline"] = base64.b64encode(self.inline).decode("ascii")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        inline = data.get("inline")
        return cls(
            data["hexdigest"],
            data["codec"],
            data["protocol"],
            int(data.get("size", 0)),
            base64.b64decode(inline) if inline is not None else None,
        )


@dataclass(frozen=True)
class Archive:
    """Metadata for one named artifact of one layer split: the artifacts it points to.

    ``sharded`` archives (from ``Layer.shard``) read back as an Accessor even with one item.
    """

    artifacts: tuple[Artifact, ...]
    sharded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"artifacts": [a.to_json() for a in self.artifacts], "sharded": self.sharded}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Archive:
        return cls(tuple(Artifact.from_json(a) for a in payload["artifacts"]), bool(payload["sharded"]))


@dataclass(frozen=True)
class SplitRecord:
    """One finished split: its archives by artifact name, and the error ``Catch`` absorbed, if any."""

    archives: Mapping[str, Archive]
    caught: str | None = None

    @property
    def artifacts(self) -> tuple[str, ...]:
        """The names of the artifacts the split stored, sorted."""
        return tuple(sorted(self.archives))

    def to_json(self) -> dict[str, Any]:
        return {"archives": {n: a.to_json() for n, a in self.archives.items()}, "caught": self.caught}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> SplitRecord:
        archives = {name: Archive.from_json(a) for name, a in payload["archives"].items()}
        return cls(archives, payload.get("caught"))


def stored(record: SplitRecord | None) -> str:
    """The artifact names a split stored, for messages: ``"a, b"``, or ``"nothing"``."""
    return ", ".join(record.artifacts) if record is not None and record.archives else "nothing"


@dataclass(frozen=True)
class SplitBatch:
    """The records of splits that finished close together, written as one object.

    The scheduler collects finished splits and writes them in batches (a group commit), so a foreach
    of many small splits costs a few writes, not one per split. The batch is named by the lowest and
    highest split index in it (see ``layout.split_batch``).
    """

    splits: Mapping[int, SplitRecord]

    def dumps(self) -> bytes:
        payload = {str(index): record.to_json() for index, record in sorted(self.splits.items())}
        return json.dumps({"layout": LAYOUT, "splits": payload}, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes) -> SplitBatch:
        document = json.loads(data)
        _check_layout(document, "split batch")
        payload = document["splits"]
        return cls({int(index): SplitRecord.from_json(record) for index, record in payload.items()})


@dataclass(frozen=True)
class Record:
    """Written after a layer finishes: flow name, layer name, number of splits.

    It also maps each split batch holding the layer's splits to the runs of split indices in it, and
    lists the artifact names they stored, so reading a finished layer needs no listing and finds any
    split's batch directly.
    """

    flow: str
    layer: str
    splits: int
    batches: Mapping[str, Runs] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "layout": LAYOUT,
                "flow": self.flow,
                "layer": self.layer,
                "splits": self.splits,
                "batches": {
                    name: [list(run) for run in found] for name, found in sorted(self.batches.items())
                },
                "artifacts": list(self.artifacts),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> Record:
        payload = json.loads(data)
        _check_layout(payload, f"record of layer {payload.get('layer')}")
        return cls(
            payload["flow"],
            payload["layer"],
            int(payload["splits"]),
            {name: tuple((int(a), int(b)) for a, b in found) for name, found in payload["batches"].items()},
            tuple(payload["artifacts"]),
        )


@dataclass(frozen=True)
class ExecutionMetadata:
    """Written when an execution starts."""

    flow: str
    id: str
    created: float

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "layout": LAYOUT,
                "flow": self.flow,
                "id": self.id,
                "created": self.created,
            }
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> ExecutionMetadata:
        payload = json.loads(data)
        _check_layout(payload, f"execution {payload.get('id')}")
        return cls(payload["flow"], payload["id"], float(payload["created"]))
