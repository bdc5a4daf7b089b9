"""The metadata Laminar stores: Artifact, Archive, SplitRecord, SplitBatch, Record. Immutable, JSON.

Each stored record is one JSON object whose first member is a checksum of the rest of it::

    {"sha256":"<64 hex>","layout":3,...}

The digest is the SHA-256 of the compact JSON after ``{"sha256":"<64 hex>",``, so a reader checks a
record as written with one hash before parsing it, and a JSON reader that knows nothing of it reads
it as plain JSON with one more member. A record a tool wrote again with other spacing is checked by
the same digest of its members written compactly again, so whitespace never decides whether a
checksum is checked. Every record of layout 3 carries its checksum: one without is damaged. Records
of layout 2 written before the checksum existed (no ``sha256``) are still read: they are parsed and
their shape is checked. Either way garbage, a truncation or a wrong shape raises :class:`Malformed`,
which the store turns into an ``IntegrityError`` naming the record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from laminar._serialization.codecs import CODECS
from laminar._serialization.hashing import HASHES, LEGACY_HASH, WRITE_HASH
from laminar.errors import DatastoreError

#: The storage layout these records are written in. Records of a layout not in ``LAYOUTS`` are
#: refused on read, with a message, rather than misread (layout 1 kept one file per split and
#: archive). Layout 2 added the record checksum and the artifacts' ``stored`` digest as members a
#: reader of earlier layout-2 code ignores, so a layout-2 record may lack them. Split batches became
#: layout 3 when their artifacts were addressed by BLAKE3 (a reader of layout 2 would check them
#: against the chunked SHA-256 and report good data as corrupt; it refuses layout 3 instead), and
#: every record is layout 3 since a record without its checksum is refused: a layout-3 record always
#: carries one, so removing it cannot pass a change off as an earlier record.
LAYOUT = 3
#: The layouts this code reads.
LAYOUTS = (2, 3)
#: The layouts whose records always carry their checksum.
SEALED_LAYOUTS = (3,)

#: Split indices as inclusive ``(first, last)`` runs, e.g. ``((0, 150), (152, 156))``.
Runs = tuple[tuple[int, int], ...]

_SEAL = b'{"sha256":"'
_SEALED_AT = len(_SEAL) + 64 + 2  # where the checksummed body starts, after '<hex>",'
_HEX = re.compile(r"[0-9a-f]{8,128}")
#: One shared string for each codec and hash name, so a million parsed records do not hold a million
#: copies of ``"none"`` and ``"blake3"``.
_NAMES = {name: name for name in (*CODECS, *HASHES)}


class Malformed(ValueError):
    """Stored metadata is damaged or not what Laminar writes; the message says how."""


def seal(payload: dict[str, Any]) -> bytes:
    """``payload`` as JSON, with the checksum of the rest of it as its first member."""
    body = json.dumps(payload, separators=(",", ":")).encode()[1:]
    return b"".join((_SEAL, hashlib.sha256(body).hexdigest().encode(), b'",', body))


def unseal(data: bytes) -> dict[str, Any]:
    """The JSON object in ``data``, its checksum verified when it has one. Raises ``Malformed``.

    A record as ``seal`` wrote it is checked with one hash before it is parsed; any other (spacing
    changed, the checksum moved, or damage) is parsed, and its checksum checked on its members
    written compactly again. A record of a layout that carries checksums must have one.
    """
    complaint = None  # why bytes laid out as ``seal`` writes them do not verify as they are
    if data.startswith(_SEAL):
        expected = data[len(_SEAL) : _SEALED_AT - 2]
        actual = hashlib.sha256(memoryview(data)[_SEALED_AT:]).hexdigest().encode()
        if data[_SEALED_AT - 2 : _SEALED_AT] != b'",':
            complaint = "it is truncated or damaged (its checksum member is cut short)"
        elif actual != expected:
            complaint = (
                f"its bytes do not match its checksum (sha256 {actual.decode()}, recorded "
                f"{expected.decode(errors='replace')}): it is truncated or damaged"
            )
    verified = data.startswith(_SEAL) and complaint is None
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Malformed(
            complaint or f"it is not JSON ({type(error).__name__}: {error}): it is truncated or damaged"
        ) from None
    except RecursionError:
        raise Malformed("it is not a record Laminar writes (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise Malformed(f"it holds a JSON {type(payload).__name__}, not a record")
    if not verified:
        _verify(payload)
    return payload


def _verify(payload: dict[str, Any]) -> None:
    """Check the checksum of a record not laid out as ``seal`` writes it, by its members."""
    expected = payload.get("sha256")
    if expected is None:
        if payload.get("layout") in SEALED_LAYOUTS:
            raise Malformed(
                f"it has no checksum, which every record of storage layout {payload['layout']} "
                "carries: it is damaged, or was rewritten without one"
            )
        return  # a record of layout 2 written before checksums (or of an unknown layout)
    body = {name: value for name, value in payload.items() if name != "sha256"}
    actual = hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()[1:]).hexdigest()
    if actual != expected:
        raise Malformed(
            f"its bytes do not match its checksum (sha256 {actual}, recorded {expected!r}): it is "
            "truncated or damaged"
        )


def _check_layout(payload: dict[str, Any], what: str, readable: tuple[int, ...] = LAYOUTS) -> None:
    found = payload.get("layout")
    if found is None and "flow" not in payload:
        raise Malformed("it has no storage layout version: it is not a record Laminar writes")
    found = 1 if found is None else found  # layout 1 records had no version, and a "flow" member
    if type(found) is not int:
        raise Malformed(f"its storage layout version is {found!r}, not a number")
    if found not in readable:
        layouts = " and ".join(map(str, readable))
        raise DatastoreError(
            f"this {what} was written in Laminar storage layout {found}, and this Laminar reads layout"
            f"{'s' if len(readable) > 1 else ''} {layouts}; read it with the Laminar release that wrote it"
        )


def _shape(error: Exception) -> Malformed:
    detail = f"missing member {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
    return Malformed(f"it does not have the shape Laminar writes ({detail})")


def _string(value: Any, what: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{what} is {type(value).__name__}, not str")
    return value


def _error(value: Any) -> dict[str, str] | None:
    """A stored error (type, message, traceback), or None."""
    if value is not None and not (
        isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    ):
        raise TypeError(f"error is {value!r}, not a mapping of strings")
    return value


def _status(value: Any, allowed: tuple[str, ...]) -> str:
    status = _string(value, "status")
    if status not in allowed:
        raise ValueError(f"status is {status!r}, not one of {', '.join(allowed)}")
    return status


def _integer(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"{what} is {value!r}, not a count")
    return value


def runs(indices: Iterable[int]) -> Runs:
    """Sorted split indices folded into inclusive runs."""
    found: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if found and found[-1][1] == index - 1:
            found[-1] = (found[-1][0], index)
        else:
            found.append((index, index))
    return tuple(found)


class Origin(NamedTuple):
    """The split batch artifacts were read from: flow, execution, layer, and the batch's key."""

    flow: str
    execution: str
    layer: str
    batch: str


