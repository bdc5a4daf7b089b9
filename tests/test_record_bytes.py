"""A record's stored bytes are ``json.dumps``' compact text of its members behind their checksum,
whichever encoder makes them (``records.seal`` keeps one made once): reuse keys, dedup and the
checksums of records already stored depend on those bytes staying what they were. A run lease's
bytes too (``Holder.dumps``, made without ``asdict``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from laminar._storage import layout, records
from laminar._storage.lease import Holder, Lease
from laminar._storage.records import LAYOUT, AttemptRecord, Ran, Record
from laminar.configurations import datastores


def sealed_as_before(payload: dict[str, Any]) -> bytes:
    """What ``seal`` wrote before it kept an encoder: the checksum, then ``json.dumps``' text."""
    body = json.dumps(payload, separators=(",", ":")).encode()[1:]
    return b'{"sha256":"' + hashlib.sha256(body).hexdigest().encode() + b'",' + body


AWKWARD = {
    "layout": 4,
    "error": "Schritt ä 層 failed",  # an error's message may hold any text: escaped as \\u sequences
    "message": 'quote " backslash \\ newline \n tab \t bell \x07 delete \x7f',
    "durations": [2.3e-05, 1e16, 1.5e-07, 0.1, 1796617569.2757044, -0.0, 3.0],
    "counts": [0, 7, 2**70, -3],
    "flags": [True, False, None],
    "nested": {"9": {"b": [], "a": {}}, "10": [[0, 0]]},
}


def test_seal_writes_the_bytes_json_dumps_wrote() -> None:
    assert records.seal(dict(AWKWARD)) == sealed_as_before(dict(AWKWARD))
    assert b"\\u00e4" in records.seal(dict(AWKWARD))  # escaped, not UTF-8


def test_a_layer_record_with_its_status_is_stored_as_before() -> None:
    record = Record(
        "Flow",
        "Schritt",
        1,
        {"0-0.json": ((0, 0),)},
        ("value",),
        ran=Ran(
            1796617569.2757044,
            1796617569.2759287,
            (AttemptRecord(0, 0, 1796617569.27575, 1796617569.2758768, {"type": "Fehler", "message": "ü"}),),
        ),
    )
    payload = record._write(record)
    assert record.dumps() == sealed_as_before(payload)
    assert Record.loads(record.dumps()) == record


def test_a_lease_is_stored_as_before_and_its_release_keeps_what_it_holds(tmp_path: Path) -> None:
    store = datastores.Local(tmp_path)
    lease = Lease(store, "Flow", "e", ttl=30.0)
    taken = lease.acquire()
    key = layout.lease("Flow", "e", taken.generation)
    stored = store.read_bytes(key)
    assert stored == json.dumps({"layout": LAYOUT, **asdict(taken)}, separators=(",", ":")).encode()
    lease.release()
    released = Holder.loads(store.read_bytes(key))
    assert released.released and released.heartbeat >= taken.heartbeat
    assert asdict(released) == {**asdict(taken), "heartbeat": released.heartbeat, "released": True}
    assert (
        store.read_bytes(key)
        == json.dumps({"layout": LAYOUT, **asdict(released)}, separators=(",", ":")).encode()
    )
