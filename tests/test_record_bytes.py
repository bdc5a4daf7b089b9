"""A record's stored bytes are ``json.dumps``' compact text of its members behind their checksum,
whichever encoder makes them (``records.compact``: orjson where its text is the same, else ``json``'s
encoder made once): reuse keys, dedup and the
checksums of records already stored depend on those bytes staying what they were. A run lease's
bytes too (``Holder.dumps``, made without ``asdict``)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
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


@pytest.mark.parametrize(
    "member",
    [
        "Schritt ä 層",  # orjson writes text past ASCII as UTF-8
        "delete \x7f",  # and DEL as itself
        1e-05,  # orjson: 0.00001
        9.99e-05,  # 0.0000999
        1.5e-07,  # 1.5e-7
        2**70,  # orjson refuses an integer past 64 bits
        {1: "a key not a string"},  # and such a key
        "ends in 0.00001 or 1e-5",  # text like orjson's floats: json's encoding, the same bytes
    ],
)
def test_what_orjson_writes_otherwise_or_refuses_is_written_as_json_writes_it(member: Any) -> None:
    payload = {"layout": 4, "member": member, "time": 1796617569.2757044}
    assert records.seal(dict(payload)) == sealed_as_before(dict(payload))


def test_a_record_of_plain_text_is_made_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes, not made by ``json``'s encoder (counted): orjson's text is used."""
    calls: list[object] = []
    encode = records._ENCODE
    monkeypatch.setattr(records, "_ENCODE", lambda payload: calls.append(payload) or encode(payload))
    plain = {"layout": 4, "times": [1796617569.2757044, 0.1, -0.0, 3.0], "counts": [0, 2**63 - 1, -3]}
    plain |= {"text": 'quote " backslash \\ newline \n tab \t', "nested": AWKWARD["nested"]}
    assert records.seal(dict(plain)) == sealed_as_before(dict(plain))
    assert calls == []
    assert records.seal(dict(AWKWARD)) == sealed_as_before(dict(AWKWARD))
    assert len(calls) == 1


def _one_split_layer(layer: str, ran: Ran) -> Record:
    """The record of a layer of one split, in one batch, that stored ``value`` and carries ``ran``."""
    return Record("Flow", layer, 1, {"0-0.json": ((0, 0),)}, ("value",), ran=ran)


def test_a_time_that_is_not_finite_is_written_as_json_writes_it_not_as_null() -> None:
    record = _one_split_layer("Step", Ran(math.nan, math.inf, (AttemptRecord(0, 0, -math.inf, 2.0),)))
    stored = record.dumps()
    assert stored == sealed_as_before(record._write(record))
    assert b'"started":NaN,"ended":Infinity' in stored
    ran = Record.loads(stored).ran
    assert ran is not None and math.isnan(ran.started) and ran.ended == math.inf
    assert ran.attempts[0].started == -math.inf


def test_a_layer_record_with_its_status_is_stored_as_before() -> None:
    record = _one_split_layer(
        "Schritt",
        Ran(
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