#: Where one artifact was named: its batch, split index and artifact name (built per artifact, cheaply).
Named = tuple[Origin, int, str]


def describe(named: Named | None) -> str:
    """``artifact 'x' of layer L (split 0) in execution E of flow F``, or ``an artifact`` if unknown."""
    if named is None:
        return "an artifact"
    origin, index, name = named
    return (
        f"artifact {name!r} of layer {origin.layer} (split {index}) in execution {origin.execution} "
        f"of flow {origin.flow}"
    )


@dataclass(frozen=True, slots=True)
class Artifact:
    """One stored value: its content hash, the codec its bytes use, and the protocol that reads it.

    ``hexdigest`` is the content address: the ``hash`` (BLAKE3 for what this Laminar writes; the
    chunked SHA-256 for artifacts recorded without one) of the serialized bytes, or a protocol's own.
    ``stored`` is the same hash of the bytes as stored, recorded only when it differs (compressed
    bytes, a protocol's own address), so a reader checks what it fetched before decompressing or
    deserializing it; for uncompressed bytes ``hexdigest`` is that digest.

    ``inline`` holds the stored bytes of a small value (see ``artifacts.INLINE_LIMIT``), kept in its
    archive instead of under ``artifacts/``: a request per tiny value would cost more than the value.
    ``origin`` (not stored) says where it was read from, for messages.
    """

    hexdigest: str
    codec: str = "none"
    protocol: str = "cloudpickle"
    size: int = 0
    inline: bytes | None = field(default=None, repr=False)
    stored: str | None = field(default=None, repr=False)
    origin: Named | None = field(default=None, repr=False, compare=False)
    hash: str = WRITE_HASH

    @property
    def stored_hexdigest(self) -> str | None:
        """What the stored bytes must hash to, or ``None`` if only the decoded bytes say (older records)."""
        if self.stored is not None:
            return self.stored
        return self.hexdigest if self.codec == "none" else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "hexdigest": self.hexdigest,
            "codec": self.codec,
            "protocol": self.protocol,
            "size": self.size,
        }
        if self.hash != LEGACY_HASH:  # absent: the chunked SHA-256 of records written before BLAKE3
            data["hash"] = self.hash
        if self.stored is not None:
            data["stored"] = self.stored
        if self.inline is not None:
            data["inline"] = base64.b64encode(self.inline).decode("ascii")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], origin: Named | None = None) -> Artifact:
        hexdigest = data["hexdigest"]
        if type(hexdigest) is not str or not _HEX.fullmatch(hexdigest):
            raise ValueError(f"hexdigest {hexdigest!r} is not a hex digest")
        codec = data["codec"]
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r} is not one of {', '.join(CODECS)}")
        stored = data.get("stored")
        if stored is not None and (type(stored) is not str or not _HEX.fullmatch(stored)):
            raise ValueError(f"stored digest {stored!r} is not a hex digest")
        hash = data.get("hash", LEGACY_HASH)
        if hash not in HASHES:
            raise ValueError(f"hash {hash!r} is not one of {', '.join(HASHES)}")
        inline = data.get("inline")
        return cls(
            hexdigest,
            _NAMES[codec],
            sys.intern(_string(data["protocol"], "protocol")),
            _integer(data.get("size", 0), "size"),
            binascii.a2b_base64(_string(inline, "inline")) if inline is not None else None,
            stored,
            origin,
            _NAMES[hash],
        )


