"""What earlier Laminar releases stored, and how each is still read (or refused, with a message).

This repository has no release tags, so each earlier format is named by the commit that ended it:

- **Layout 1** (no ``layout`` member; a file per split and per archive), written before f652c15
  (2026-11-25): refused, with a message naming the layout (``records``).
- **Layout 2**: split batches until 17ba39a (2026-12-01), other records until a34d050 (2026-12-06),
  those written before 73e6cc7 (2026-12-01) without a ``sha256`` checksum. All read; one without a
  checksum has its shape checked (``records``).
- **Artifacts without a ``stored`` digest**, written before 73e6cc7: a compressed one is decompressed
  no further than its recorded size and checked against its content address before its protocol
  reads it; one whose protocol gives its own address is checked by its value (``checked_by_value``,
  in ``loading``).
- **Artifacts without a ``hash``**, written before 6647db0 (2026-12-01): addressed and checked by
  the chunked SHA-256 (``hashing.LEGACY_HASH``, what an absent ``hash`` reads as).
- **Run records without members added since**: attempts of five items (no ``caught``), execution
  statuses without ``runs`` and layer statuses without ``next_attempt``, written before 5fdda9e
  (2026-12-06); layer statuses without ``omitted``, before 5c6fc8c (2026-12-01). Each member reads as
  its field's ``schema.absent`` value says (``records``).
- **zlib artifacts and pickles with their buffers in band**, written before 5c6fc8c: read by
  ``codecs`` and ``protocols`` (tests/data/zlib-inband-store keeps such a store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from laminar._serialization.protocols import Protocol

if TYPE_CHECKING:
    from laminar._storage.records import Artifact

#: The layouts before today's that are still read: 2 (with and without checksums).
LAYOUTS = (2,)


def layout_of(payload: dict[str, Any]) -> Any:
    """The storage layout a record says it is in; 1 for a record of layout 1 (no version, and a
    ``flow`` member), None for something no Laminar wrote."""
    found = payload.get("layout")
    if found is None and "flow" in payload:
        return 1
    return found


def gives_own_address(protocol: Protocol[Any]) -> bool:
    """Whether ``protocol`` may give a content address of its own (not the hash of its bytes): what
    is written since records the hash of its bytes as ``stored``; what was written before cannot be
    checked by its bytes alone (``checked_by_value``)."""
    return type(protocol).hexdigest is not Protocol.hexdigest


def checked_by_value(artifact: Artifact, protocol: Protocol[Any]) -> bool:
    """An artifact written before stored digests by a protocol that may give its own address: its
    bytes can only be checked (as then) once decoded, and only if the protocol gave no address."""
    return artifact.stored is None and gives_own_address(protocol)
