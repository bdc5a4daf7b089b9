"""The metadata Laminar stores: Artifact, Archive, SplitRecord, SplitBatch, Record and the run records.

Each record is declared once, as a frozen dataclass whose fields are its stored members (``schema``
derives how it is written and checked when read). Each stored record is one JSON object whose first
member is a checksum of the rest of it::

    {"sha256":"<64 hex>","layout":3,...}

The digest is the SHA-256 of the compact JSON after ``{"sha256":"<64 hex>",``, so a reader checks a
record as written with one hash before parsing it, and a JSON reader that knows nothing of it reads
it as plain JSON with one more member. A record a tool wrote again with other spacing is checked by
the same digest of its members written compactly again, so whitespace never decides whether a
checksum is checked. Every record of layout 3 carries its checksum: one without is damaged. Records
earlier releases wrote (``earlier``) are still read. Either way garbage, a truncation or a wrong
shape raises :class:`Malformed`, which the store turns into an ``IntegrityError`` naming the record.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

import orjson

from laminar._names import is_valid
from laminar._serialization.codecs import CODECS
from laminar._serialization.hashing import HASHES, LEGACY_HASH, WRITE_HASH
from laminar._storage import collector, earlier, layout
from laminar._storage.schema import (
    Schema,
    absent,
    checked,
    context,
    matching,
    one_of,
    record,
    sorted_keys,
    sparse,
)
from laminar.errors import DatastoreError

#: The storage layout these records are written in. Records of a layout not in ``LAYOUTS`` are
#: refused on read, with a message, rather than misread (see ``earlier`` for the layouts before).
#: Split batches became layout 3 when their artifacts were addressed by BLAKE3 (a reader of layout 2
#: would check them against the chunked SHA-256 and report good data as corrupt; it refuses layout 3
#: instead), and every record is layout 3 since a record without its checksum is refused: a layout-3
#: record always carries one, so removing it cannot pass a change off as an earlier record.
LAYOUT = 3
#: The layout of a layer record that holds its split's record itself (``Record.held``), which a
#: reader of layout 3 would misread as naming a batch that is missing: it refuses layout 4 instead.
#: Every other record is still written in layout 3, which the releases before read.
HELD_LAYOUT = 4
#: The layout of the metadata of an execution whose layer records may be in record packs
#: (``layout.record_pack``), which a reader of layouts 3 and 4 would not see: such a reader would
#: take those layers as not finished, and its ``laminar gc`` would delete the values only they
#: reference. It refuses the execution instead. Every other record is written as before.
PACKED_LAYOUT = 5
#: The layouts this code reads.
LAYOUTS = (*earlier.LAYOUTS, LAYOUT, HELD_LAYOUT, PACKED_LAYOUT)
#: The layouts whose records always carry their checksum.
SEALED_LAYOUTS = (3, HELD_LAYOUT, PACKED_LAYOUT)

#: A split batch's archive of more artifacts than this is written this many at a time (``SplitBatch``).
CHUNK = 4096

#: Split indices as inclusive ``(first, last)`` runs, e.g. ``((0, 150), (152, 156))``.
Runs = tuple[tuple[int, int], ...]
#: Splits another execution stored, as inclusive ``(first, last, there)`` runs: split ``i`` of a run
#: is split ``there + i - first`` of that execution, e.g. ``((0, 9999, 0),)`` for a whole layer.
Borrowed = tuple[tuple[int, int, int], ...]
#: A stored error: its type, message and traceback text.
Error = Mapping[str, str]

_SEAL = b'{"sha256":"'
_SPLITS = b'"layout":%d,"splits":{' % LAYOUT  # how a split batch's checksummed body starts
_COMPACT = (",", ":")
#: ``json.dumps(payload, separators=_COMPACT)``, the same text, from an encoder made once, not once a
#: call, and without the check for cycles no record has: what orjson refuses is written with it.
_ENCODE = json.JSONEncoder(separators=_COMPACT, check_circular=False).encode
_SEALED_AT = len(_SEAL) + 64 + 2  # where the checksummed body starts, after '<hex>",'
_HEX = re.compile(r"[0-9a-f]{8,128}")


class Malformed(ValueError):
    """Stored metadata is damaged or not what Laminar writes; the message says how."""


def seal(payload: dict[str, Any]) -> bytes:
    """``payload`` as JSON, with the checksum of the rest of it as its first member."""
    body = compact(payload)[1:]
    return b"".join((_SEAL, hashlib.sha256(body).hexdigest().encode(), b'",', body))


def compact(payload: Any) -> bytes:
    """``json.dumps(payload, separators=_COMPACT)``, byte for byte, made by orjson where its text is
    the same: every record is written through here (a chain a layer, a foreach a batch of splits),
    and orjson encodes several times faster (figures: docs/performance.md).

    ``json``'s text is the one written (records keep the bytes they always had): where orjson's
    would differ, or orjson refuses, ``json`` writes it. orjson writes characters past ASCII's
    printable ones (DEL and beyond) as themselves, a float below 1e-4 otherwise (``0.00001`` or
    ``1e-7`` for ``1e-05`` and ``1e-07``), and a time that is not finite as ``null`` (a record's writer
    hands it over as ``schema.NotFinite``, which orjson refuses, as it refuses an integer past 64 bits
    and a key that is not a string): its text with any of those is not used."""
    try:
        text = orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError; json raises again for what it cannot write either
        return _ENCODE(payload).encode()
    # (``find``, not ``in``: ``bytes in bytes`` first tries, and fails, to read it as a number)
    if (
        text.isascii()
        and text.find(b"\x7f") < 0
        and text.find(b"0.0000") < 0  # orjson's form of a float below 1e-4, where json's has an exponent
        and (text.find(b"e-") < 0 or _ONE_DIGIT_EXPONENT.search(text) is None)  # json pads it: 1e-07
    ):
        return text
    return _ENCODE(payload).encode()


#: A float's exponent as orjson writes one of a single digit (``1e-7``). Text holding it or
#: ``0.0000`` only costs ``json``'s encoding (the same bytes); the search runs only where ``e-`` is.
_ONE_DIGIT_EXPONENT = re.compile(rb"\de-\d(?!\d)")


def seal_pieces(body: Iterable[bytes | memoryview]) -> bytes:
    """``seal`` of a payload given as the pieces of its compact JSON after the opening ``{``: each is
    hashed and gathered as it comes, so no piece is held twice (the bytes are those ``seal`` gives)."""
    buffer = io.BytesIO()
    buffer.write(bytes(_SEALED_AT))  # the checksum's place, filled in once the body is hashed
    digest = hashlib.sha256()
    for piece in body:
        digest.update(piece)
        buffer.write(piece)
    buffer.seek(0)
    buffer.write(b"".join((_SEAL, digest.hexdigest().encode(), b'",')))
    return buffer.getvalue()


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
        payload = _parsed(data)
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


def _parsed(data: bytes) -> Any:
    """The JSON value in ``data``: parsed by orjson, several times faster than ``json`` on a large split
    batch (figures: docs/performance.md); what orjson refuses (damage, NaN, integers past 64 bits,
    nesting past its limit) is parsed again by ``json``, which accepts what it accepted before or
    raises as before."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


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


def _check_layout(payload: dict[str, Any], kind: type[Document]) -> None:
    found = earlier.layout_of(payload)
    if found is None:
        raise Malformed("it has no storage layout version: it is not a record Laminar writes")
    if type(found) is not int:
        raise Malformed(f"its storage layout version is {found!r}, not a number")
    if found not in LAYOUTS:
        layouts = ", ".join(map(str, LAYOUTS[:-1])) + f" and {LAYOUTS[-1]}"
        what = kind.described.format_map(_Members(payload))
        raise DatastoreError(
            f"this {what} was written in Laminar storage layout {found}, and this Laminar reads layouts "
            f"{layouts}; read it with the Laminar release that wrote it"
        )


def _shape(error: Exception) -> Malformed:
    detail = f"missing member {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
    return Malformed(f"it does not have the shape Laminar writes ({detail})")


D = TypeVar("D", bound="Document")

#: A record of this many bytes or more is read with the garbage collector paused (``collector``),
#: and a split batch of this many splits or more written so: about 64 small splits' records.
LARGE_RECORD = 1 << 16
LARGE_BATCH = 256


class Document(Schema):
    """A record stored as a file of its own: sealed (see the module), with its layout first."""

    __slots__ = ()
    stored_first: ClassVar[Mapping[str, Any]] = {"layout": LAYOUT}
    #: The record in messages, filled in with its members (those missing read as None).
    described: ClassVar[str]

    def dumps(self) -> bytes:
        return seal(self._write(self))

    @classmethod
    def loads(cls: type[D], data: bytes, origin: Origin | None = None) -> D:
        """Parse a record; ``origin`` (for a split batch) names where its artifacts are in messages."""
        with collector.paused() if len(data) >= LARGE_RECORD else contextlib.nullcontext():
            payload = unseal(data)
            _check_layout(payload, cls)
            try:
                record: D = cls._read(payload, None if origin is None else (origin,))
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise _shape(error) from None
        return record


class _Members(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


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


@record
@dataclass(frozen=True, slots=True)
class Artifact(Schema):
    """One stored value: its content hash, the codec its bytes use, and the protocol that reads it.

    ``hexdigest`` is the content address: the ``hash`` (BLAKE3 for what this Laminar writes; the
    chunked SHA-256 for artifacts recorded without one) of the serialized bytes, or a protocol's own.
    ``stored`` is the same hash of the bytes as stored, recorded only when it differs (compressed
    bytes, a protocol's own address), so a reader checks what it fetched before decompressing or
    deserializing it; for uncompressed bytes ``hexdigest`` is that digest.

    ``inline`` holds the stored bytes of a small value (see ``staging.INLINE_LIMIT``), kept in its
    archive instead of under ``artifacts/``: a request per tiny value would cost more than the value.
    ``origin`` (not stored) says where it was read from, for messages.
    """

    hexdigest: str = field(metadata=matching(_HEX, "a hex digest"))
    codec: str = field(default="none", metadata=one_of(CODECS))
    protocol: str = field(default="cloudpickle", metadata=checked(sys.intern))
    size: int = field(default=0, metadata=absent(0))
    hash: str = field(default=WRITE_HASH, metadata=one_of(HASHES, **sparse(LEGACY_HASH)))
    stored: str | None = field(
        default=None, repr=False, metadata=matching(_HEX, "a hex digest", **sparse(None))
    )
    inline: bytes | None = field(default=None, repr=False, metadata=sparse(None))
    origin: Named | None = field(default=None, repr=False, compare=False, metadata=context())

    @property
    def stored_hexdigest(self) -> str | None:
        """What the stored bytes must hash to, or ``None`` if only the decoded bytes say (older records)."""
        if self.stored is not None:
            return self.stored
        return self.hexdigest if self.codec == "none" else None


@record
@dataclass(frozen=True, slots=True)
class Archive(Schema):
    """Metadata for one named artifact of one layer split: the artifacts it points to.

    ``sharded`` archives (from ``Layer.shard``) read back as an Accessor even with one item.
    """

    artifacts: tuple[Artifact, ...]
    sharded: bool = False


@record
@dataclass(frozen=True, slots=True)
class SplitRecord(Schema):
    """One finished split: its archives by artifact name, and the error ``Catch`` absorbed, if any."""

    archives: Mapping[str, Archive]
    caught: str | None = field(default=None, metadata=absent(None))

    @property
    def artifacts(self) -> tuple[str, ...]:
        """The names of the artifacts the split stored, sorted."""
        return tuple(sorted(self.archives))


def stored(record: SplitRecord | None) -> str:
    """The artifact names a split stored, for messages: ``"a, b"``, or ``"nothing"``."""
    return ", ".join(record.artifacts) if record is not None and record.archives else "nothing"


@record
@dataclass(frozen=True, slots=True)
class SplitBatch(Document):
    """The records of splits that finished close together, written as one object.

    The scheduler collects finished splits and writes them in batches (a group commit), so a foreach
    of many small splits costs a few writes, not one per split. The batch is named by the lowest and
    highest split index in it (see ``layout.split_batch``).
    """

    described: ClassVar[str] = "split batch"

    splits: Mapping[int, SplitRecord] = field(metadata=sorted_keys())

    def dumps(self) -> bytes:
        """As every record, but an archive of more than ``CHUNK`` artifacts (a large shard) is encoded
        ``CHUNK`` artifacts at a time: a million artifacts' JSON objects are never built at once."""
        large = sorted(
            (index, name)
            for index, split in self.splits.items()
            for name, archive in split.archives.items()
            if len(archive.artifacts) > CHUNK
        )
        with collector.paused() if large or len(self.splits) >= LARGE_BATCH else contextlib.nullcontext():
            return seal_pieces(self._pieces(large)) if large else seal(self._write(self))

    @staticmethod
    def joined(stored: Iterable[bytes]) -> bytes:
        """One batch of the splits of these batches as ``dumps`` wrote them (of different splits),
        in the order given: their splits' JSON copied as it is, not encoded again, and sealed.

        Given in order of their indices, the bytes are those ``dumps`` gives for all their splits;
        batches whose indices interleave give their splits out of order, which reads the same."""
        pieces: list[bytes | memoryview] = [_SPLITS]
        for data in stored:
            body = memoryview(data)[_SEALED_AT:]
            if bytes(body[: len(_SPLITS)]) != _SPLITS or bytes(body[-2:]) != b"}}":
                raise ValueError("not a split batch as SplitBatch.dumps writes it")
            if len(pieces) > 1:
                pieces.append(b",")
            pieces.append(body[len(_SPLITS) : -2])
        if len(pieces) == 1:
            raise ValueError("no split batch to join")
        pieces.append(b"}}")
        return seal_pieces(pieces)

    def _pieces(self, large: list[tuple[int, str]]) -> Iterator[bytes]:
        """The batch's JSON with each ``large`` archive's artifacts left out (a marker stands in for
        them), and those artifacts encoded into the marker's place, a chunk at a time, in order."""
        mark = Artifact(secrets.token_hex(16))
        marked = {index for index, _ in large}
        hollow = {
            index: SplitRecord(
                {
                    name: Archive((mark,), archive.sharded) if len(archive.artifacts) > CHUNK else archive
                    for name, archive in split.archives.items()
                },
                split.caught,
            )
            if index in marked
            else split
            for index, split in self.splits.items()
        }
        skeleton = json.dumps(self._write(SplitBatch(hollow)), separators=_COMPACT).encode()
        parts = skeleton.split(json.dumps([Artifact._write(mark)], separators=_COMPACT).encode())
        assert len(parts) == len(large) + 1, "the marker stands where each large archive's artifacts go"
        write = Artifact._write
        yield parts[0][1:]
        for (index, name), after in zip(large, parts[1:], strict=True):
            artifacts = self.splits[index].archives[name].artifacts
            yield b"["
            for start in range(0, len(artifacts), CHUNK):
                chunk = json.dumps([write(a) for a in artifacts[start : start + CHUNK]], separators=_COMPACT)
                yield (b"," if start else b"") + chunk[1:-1].encode()
            yield b"]" + after


@record
@dataclass(frozen=True)
class AttemptRecord(Schema):
    """One attempt of one split: when it ran and, if it failed, its error (type, message, traceback).

    ``caught`` is the error ``Catch`` absorbed (the attempt then finished), in the same form. It is
    stored as a sixth item only when there is one, so records without it keep their shape.
    """

    stored_as_list: ClassVar[bool] = True

    index: int
    attempt: int
    started: float
    ended: float | None = None
    error: Error | None = None
    caught: Error | None = field(default=None, metadata=sparse(None))


@record
@dataclass(frozen=True)
class Ran(Schema):
    """A layer's final status, "finished", carried by its record instead of a status record of its
    own (see ``Record.ran``): what that status record would hold but for the members the layer
    record holds itself (flow, layer, splits) or its store knows (the execution). Read back as that
    status record by :meth:`status`."""

    started: float
    ended: float
    attempts: tuple[AttemptRecord, ...] = ()
    omitted: int = field(default=0, metadata=absent(0))
    next_attempt: int = field(default=0, metadata=absent(0))
    why: str | None = field(default=None, metadata=sparse(None))

    @classmethod
    def of(cls, status: LayerStatusRecord) -> Ran | None:
        """What a record carries of ``status``; None for a status a record cannot carry (not a
        finished layer that ran: a failed, skipped, cancelled or running one, or one reused)."""
        if (
            status.status != "finished"
            or status.ended is None
            or status.reason is not None
            or status.error is not None
            or status.reused is not None
        ):
            return None
        return cls(
            status.started, status.ended, status.attempts, status.omitted, status.next_attempt, status.why
        )

    def status(self, record: Record, execution: str) -> LayerStatusRecord:
        """The status record this stands for, of ``record``'s layer in ``execution``."""
        return LayerStatusRecord(
            record.flow,
            execution,
            record.layer,
            "finished",
            self.started,
            self.ended,
            splits=record.splits,
            attempts=self.attempts,
            omitted=self.omitted,
            next_attempt=self.next_attempt,
            why=self.why,
        )


@record
@dataclass(frozen=True)
class Reuse(Schema):
    """Where a layer reused whole came from: the ``execution`` it was reused from, when (``at``),
    and why, in a line; its status is read from it (see ``Record.reused``)."""

    stored_as_list: ClassVar[bool] = True

    execution: str
    at: float
    why: str

    def __post_init__(self) -> None:
        if not is_valid(self.execution):
            raise ValueError(f"reused names {self.execution!r}, not an execution id")


@record
@dataclass(frozen=True)
class Record(Document):
    """Written after a layer finishes: flow name, layer name, number of splits.

    It also maps each split batch holding the layer's splits to the runs of split indices in it, and
    lists the artifact names they stored, so reading a finished layer needs no listing and finds any
    split's batch directly.

    ``borrowed`` points at the splits a reused layer took from other executions of the flow, by
    execution: their records stay in that execution's batches (found through its record of the layer)
    and are read there, never copied, so reusing a layer of any size writes this record alone. Each
    named execution holds the splits in batches of its own (a pointer never leads to another
    pointer). A record without it (every record before reuse) holds all its splits itself.

    ``held`` is a batch of splits this record holds itself instead of in a file of its own (a layer
    of one split: one file a layer, not two); ``batches`` names it as any batch (``held_batch``).
    Such a record is written in ``HELD_LAYOUT``.

    ``key`` is the reuse key the layer was computed with, and ``base`` (a foreach) its key without
    its axes, written by runs with reuse on (a reused layer's record carries the key it was reused
    for): a layer is reused only from a record whose own key is the one wanted, so an index entry,
    trusted for nothing, cannot pass off values other code computed. A record without them (written
    before they existed, or without reuse) is never reused. Readers before them ignore them.

    ``reused`` says, for a layer reused whole, where from, when and why: such a layer writes no
    status record of its own in a fresh execution (one write a layer, not two), and its status
    ("finished", reused from ``reused.execution``) is read from this record, which is written
    before the layer reads as finished. Readers before it ignore it (the layer reads "finished").

    ``outputs`` is the layer's values summarised per artifact (``reuse.outputs``: what the key of a
    layer reading it takes), written with ``key``: a rerun keys the layers after a foreach from it
    without reading the foreach's split batches first. Trusted for nothing either: a layer is reused
    only once the splits read back match it (``reuse_index.usable``). A record without it (older, or
    a layer that stored nothing) has its batches read for it. Readers before it ignore it.

    ``ran`` is, likewise, the final status of a layer that ran and finished with no status record
    of its own written or found (its run ended within ``run_records.RUNNING_AFTER``, in a fresh
    execution or one whose earlier runs recorded no status of it): the record and the status are
    then one file, written at once. A status record beside it, should one be there, reads first.
    Readers before it ignore it (the layer reads "finished", with no attempts).
    """

    described: ClassVar[str] = "record of layer {layer}"

    flow: str
    layer: str
    splits: int
    batches: Mapping[str, Runs] = field(default_factory=dict, metadata=sorted_keys())
    artifacts: tuple[str, ...] = ()
    borrowed: Mapping[str, Borrowed] = field(default_factory=dict, metadata=sorted_keys(**sparse({})))
    held: Mapping[int, SplitRecord] = field(default_factory=dict, metadata=sorted_keys(**sparse({})))
    key: str | None = field(default=None, metadata=matching(_HEX, "a hex digest", **sparse(None)))
    base: str | None = field(default=None, metadata=matching(_HEX, "a hex digest", **sparse(None)))
    reused: Reuse | None = field(default=None, metadata=sparse(None))
    outputs: Mapping[str, str] = field(default_factory=dict, metadata=sorted_keys(**sparse({})))
    ran: Ran | None = field(default=None, metadata=sparse(None))

    def __post_init__(self) -> None:
        if self.borrowed:
            _check_borrowed(self.borrowed, self.splits)
        if self.ran is not None:
            beyond = [attempt.index for attempt in self.ran.attempts if attempt.index >= self.splits]
            if beyond:
                raise ValueError(
                    f"its status lists attempts of split {beyond[0]}, not one of its {self.splits}"
                )
        if self.held:
            name = self.held_batch
            if name is None or self.batches.get(name) != runs(self.held) or max(self.held) >= self.splits:
                raise ValueError(
                    f"held splits {sorted(self.held)} are not a batch it names of its {self.splits} splits"
                )

    @property
    def held_batch(self) -> str | None:
        """The name of the batch this record holds itself, or None."""
        return layout.split_batch_name(min(self.held), max(self.held)) if self.held else None

    @functools.cached_property
    def held_splits(self) -> SplitBatch:
        """The batch this record holds, as a batch read from a file of its own is (empty if none)."""
        return SplitBatch(dict(self.held))

    def dumps(self) -> bytes:
        payload = self._write(self)
        if self.held:
            payload["layout"] = HELD_LAYOUT
        return seal(payload)


def _check_borrowed(borrowed: Mapping[str, Borrowed], splits: int) -> None:
    """Raise ValueError unless every run names a valid execution and lies within the layer's
    splits, and no two runs overlap (a split is read from one place)."""
    spans = []
    for execution, found in borrowed.items():
        if not is_valid(execution):
            raise ValueError(f"borrowed names {execution!r}, not an execution id")
        for first, last, _ in found:
            if not first <= last < splits:
                raise ValueError(
                    f"borrowed run {first}-{last} of {execution} is outside splits 0-{splits - 1}"
                )
            spans.append((first, last))
    spans.sort()
    for (_, last), (first, _) in itertools.pairwise(spans):
        if first <= last:
            raise ValueError(f"borrowed runs overlap at split {first}")


@record
@dataclass(frozen=True)
class ExecutionMetadata(Document):
    """Written when an execution starts."""

    described: ClassVar[str] = "execution {id}"

    flow: str
    id: str
    created: float
    #: The flow's declared parameters (``laminar._model.parameters``: class, types, JSON Schema) as
    #: compact JSON; left out for a flow that declares none, as before it existed.
    parameters: str | None = field(default=None, metadata=sparse(None))
    #: Each layer of the flow's plan but ``Parameters``, in plan order, with the layers it depends on
    #: (the plan's edges), so a reader without the flow's code draws its DAG; left out by runs
    #: before it existed, whose DAG is drawn without edges.
    dependencies: Mapping[str, tuple[str, ...]] | None = field(default=None, metadata=sparse(None))
    #: Whether its layer records may be in record packs: written in ``PACKED_LAYOUT`` then (every
    #: execution started since record packs exist); left out, as before, by runs before them.
    packed: bool = field(default=False, metadata=sparse(False))

    def dumps(self) -> bytes:
        payload = self._write(self)
        if self.packed:
            payload["layout"] = PACKED_LAYOUT
        return seal(payload)


#: An execution's statuses, as stored. A "running" record whose scheduler's lease is no longer live
#: reads as failed (the results API decides that, from the lease).
STATUSES = ("running", "succeeded", "failed", "cancelled")


@record
@dataclass(frozen=True)
class RunRecord(Schema):
    """One run or resume of an execution: when it started and ended, and how it ended.

    ``ended`` is None and ``status`` "running" for the run under way (or one whose scheduler died).
    """

    stored_as_list: ClassVar[bool] = True

    started: float
    ended: float | None = None
    status: str = field(default="running", metadata=one_of(STATUSES))


@record
@dataclass(frozen=True)
class ExecutionStatus(Document):
    """How the latest run (or resume) of an execution went: written when it starts and when it ends.

    ``error`` holds the type, message and traceback text of what ended a failed run; ``created``
    when the execution's first run started, so a listing reads one record per execution. ``runs``
    lists every run before the latest (the run history); the latest is ``started``, ``ended`` and
    ``status`` themselves. A record written before the history existed has none: one run.
    """

    described: ClassVar[str] = "status of execution {id}"

    flow: str
    id: str
    status: str = field(metadata=one_of(STATUSES))
    started: float
    ended: float | None = field(default=None, metadata=absent(None))
    error: Error | None = field(default=None, metadata=absent(None))
    created: float | None = field(default=None, metadata=absent(None))
    runs: tuple[RunRecord, ...] = field(default=(), metadata=absent(()))

    @property
    def history(self) -> tuple[RunRecord, ...]:
        """Every run of the execution, the first first, this record's own run last."""
        return (*self.runs, RunRecord(self.started, self.ended, self.status))


#: A layer's statuses, as stored. "running" while its run is under way; a reader whose execution is
#: no longer running reads it as failed. A layer with no status record has not started (or finished
#: before records existed: its layer record says so).
LAYER_STATUSES = ("running", "finished", "failed", "skipped", "cancelled")


@record
@dataclass(frozen=True)
class LayerStatusRecord(Document):
    """How a layer's latest run went: written when it starts and when it ends (``status.json``).

    ``attempts`` lists every failed attempt and the others up to a limit (``omitted`` counts those
    left out), so a layer of a million splits keeps a record of bounded size. ``next_attempt`` is
    above every attempt number any run of the layer used or may have used, recorded or left out,
    so a resume numbers new attempts after them (see ``first_attempts``); a record written before
    it existed reads it from its attempts.
    """

    described: ClassVar[str] = "status of layer {layer}"

    flow: str
    id: str
    layer: str
    status: str = field(metadata=one_of(LAYER_STATUSES))
    started: float
    ended: float | None = field(default=None, metadata=absent(None))
    splits: int = 0
    reason: str | None = field(default=None, metadata=absent(None))
    error: Error | None = field(default=None, metadata=absent(None))
    attempts: tuple[AttemptRecord, ...] = ()
    omitted: int = field(default=0, metadata=absent(0))
    next_attempt: int = field(default=0, metadata=absent(0))
    #: The execution a reused layer was reused from (its record points at the splits it reads).
    reused: str | None = field(default=None, metadata=sparse(None))
    #: Why the layer ran, or where it was reused from, in a line (runs with reuse on).
    why: str | None = field(default=None, metadata=sparse(None))

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