@dataclass(frozen=True, slots=True)
class Archive:
    """Metadata for one named artifact of one layer split: the artifacts it points to.

    ``sharded`` archives (from ``Layer.shard``) read back as an Accessor even with one item.
    """

    artifacts: tuple[Artifact, ...]
    sharded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"artifacts": [a.to_json() for a in self.artifacts], "sharded": self.sharded}

    @classmethod
    def from_json(cls, payload: dict[str, Any], origin: Named | None = None) -> Archive:
        parse = Artifact.from_json
        return cls(tuple([parse(a, origin) for a in payload["artifacts"]]), bool(payload["sharded"]))


@dataclass(frozen=True, slots=True)
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
    def from_json(cls, payload: dict[str, Any], origin: Origin | None = None, index: int = 0) -> SplitRecord:
        archives = {
            _string(name, "artifact name"): Archive.from_json(
                archive, (origin, index, name) if origin is not None else None
            )
            for name, archive in payload["archives"].items()
        }
        caught = payload.get("caught")
        return cls(archives, _string(caught, "caught") if caught is not None else None)


def stored(record: SplitRecord | None) -> str:
    """The artifact names a split stored, for messages: ``"a, b"``, or ``"nothing"``."""
    return ", ".join(record.artifacts) if record is not None and record.archives else "nothing"


