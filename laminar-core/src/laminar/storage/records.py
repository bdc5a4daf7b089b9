"""The metadata Laminar stores: Artifact, Archive, Record. Small, immutable, JSON on the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """One stored value: its content hash, the codec its bytes use, and the protocol that reads it."""

    hexdigest: str
    codec: str = "none"
    protocol: str = "cloudpickle"
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hexdigest": self.hexdigest,
            "codec": self.codec,
            "protocol": self.protocol,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(data["hexdigest"], data["codec"], data["protocol"], int(data.get("size", 0)))


@dataclass(frozen=True)
class Archive:
    """Metadata for one named artifact of one layer split: the artifacts it points to.

    ``sharded`` archives (from ``Layer.shard``) read back as an Accessor even with one item.
    """

    artifacts: tuple[Artifact, ...]
    sharded: bool = False

    def dumps(self) -> bytes:
        payload = {"artifacts": [a.to_json() for a in self.artifacts], "sharded": self.sharded}
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes) -> Archive:
        payload = json.loads(data)
        return cls(tuple(Artifact.from_json(a) for a in payload["artifacts"]), bool(payload["sharded"]))


@dataclass(frozen=True)
class Record:
    """Written after a layer finishes: flow name, layer name, number of splits."""

    flow: str
    layer: str
    splits: int

    def dumps(self) -> bytes:
        return json.dumps({"flow": self.flow, "layer": self.layer, "splits": self.splits}).encode()

    @classmethod
    def loads(cls, data: bytes) -> Record:
        payload = json.loads(data)
        return cls(payload["flow"], payload["layer"], int(payload["splits"]))


@dataclass(frozen=True)
class SplitRecord:
    """Written after one split's archives: the split finished, with these artifact names."""

    artifacts: tuple[str, ...]
    caught: str | None = None

    def dumps(self) -> bytes:
        return json.dumps({"artifacts": list(self.artifacts), "caught": self.caught}).encode()

    @classmethod
    def loads(cls, data: bytes) -> SplitRecord:
        payload = json.loads(data)
        return cls(tuple(payload["artifacts"]), payload.get("caught"))


@dataclass(frozen=True)
class ExecutionMetadata:
    """Written when an execution starts."""

    flow: str
    id: str
    created: float
    layers: tuple[str, ...] = field(default_factory=tuple)

    def dumps(self) -> bytes:
        return json.dumps(
            {"flow": self.flow, "id": self.id, "created": self.created, "layers": list(self.layers)}
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> ExecutionMetadata:
        payload = json.loads(data)
        return cls(payload["flow"], payload["id"], float(payload["created"]), tuple(payload["layers"]))
