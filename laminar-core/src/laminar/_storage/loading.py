"""Loading values back from content-addressed artifacts, and checking their stored bytes.

Reading checks the stored bytes before anything decodes them: against ``Artifact.stored`` when the
stored bytes differ from the serialized ones (compressed), else against the content address itself.
Only bytes that verified are decompressed, and only then handed to the protocol. A datastore opened
untrusted refuses, before reading a byte, every artifact whose protocol is not marked safe. How
artifacts earlier releases wrote are checked is in ``earlier``.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, BinaryIO

from laminar._serialization import codecs, hashing, threads
from laminar._serialization.codecs import DecodeError, DecodingReader
from laminar._serialization.protocols import Pickle, Protocol, read_from_path, takes_uri
from laminar._serialization.registry import Protocols
from laminar._storage import layout
from laminar._storage.earlier import checked_by_value, gives_own_address
from laminar._storage.records import Artifact, describe
from laminar._storage.staging import IN_MEMORY_LIMIT, URI_REFERENCE
from laminar._transport.datastore import Datastore
from laminar._transport.staging_files import new_file
from laminar.errors import IntegrityError, UnknownProtocol, UntrustedArtifact


def load(
    datastore: Datastore,
    artifact: Artifact,
    *,
    protocols: Protocols,
    verify: bool = True,
) -> Any:
    """Read one artifact back into a value, checking its stored bytes first unless ``verify`` is false.

    Raises ``IntegrityError`` for damaged or missing bytes, ``UntrustedArtifact`` when ``datastore``
    is untrusted and the protocol is not safe, ``UnknownProtocol`` for a protocol nothing registered.
    """
    protocol = _protocol(datastore, artifact, protocols)
    try:
        return _load(datastore, artifact, protocol, verify)
    except _StoredMismatch as mismatch:
        other = _other_encoding(datastore, artifact, protocol, mismatch.actual)
        if other is None:
            raise mismatch.error from None
        try:
            return _load(datastore, other, protocol, verify)
        except (IntegrityError, _StoredMismatch):  # not that either (or replaced since)
            raise mismatch.error from None


#: A datastore that reads one key at a time (``max_workers`` 1: a local disk) still reads values
#: this large several at once when two or more are asked for together: reading one is mostly copying,
#: hashing and first touches of fresh memory, which other cores can do beside it (``threads.in_runs``).
#: (Figures: docs/performance.md.)
READ_AT_ONCE = 1 << 20


def load_many(datastore: Datastore, artifacts: Sequence[Artifact], *, protocols: Protocols) -> list[Any]:
    """``[load(datastore, a, protocols=protocols) for a in artifacts]``, several at once where that
    pays: the datastore's own parallel map, or runs one a core for large values on a datastore that
    reads one key at a time (``READ_AT_ONCE``). The first failure in order is raised."""

    def one(position: int) -> Any:
        return load(datastore, artifacts[position], protocols=protocols)

    positions = range(len(artifacts))
    large = sum(1 for artifact in artifacts if artifact.size >= READ_AT_ONCE and artifact.inline is None)
    if datastore.max_workers > 1 or large < 2 or threads.cores() < 2:
        return datastore.map_parallel(one, positions)
    values, error = threads.in_runs(positions, one)
    if error is not None:
        raise error
    return values


def _other_encoding(
    datastore: Datastore, artifact: Artifact, protocol: Protocol[Any], actual: str
) -> Artifact | None:
    """How else the bytes under ``artifact``'s address may hold its value, if they may.

    A value already stored is not written again, so its address holds what the first execution to
    store it wrote, and a later one that decided otherwise (another ``worth_compressing``) records
    its own choice, or compressed the same value to other bytes (another zstandard, another frame
    layout). ``actual`` is what the stored bytes hash to. If that is the address, they are the
    serialized value itself, checked already. Other bytes that begin as zstd are tried only in a
    trusted datastore: decompressed no further than the recorded size and checked by the address
    before the protocol sees them, as records written before stored digests are. An untrusted
    datastore decompresses nothing a record does not name.
    """
    if artifact.inline is not None or gives_own_address(protocol):
        return None  # bytes in the record itself, or an address the bytes alone cannot confirm
    if actual == artifact.hexdigest:
        return replace(artifact, codec="none", stored=None)
    if takes_uri(protocol) or not datastore.trusted:
        return None
    with _open(datastore, layout.artifact(artifact.hexdigest), artifact) as stored:
        if not codecs.starts_zstd(stored.read(4)):
            return None
    return replace(artifact, codec="zstd", stored=None)


def _load(datastore: Datastore, artifact: Artifact, protocol: Protocol[Any], verify: bool) -> Any:
    if type(protocol) is not Pickle and takes_uri(protocol):
        return _load_through_path(datastore, artifact, protocol, verify)
    if artifact.inline is not None:
        return _decode(artifact.inline, datastore, None, artifact, protocol, verify)
    key = layout.artifact(artifact.hexdigest)
    if artifact.size > IN_MEMORY_LIMIT:
        return _load_streamed(datastore, key, artifact, protocol, verify)
    if _gathers(datastore, artifact, protocol, verify):
        expected = artifact.stored_hexdigest if verify else None
        gathered, value = _load_gathered(datastore, key, artifact, protocol, expected)
        if gathered:
            return value
    try:
        data = datastore.read_bytes(key)
    except FileNotFoundError:
        raise _corrupt(datastore, key, artifact, "its stored bytes are missing") from None
    return _decode(data, datastore, key, artifact, protocol, verify)


#: Uncompressed values past this many bytes whose protocol gathers (:meth:`Protocol.gather`) are read
#: from a local store straight into the buffers that become the value's own memory, not whole into
#: memory and copied out.
GATHER_FROM = 1 << 20


def _gathers(datastore: Datastore, artifact: Artifact, protocol: Protocol[Any], verify: bool) -> bool:
    """Whether a value of at most ``IN_MEMORY_LIMIT`` bytes is worth offering to ``Protocol.gather``:
    only where opening it to look at its first bytes costs little (``cheap_exists``: a local disk), as
    a value the protocol declines (a plain pickle) is then read whole, as before."""
    return (
        datastore.cheap_exists
        and artifact.size > GATHER_FROM
        and artifact.codec == "none"
        and type(protocol).gather is not Protocol.gather
        and not (verify and checked_by_value(artifact, protocol))
    )


def content_hexdigest(datastore: Datastore, artifact: Artifact, algorithm: str) -> str:
    """The ``algorithm`` digest of ``artifact``'s serialized bytes: its address if that is how it is
    addressed, else its bytes read (decompressed as they stream) and hashed. How artifacts addressed
    by different hashes are compared (``laminar diff`` of executions either side of BLAKE3).

    The bytes are not checked against the artifact's own address: a damaged one just differs.
    """
    if artifact.hash == algorithm:
        return artifact.hexdigest
    if artifact.inline is not None:
        data = artifact.inline
        if artifact.codec != "none":
            data = codecs.decode(data, artifact.codec, artifact.size)
        return hashing.hexdigest(data, algorithm)
    key = layout.artifact(artifact.hexdigest)
    with DecodingReader(
        _open(datastore, key, artifact), artifact.codec, artifact.size, hash=algorithm
    ) as raw:
        while raw.read(hashing.CHUNK):
            pass
        assert raw.hash is not None
        return raw.hash.hexdigest()


def check(datastore: Datastore, artifact: Artifact, protocols: Protocols) -> int | None:
    """Check ``artifact``'s stored bytes against its address, as ``load`` would, deserializing nothing.

    The bytes are streamed (a few chunks in memory, whatever the value's size); returns how many
    were read. Raises ``FileNotFoundError`` if they are missing, ``IntegrityError`` naming the
    artifact if they are damaged. Bytes ``load`` accepts (another encoding of the same value, see
    ``_other_encoding``) pass. An artifact written before stored digests by a protocol that gives
    its own address can only be checked by reading its value: it is not read here (None).
    """
    try:
        protocol: Protocol[Any] | None = protocols.by_name(artifact.protocol)
    except LookupError:  # nothing here reads it, but its bytes can be checked all the same
        protocol = None
    if protocol is not None and checked_by_value(artifact, protocol):
        return None
    expected = artifact.stored_hexdigest
    key = None if artifact.inline is not None else layout.artifact(artifact.hexdigest)

    def opened() -> BinaryIO:
        if artifact.inline is not None:
            return io.BytesIO(artifact.inline)
        assert key is not None
        return datastore.open_read(key)  # FileNotFoundError passes through

    def decoded_digest(codec: str) -> str:
        raw = DecodingReader(opened(), codec, artifact.size, hash=artifact.hash)
        try:
            with raw:
                while raw.read(hashing.CHUNK):
                    pass
        except DecodeError as error:
            raise _corrupt(datastore, key, artifact, str(error)) from None
        assert raw.hash is not None
        return raw.hash.hexdigest()

    if expected is None:  # compressed, written before stored digests: check what it decodes to
        _check(datastore, key, artifact, decoded_digest(artifact.codec), artifact.hexdigest)
        return artifact.size
    with opened() as source:
        actual, size = hashing.hash_stream(source, algorithm=artifact.hash)
    if actual == expected:
        return size
    error = _corrupt(datastore, key, artifact, f"its bytes hash to {actual}, not the {expected} recorded")
    other = _other_encoding(datastore, artifact, protocol, actual) if protocol is not None else None
    if other is None:
        raise error
    if other.codec != "none":  # a zstd stream other than the recorded one: its value must match
        try:
            found = decoded_digest(other.codec)
        except IntegrityError:
            raise error from None
        if found != artifact.hexdigest:
            raise error
    return size


def _protocol(datastore: Datastore, artifact: Artifact, protocols: Protocols) -> Protocol[Any]:
    """The protocol that reads ``artifact``, if this datastore may use it."""
    try:
        protocol = protocols.by_name(artifact.protocol)
    except LookupError as error:
        raise UnknownProtocol(f"cannot read {_name(datastore, artifact)}: {error}") from None
    if not protocol.safe and not datastore.trusted:
        raise UntrustedArtifact(
            f"refusing to read {_name(datastore, artifact)}: it is stored with protocol "
            f"{artifact.protocol!r}, which is not marked safe and can run code when read (a pickle), and "
            f"datastore {datastore.url} is opened untrusted ({datastore.trust_source}); read it from a "
            "store you trust, or store such values with safe protocols (datastore.use_safe_protocols())"
        )
    return protocol


def _decode(
    data: bytes,
    datastore: Datastore,
    key: str | None,
    artifact: Artifact,
    protocol: Protocol[Any],
    verify: bool,
) -> Any:
    """Most artifacts are small: bytes in hand, one hash, no stream wrappers. ``key`` None: inline."""
    legacy = verify and checked_by_value(artifact, protocol)
    expected = artifact.stored_hexdigest
    if verify and not legacy and expected is not None:
        _check_stored(datastore, key, artifact, hashing.hexdigest(data, artifact.hash), expected)
    if artifact.codec != "none":
        try:
            data = codecs.decode(data, artifact.codec, artifact.size)
        except (DecodeError, ValueError) as error:
            raise _corrupt(datastore, key, artifact, str(error)) from None
        if verify and not legacy and expected is None:  # written before stored digests: check decoded
            _check(datastore, key, artifact, hashing.hexdigest(data, artifact.hash), artifact.hexdigest)
    if type(protocol) is Pickle:  # bytes in hand: no stream to wrap them in (``Pickle.read`` would)
        value = protocol.loads(data)
    else:
        value = _read(protocol, io.BytesIO(data), datastore, key, artifact)
    if legacy and protocol.hexdigest(value) is None:
        _check(datastore, key, artifact, hashing.hexdigest(data, artifact.hash), artifact.hexdigest)
    return value


def _read(
    protocol: Protocol[Any], stream: BinaryIO, datastore: Datastore, key: str | None, artifact: Artifact
) -> Any:
    """``protocol.read(stream)``; a safe protocol that cannot parse verified bytes names the artifact."""
    if not protocol.safe:
        return protocol.read(stream)
    try:
        return protocol.read(stream)
    except DecodeError as error:
        raise _corrupt(datastore, key, artifact, str(error)) from None
    except Exception as error:
        raise _corrupt(
            datastore,
            key,
            artifact,
            f"protocol {protocol.name} cannot read it ({type(error).__name__}: {error})",
        ) from None


def _open(datastore: Datastore, key: str, artifact: Artifact) -> BinaryIO:
    try:
        return datastore.open_read(key)
    except FileNotFoundError:
        raise _corrupt(datastore, key, artifact, "its stored bytes are missing") from None


def _is_local_file(stream: BinaryIO) -> bool:
    return isinstance(stream, io.BufferedReader) and isinstance(stream.raw, io.FileIO) and stream.seekable()


def _load_streamed(
    datastore: Datastore, key: str, artifact: Artifact, protocol: Protocol[Any], verify: bool
) -> Any:
    """A large value: its stored bytes verified as they arrive, before the protocol sees any of them.

    A local file is hashed, then read again from its start (the page cache serves the second pass);
    any other stream is copied to a staging file as it is hashed, and the verified copy is read.
    Either way memory holds a few chunks besides the value, and the value is filled in place.
    """
    legacy = verify and checked_by_value(artifact, protocol)
    expected = artifact.stored_hexdigest
    if artifact.codec == "none" and not legacy and type(protocol).gather is not Protocol.gather:
        gathered, value = _load_gathered(datastore, key, artifact, protocol, expected if verify else None)
        if gathered:
            return value
    source = _open(datastore, key, artifact)
    copy: str | None = None
    try:
        if verify and not legacy:
            if expected is None:  # compressed, written before stored digests: check the decoded copy
                source, copy = _decoded_copy(datastore, key, artifact, source)
            elif _is_local_file(source):
                actual, _ = hashing.hash_stream(source, algorithm=artifact.hash)
                _check_stored(datastore, key, artifact, actual, expected)
                source.seek(0)
            else:
                source, copy = _verified_copy(datastore, key, artifact, source, expected)
        codec = "none" if copy is not None and expected is None else artifact.codec
        raw = DecodingReader(source, codec, artifact.size, hash=artifact.hash if legacy else None)
        stream = io.BufferedReader(raw, buffer_size=1 << 16)
        try:
            try:
                value = _read(protocol, stream, datastore, key, artifact)
            except DecodeError as error:
                raise _corrupt(datastore, key, artifact, str(error)) from None
            if legacy and protocol.hexdigest(value) is None:
                while stream.read(1 << 16):  # account for any bytes the protocol did not read
                    pass
                assert raw.hash is not None
                _check(datastore, key, artifact, raw.hash.hexdigest(), artifact.hexdigest)
        finally:
            stream.close()
    finally:
        source.close()
        if copy is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(copy)
    return value


def _load_gathered(
    datastore: Datastore, key: str, artifact: Artifact, protocol: Protocol[Any], expected: str | None
) -> tuple[bool, Any]:
    """Read uncompressed stored bytes once: into the protocol's own fresh buffers (``Protocol.gather``),
    hashed on other threads as they arrive, and built into a value only once they verified against
    ``expected`` (``None``: not checked). ``(False, None)`` if the protocol declines these bytes."""
    checking = artifact.hash if expected is not None else None
    raw = DecodingReader(_open(datastore, key, artifact), "none", artifact.size, hash=checking)
    stream = io.BufferedReader(raw, buffer_size=1 << 16)
    failure: str | None = None
    try:
        try:
            build = protocol.gather(stream, artifact.size)
        except ValueError as error:  # not the layout the protocol writes: damaged, or another's bytes
            build, failure = None, str(error)
        if build is None and failure is None:
            return False, None
        if expected is not None:
            while stream.read(1 << 20):  # bytes the protocol did not read count too
                pass
            assert raw.hash is not None
            _check_stored(datastore, key, artifact, raw.hash.hexdigest(), expected)
        if failure is not None:
            raise _corrupt(datastore, key, artifact, f"protocol {protocol.name} cannot read it ({failure})")
    finally:
        stream.close()
    assert build is not None
    if not protocol.safe:
        return True, build()
    try:
        return True, build()
    except Exception as error:  # a safe protocol that cannot parse verified bytes names the artifact
        reason = f"protocol {protocol.name} cannot read it ({type(error).__name__}: {error})"
        raise _corrupt(datastore, key, artifact, reason) from None


def _staging_file(datastore: Datastore) -> tuple[str, BinaryIO]:
    fd, path = new_file(datastore.staging_directory(), ".reading")
    return path, os.fdopen(fd, "w+b")


def _verified_copy(
    datastore: Datastore, key: str | None, artifact: Artifact, source: BinaryIO, expected: str | None
) -> tuple[BinaryIO, str]:
    """Copy ``source`` to a staging file while hashing it; the copy, from its start, once it verified
    against ``expected`` (``None``: nothing to check it against)."""
    path, file = _staging_file(datastore)
    try:
        with source:
            actual, _ = hashing.hash_stream(source, file, artifact.hash)
        if expected is not None:
            _check_stored(datastore, key, artifact, actual, expected)
        file.seek(0)
    except BaseException:
        file.close()
        os.remove(path)
        raise
    return file, path


def _decoded_copy(
    datastore: Datastore, key: str, artifact: Artifact, source: BinaryIO
) -> tuple[BinaryIO, str]:
    """Decompress (at most ``size`` bytes) into a staging file and check the content address there."""
    path, file = _staging_file(datastore)
    try:
        raw = DecodingReader(source, artifact.codec, artifact.size, hash=artifact.hash)
        try:
            with raw:
                while chunk := raw.read(hashing.CHUNK):
                    file.write(chunk)
        except DecodeError as error:
            raise _corrupt(datastore, key, artifact, str(error)) from None
        assert raw.hash is not None
        _check(datastore, key, artifact, raw.hash.hexdigest(), artifact.hexdigest)
        file.seek(0)
    except BaseException:
        file.close()
        os.remove(path)
        raise
    return file, path


def _load_through_path(
    datastore: Datastore, artifact: Artifact, protocol: Protocol[Any], verify: bool
) -> Any:
    """Hand a URI-taking protocol a local file holding the stored bytes, checked against their hash;
    or, for a value the protocol kept elsewhere, the uri it wrote it under (``URI_REFERENCE``)."""
    inline = artifact.inline
    key = None if inline is not None else layout.artifact(artifact.hexdigest)
    source: BinaryIO = io.BytesIO(inline) if inline is not None else _open(datastore, key or "", artifact)
    checked = verify and not checked_by_value(artifact, protocol)
    file, path = _verified_copy(
        datastore, key, artifact, source, artifact.stored_hexdigest if checked else None
    )
    try:
        with file:
            head = file.read(len(URI_REFERENCE))
            uri = file.read().decode() if head == URI_REFERENCE else None
        return read_from_path(protocol, uri if uri is not None else path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _name(datastore: Datastore, artifact: Artifact) -> str:
    """The artifact for messages: what it is, its content address, and where its bytes are."""
    return f"{describe(artifact.origin)} ({artifact.hash} {artifact.hexdigest}, at {_url(datastore, None, artifact)})"


def _url(datastore: Datastore, key: str | None, artifact: Artifact) -> str:
    if artifact.inline is None:
        return f"{datastore.url}/{key or layout.artifact(artifact.hexdigest)}"
    if artifact.origin is not None:
        return f"{datastore.url}/{artifact.origin[0].batch} (kept inline)"
    return f"a split batch in {datastore.url} (kept inline)"


def _corrupt(datastore: Datastore, key: str | None, artifact: Artifact, reason: str) -> IntegrityError:
    url = _url(datastore, key, artifact)
    error = IntegrityError(
        f"{describe(artifact.origin)} ({artifact.hash} {artifact.hexdigest}) at {url} is corrupt: {reason}; "
        "no value was deserialized from it"
    )
    error.url = url
    return error


def _check(datastore: Datastore, key: str | None, artifact: Artifact, actual: str, expected: str) -> None:
    if actual != expected:
        raise _corrupt(datastore, key, artifact, f"its bytes hash to {actual}, not the {expected} recorded")


class _StoredMismatch(Exception):
    """The stored bytes are not those the record names: ``load`` tries another encoding of them
    (``_other_encoding``), else raises ``error``. ``actual``: what the bytes hash to."""

    def __init__(self, error: IntegrityError, actual: str) -> None:
        super().__init__(str(error))
        self.error, self.actual = error, actual


def _check_stored(
    datastore: Datastore, key: str | None, artifact: Artifact, actual: str, expected: str
) -> None:
    """Check the stored bytes (before decompressing them) against what the record says they are."""
    if actual != expected:
        error = _corrupt(datastore, key, artifact, f"its bytes hash to {actual}, not the {expected} recorded")
        raise _StoredMismatch(error, actual)