@dataclass(frozen=True, slots=True)
class SplitBatch:
    """The records of splits that finished close together, written as one object.

    The scheduler collects finished splits and writes them in batches (a group commit), so a foreach
    of many small splits costs a few writes, not one per split. The batch is named by the lowest and
    highest split index in it (see ``layout.split_batch``).
    """

    splits: Mapping[int, SplitRecord]

    def dumps(self) -> bytes:
        payload = {str(index): record.to_json() for index, record in sorted(self.splits.items())}
        return seal({"layout": LAYOUT, "splits": payload})

    @classmethod
    def loads(cls, data: bytes, origin: Origin | None = None) -> SplitBatch:
        """Parse a batch; ``origin`` (flow, execution, layer, batch key) names what it holds in messages."""
        document = unseal(data)
        _check_layout(document, "split batch")
        try:
            splits: dict[int, SplitRecord] = {}
            for index, record in document["splits"].items():
                number = int(index)
                splits[number] = SplitRecord.from_json(record, origin, number)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
            raise _shape(error) from None
        return cls(splits)


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
        return seal(
            {
                "layout": LAYOUT,
                "flow": self.flow,
                "layer": self.layer,
                "splits": self.splits,
                "batches": {
                    name: [list(run) for run in found] for name, found in sorted(self.batches.items())
                },
                "artifacts": list(self.artifacts),
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> Record:
        payload = unseal(data)
        _check_layout(payload, f"record of layer {payload.get('layer')}")
        try:
            return cls(
                _string(payload["flow"], "flow"),
                _string(payload["layer"], "layer"),
                _integer(payload["splits"], "splits"),
                {
                    _string(name, "batch name"): tuple(
                        (_integer(a, "run"), _integer(b, "run")) for a, b in found
                    )
                    for name, found in payload["batches"].items()
                },
                tuple(_string(name, "artifact name") for name in payload["artifacts"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _shape(error) from None


@dataclass(frozen=True)
class ExecutionMetadata:
    """Written when an execution starts."""

    flow: str
    id: str
    created: float

    def dumps(self) -> bytes:
        return seal({"layout": LAYOUT, "flow": self.flow, "id": self.id, "created": self.created})

    @classmethod
    def loads(cls, data: bytes) -> ExecutionMetadata:
        payload = unseal(data)
        _check_layout(payload, f"execution {payload.get('id')}")
        try:
            created = payload["created"]
            if type(created) not in (int, float):
                raise TypeError(f"created is {created!r}, not a time")
            return cls(_string(payload["flow"], "flow"), _string(payload["id"], "id"), float(created))
        except (KeyError, TypeError, ValueError) as error:
            raise _shape(error) from None


#: An execution's statuses, as stored. A "running" record whose scheduler's lease is no longer live
#: reads as failed (the results API decides that, from the lease).
STATUSES = ("running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class RunRecord:
    """One run or resume of an execution: when it started and ended, and how it ended.

    ``ended`` is None and ``status`` "running" for the run under way (or one whose scheduler died).
    """

    started: float
    ended: float | None = None
    status: str = "running"

    def to_json(self) -> list[Any]:
        return [self.started, self.ended, self.status]

    @classmethod
    def from_json(cls, item: Any) -> RunRecord:
        started, ended, status = item
        return cls(float(started), float(ended) if ended is not None else None, _status(status, STATUSES))


@dataclass(frozen=True)
class ExecutionStatus:
    """How the latest run (or resume) of an execution went: written when it starts and when it ends.

    ``error`` holds the type, message and traceback text of what ended a failed run; ``created``
    when the execution's first run started, so a listing reads one record per execution. ``runs``
    lists every run before the latest (the run history); the latest is ``started``, ``ended`` and
    ``status`` themselves. A record written before the history existed has none: one run.
    """

    flow: str
    id: str
    status: str
    started: float
    ended: float | None = None
    error: Mapping[str, str] | None = None
    created: float | None = None
    runs: tuple[RunRecord, ...] = ()

    @property
    def history(self) -> tuple[RunRecord, ...]:
        """Every run of the execution, the first first, this record's own run last."""
        return (*self.runs, RunRecord(self.started, self.ended, self.status))

    def dumps(self) -> bytes:
        return seal(
            {
                "layout": LAYOUT,
                "flow": self.flow,
                "id": self.id,
                "status": self.status,
                "started": self.started,
                "ended": self.ended,
                "error": dict(self.error) if self.error is not None else None,
                "created": self.created,
                "runs": [run.to_json() for run in self.runs],
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> ExecutionStatus:
        payload = unseal(data)
        _check_layout(payload, f"status of execution {payload.get('id')}")
        try:
            status = _status(payload["status"], STATUSES)
            ended, created = payload.get("ended"), payload.get("created")
            return cls(
                _string(payload["flow"], "flow"),
                _string(payload["id"], "id"),
                status,
                float(payload["started"]),
                float(ended) if ended is not None else None,
                _error(payload.get("error")),
                float(created) if created is not None else None,
                tuple(RunRecord.from_json(item) for item in payload.get("runs", ())),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _shape(error) from None


#: A layer's statuses, as stored. "running" while its run is under way; a reader whose execution is
#: no longer running reads it as failed. A layer with no status record has not started (or finished
#: before records existed: its layer record says so).
LAYER_STATUSES = ("running", "finished", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of one split: when it ran and, if it failed, its error (type, message, traceback).

    ``caught`` is the error ``Catch`` absorbed (the attempt then finished), in the same form. It is
    stored as a sixth item only when there is one, so records without it keep their shape.
    """

    index: int
    attempt: int
    started: float
    ended: float | None = None
    error: Mapping[str, str] | None = None
    caught: Mapping[str, str] | None = None

    def to_json(self) -> list[Any]:
        item = [self.index, self.attempt, self.started, self.ended, dict(self.error) if self.error else None]
        if self.caught:
            item.append(dict(self.caught))
        return item

    @classmethod
    def from_json(cls, item: Any) -> AttemptRecord:
        index, attempt, started, ended, error, *rest = item
        if len(rest) > 1:
            raise ValueError(f"an attempt has {len(item)} items, not 5 or 6")
        return cls(
            _integer(index, "split index"),
            _integer(attempt, "attempt"),
            float(started),
            float(ended) if ended is not None else None,
            _error(error),
            _error(rest[0]) if rest else None,
        )


@dataclass(frozen=True)
class LayerStatusRecord:
    """How a layer's latest run went: written when it starts and when it ends (``status.json``).

    ``attempts`` lists every failed attempt and the others up to a limit (``omitted`` counts those
    left out), so a layer of a million splits keeps a record of bounded size. ``next_attempt`` is
    above every attempt number any run of the layer used or may have used, recorded or left out,
    so a resume numbers new attempts after them (see ``first_attempts``); a record written before
    it existed reads it from its attempts.
    """

    flow: str
    id: str
    layer: str
    status: str
    started: float
    ended: float | None = None
    splits: int = 0
    reason: str | None = None
    error: Mapping[str, str] | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    omitted: int = 0
    next_attempt: int = 0

    def __post_init__(self) -> None:
        recorded = max((attempt.attempt + 1 for attempt in self.attempts), default=0)
        if self.next_attempt < recorded:
            object.__setattr__(self, "next_attempt", recorded)

    @property
    def complete(self) -> bool:
        """Whether every attempt the layer's runs made is listed: none left out by the limits, and
        the run that wrote it ended (one whose scheduler died never listed its own)."""
        return self.omitted == 0 and self.status != "running"

    def first_attempts(self) -> Callable[[int], int]:
        """The number a resume gives the next attempt of each split: one past the split's last
        recorded attempt, or past every number used when the record may lack some."""
        if not self.complete:
            floor = self.next_attempt
            return lambda index: floor
        last: dict[int, int] = {}
        for attempt in self.attempts:
            last[attempt.index] = max(last.get(attempt.index, -1), attempt.attempt)
        return lambda index: last.get(index, -1) + 1

    def dumps(self) -> bytes:
        return seal(
            {
                "layout": LAYOUT,
                "flow": self.flow,
                "id": self.id,
                "layer": self.layer,
                "status": self.status,
                "started": self.started,
                "ended": self.ended,
                "splits": self.splits,
                "reason": self.reason,
                "error": dict(self.error) if self.error is not None else None,
                "attempts": [attempt.to_json() for attempt in self.attempts],
                "omitted": self.omitted,
                "next_attempt": self.next_attempt,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> LayerStatusRecord:
        payload = unseal(data)
        _check_layout(payload, f"status of layer {payload.get('layer')}")
        try:
            status = _status(payload["status"], LAYER_STATUSES)
            ended, reason = payload.get("ended"), payload.get("reason")
            return cls(
                _string(payload["flow"], "flow"),
                _string(payload["id"], "id"),
                _string(payload["layer"], "layer"),
                status,
                float(payload["started"]),
                float(ended) if ended is not None else None,
                _integer(payload["splits"], "splits"),
                _string(reason, "reason") if reason is not None else None,
                _error(payload.get("error")),
                tuple(AttemptRecord.from_json(item) for item in payload["attempts"]),
                _integer(payload.get("omitted", 0), "omitted"),
                _integer(payload.get("next_attempt", 0), "next_attempt"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _shape(error) from None
