"""``fsspec+<protocol>://...`` and bare ``<protocol>://...``: any fsspec filesystem as a Laminar datastore.

:class:`FSSpec` stores every key as a file below a root path of one `fsspec
<https://filesystem-spec.readthedocs.io/>`_ filesystem: ``sftp://user@host:2222/srv/laminar``,
``fsspec+memory://scratch``, ``fsspec+file:///mnt/share/laminar``, ``ftp://...``, ``webdav://...``.

Two URL forms reach it:

- ``fsspec+<protocol>://...`` for every protocol fsspec knows, always;
- a bare ``<protocol>://...`` for the protocols no other Laminar distribution serves (:data:`CLAIMED`
  lists those that are: ``file``/``memory`` are core's, ``s3``, ``gs``/``gcs`` and ``az``/``abfs`` belong
  to laminar-s3, laminar-gcs and laminar-azure, installed or not).

The rest of the URL is fsspec's own: ``sftp://user:password@host:port/path`` means what it means to
``fsspec.open``. A query string carries more storage options (``?key_filename=/k&timeout=5``; ``true``,
``false`` and numbers are converted), and so do ``storage_options=`` and keyword arguments; later ones
win. Passwords and other secrets never appear in :attr:`FSSpec.url`, ``repr`` or an error message.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlencode

from laminar.configurations.datastores import Local, Memory
from laminar.errors import ConfigurationError, DatastoreError, LaminarError
from laminar.plugins import (
    Datastore,
    buffered_reader,
    caused_by,
    is_secret_name,
    masked,
    redact,
    with_retries,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

T = TypeVar("T")

#: The scheme prefix that reaches any fsspec protocol: ``fsspec+sftp://``, ``fsspec+memory://``.
PREFIX = "fsspec+"

#: Bare schemes other Laminar distributions serve, whether installed or not (core: ``file``, ``memory``;
#: laminar-s3, laminar-gcs, laminar-azure). A bare URL with one of these never reaches fsspec; write
#: ``fsspec+s3://...`` for fsspec's own implementation. Any other installed plugin that claims a
#: scheme also wins over this one: its hook implementation is called first (see ``plugin.py``).
CLAIMED = frozenset({"file", "memory", "s3", "gs", "gcs", "az", "azure", "abfs", "abfss"})

#: Protocols of object stores: one ``PUT`` replaces an object atomically, a "rename" is a copy and a
#: delete, and there are no directories to tidy.
OBJECT_STORES = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci", "ocilake", "tos", "tosfs"}
)

#: Exception class names that mean "try again" (the connection dropped or timed out): Python's, paramiko's,
#: aiohttp's (the async filesystems). Not paramiko's base ``SSHException``: it also says "No
#: authentication methods available"; a session it reports dropped is caught as :class:`ConnectionLost`,
#: and a banner that timed out is caused by a ``TimeoutError`` or ``EOFError``.
TRANSIENT_NAMES = frozenset(
    {
        "ConnectionResetError",
        "ConnectionAbortedError",
        "ConnectionRefusedError",
        "BrokenPipeError",
        "TimeoutError",
        "EOFError",
        "ChannelException",
        "NoValidConnectionsError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ConnectionLost",
    }
)

_PROTOCOL = re.compile(r"^[a-z][a-z0-9_.+-]*$")
_SFTP_READ = 32768  # paramiko's request size: one request answers a small key
_SFTP_WINDOW = 32  # requests in flight while streaming (1 MiB)
_COPY = 2**20

Commit = Literal["rename", "direct"]


# ---- the filesystem kinds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How Laminar drives one kind of filesystem."""

    #: ``"rename"``: write a temporary file below ``ROOT/.staging``, then rename it into place;
    #: ``"direct"``: write the key in one call (object stores, the in-memory filesystem).
    commit: Commit
    #: The filesystem keeps directories, so deleting a key removes the directories it leaves empty.
    directories: bool
    #: One filesystem object may serve every thread; otherwise each concurrent call gets its own
    #: (paramiko's SFTP client deadlocks when threads share it): a small pool, grown on demand.
    thread_safe: bool
    #: Threads of the batch calls (``read_many``, ...).
    max_workers: int
    #: Storage options used unless given (bounded connects for SFTP).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: paramiko's SFTP: pipelined writes, prefetched reads.
    sftp: bool = False
    #: Lives in this process only (fsspec's memory filesystem): see :class:`FSSpecInProcess`.
    in_process: bool = False
    #: How much a sample must shrink for zstd to pay (``Datastore.worth_compressing``), where it is
    #: not the network's default: a local disk and memory decide as ``Local`` and ``Memory`` do.
    worth_compressing: float | None = None


def kind_of(protocol: str, cls: type[AbstractFileSystem]) -> Kind:
    """The :class:`Kind` of fsspec's ``protocol`` served by ``cls``."""
    from fsspec.asyn import AsyncFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    names = cls.protocol if isinstance(cls.protocol, tuple) else (cls.protocol,)
    if issubclass(cls, MemoryFileSystem):
        return Kind(
            "direct",
            directories=False,
            thread_safe=True,
            max_workers=1,
            in_process=True,
            worth_compressing=Memory.worth_compressing,
        )
    if protocol in OBJECT_STORES:
        return Kind("direct", directories=False, thread_safe=True, max_workers=16)
    if issubclass(cls, LocalFileSystem):
        return Kind(
            "rename",
            directories=True,
            thread_safe=True,
            max_workers=1,
            worth_compressing=Local.worth_compressing,
        )
    if "sftp" in names:
        return Kind("rename", True, thread_safe=False, max_workers=4, defaults={"timeout": 10.0}, sftp=True)
    return Kind("rename", directories=True, thread_safe=issubclass(cls, AsyncFileSystem), max_workers=4)


def protocols() -> set[str]:
    """Every protocol fsspec knows now: its table of implementations, and those registered at run time."""
    import fsspec
    from fsspec.registry import registry

    return set(fsspec.available_protocols()) | set(registry)


def served_schemes() -> tuple[str, ...]:
    """``fsspec+<p>`` for every protocol fsspec knows, and bare ``<p>`` for those not in :data:`CLAIMED`."""
    known = sorted(protocols())
    return tuple(f"{PREFIX}{p}" for p in known) + tuple(p for p in known if p not in CLAIMED)


def refresh_schemes() -> None:
    """Let :class:`FSSpec` serve protocols registered with fsspec since it was imported."""
    FSSpec.schemes = served_schemes()


# ---- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """What a URL names: the protocol, the root path on its filesystem, and options."""

    protocol: str
    #: The root path as the filesystem writes it, without a trailing ``/`` (``""``: its top).
    root: str
    #: The URL without secrets: what :attr:`FSSpec.url` returns.
    url: str
    #: The URL without its query, for messages naming a key.
    base: str
    #: Storage options the URL gives (host, port, username, password, query options).
    options: dict[str, Any]


def filesystem_class(protocol: str, url: str) -> type[AbstractFileSystem]:
    """fsspec's implementation of ``protocol``; a ConfigurationError naming ``url`` if there is none."""
    import fsspec

    known = protocols()
    if protocol not in known:
        close = difflib.get_close_matches(protocol, sorted(known), n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigurationError(
            f"unknown fsspec protocol {protocol!r} in {redact(url)!r}; {hint}fsspec knows "
            f"{len(known)} protocols (fsspec.available_protocols() lists them); write fsspec+PROTOCOL://path"
        )
    try:
        return cast("type[AbstractFileSystem]", fsspec.get_filesystem_class(protocol))
    except ImportError as error:
        raise ConfigurationError(
            f"the fsspec protocol {protocol!r} of {redact(url)!r} needs a package that is not installed: {error}"
        ) from None


def parse(url: str) -> tuple[Location, type[AbstractFileSystem]]:
    """Check ``url`` and split it into a :class:`Location`; no I/O. Errors never show a password."""
    if not isinstance(url, str):
        raise ConfigurationError(f"an fsspec datastore URL is a string, not {type(url).__name__}")
    scheme, separator, rest = url.partition("://")
    example = "write fsspec+PROTOCOL://path, e.g. fsspec+memory://scratch or sftp://user@host/srv/laminar"
    if not separator:
        raise ConfigurationError(f"{redact(url)!r} is not a URL; {example}")
    scheme = scheme.lower()
    protocol = scheme.removeprefix(PREFIX)
    if not _PROTOCOL.match(protocol):
        raise ConfigurationError(f"{redact(url)!r} names no fsspec protocol; {example}")
    cls = filesystem_class(protocol, url)
    if "#" in rest:
        raise ConfigurationError(f"the URL {redact(url)!r} has a fragment ('#...'); {example}")
    rest, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise ConfigurationError(
            f"the query of {redact(url)!r} is not name=value pairs joined by '&'"
        ) from None
    for name, value in pairs:
        if not name:
            raise ConfigurationError(f"the query of {redact(url)!r} has a value without a name")
        if name in options:
            raise ConfigurationError(f"the option {name!r} is given twice in {redact(url)!r}")
        options[name] = _option_value(value)
    if any(part in (".", "..") for part in rest.split("/")):
        raise ConfigurationError(f"the path of {redact(url)!r} has a '.' or '..' part")
    inner = f"{protocol}://{rest}"
    try:  # fsspec's own reading of the URL: host, port, user, password (SFTP, FTP, SMB, ...)
        from_netloc = dict(cls._get_kwargs_from_urls(inner))
        needs_host = "host" in cls._get_kwargs_from_urls(f"{protocol}://host/path")
        root = str(cls._strip_protocol(inner)).rstrip("/")
    except Exception as error:  # a port that is not a number, ...
        raise ConfigurationError(f"cannot read {redact(url)!r}: {redact(str(error))}") from None
    for name in ("username", "password"):
        if isinstance(from_netloc.get(name), str):
            from_netloc[name] = unquote(from_netloc[name])
    if needs_host and not from_netloc.get("host"):
        raise ConfigurationError(
            f"the URL {redact(url)!r} names no host; write {protocol}://[user@]host[:port]/path"
        )
    shown = PREFIX + protocol if scheme.startswith(PREFIX) or protocol in CLAIMED else protocol
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{host}"
    base = f"{shown}://{netloc}{slash}{path}"
    public = urlencode([(name, value) for name, value in pairs if not is_secret_name(name)], safe="/:,")
    return (
        Location(
            protocol,
            root,
            f"{base}?{public}" if public else base,
            base.rstrip("/"),
            {**from_netloc, **options},
        ),
        cls,
    )


def _option_value(text: str) -> Any:
    """A query value as a storage option: ``true``/``false``, an int, a float, else the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+)", text):
        return float(text)
    return text


def _secrets(options: Mapping[str, Any]) -> list[str]:
    """The values of the secret options (``password``, ``key``...): masked wherever they would be shown."""
    return [
        value for name, value in options.items() if is_secret_name(name) and isinstance(value, str) and value
    ]


# ---- filesystem objects ----------------------------------------------------------------------------


class ConnectionLost(ConnectionError):
    """A call failed because the filesystem's connection is gone (tried again on a new connection)."""


class Clients:
    """The filesystem objects of one datastore: one for every thread, or one per concurrent call.

    Created on first use; with ``thread_safe=False`` a call takes an idle one whose connection is still
    up, or creates another, and gives it back afterwards (or drops it when its connection broke).
    """

    def __init__(
        self,
        create: Callable[[], AbstractFileSystem],
        thread_safe: bool,
        alive: Callable[[AbstractFileSystem], bool] = lambda fs: True,
    ) -> None:
        self._create = create
        self._thread_safe = thread_safe
        self._alive = alive
        self._lock = threading.Lock()
        self._idle: list[AbstractFileSystem] = []
        self._all: list[AbstractFileSystem] = []

    def acquire(self) -> AbstractFileSystem:
        if self._thread_safe:
            with self._lock:
                if not self._all:
                    self._all.append(self._create())
                return self._all[0]
        while True:
            with self._lock:
                if not self._idle:
                    break
                fs = self._idle.pop()
            if self._alive(fs):
                return fs
            self.release(fs, broken=True)  # the server closed it while it was idle
        fs = self._create()  # outside the lock: a connection takes a while, and others may be idle
        with self._lock:
            self._all.append(fs)
        return fs

    def release(self, fs: AbstractFileSystem, *, broken: bool = False) -> None:
        with self._lock:
            known = any(item is fs for item in self._all)
            if broken and known:
                self._all = [item for item in self._all if item is not fs]
            elif known and not self._thread_safe:
                self._idle.append(fs)
        if broken or not known:  # a broken connection, or one given back after close()
            _close_filesystem(fs)

    def close(self) -> None:
        with self._lock:
            every, self._all, self._idle = self._all, [], []
        for fs in every:
            _close_filesystem(fs)


def sftp_alive(fs: AbstractFileSystem) -> bool:
    """Whether the SSH connection of fsspec's SFTPFileSystem ``fs`` is still up."""
    client = getattr(fs, "client", None)
    transport = client.get_transport() if client is not None else None
    return bool(transport is not None and transport.is_active())


def _close_filesystem(fs: AbstractFileSystem) -> None:
    """Close what a filesystem object holds open (an SSH connection), if it says how."""
    for name in ("ftp", "client"):  # fsspec's SFTPFileSystem: the SFTP channel, the SSH client
        closer = getattr(getattr(fs, name, None), "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


# ---- the datastore --------------------------------------------------------------------------------


class FSSpec(Datastore):
    """Stores each key as the file ``ROOT/key`` of an fsspec filesystem.

    ``FSSpec("sftp://user@host:2222/srv/laminar", password=...)``, ``FSSpec("fsspec+memory://scratch")``.

    Options, later ones winning: what the URL says (user, password, host and port for SFTP or FTP; the
    query, ``?key_filename=/path&timeout=5``), ``storage_options=`` (a dict), keyword arguments (both
    as for ``fsspec.filesystem(protocol, **options)``). Also:

    - ``commit``: ``"rename"`` or ``"direct"`` (default: by filesystem, see below);
    - ``attempts``: tries of each call when the connection drops or times out (default 3);
    - ``max_workers``: threads of the batch calls (default: 1 local, 4 SFTP and others, 16 object stores).

    A local disk and fsspec's memory filesystem decide compression as ``Local`` and ``Memory`` do
    (``worth_compressing``); other filesystems, remote, keep the network's default.

    **Atomic writes.** ``commit="rename"`` (the default except for object stores and memory) writes the
    value to a temporary file in ``ROOT/.staging`` and renames it into place, so a reader sees the old
    value or the new one, never part of one, even if the writer dies (a stale temporary file may stay
    in ``.staging``; it is never read). How atomic the rename is depends on the filesystem:

    - local disks: ``rename(2)``, atomic;
    - SFTP: the ``posix-rename@openssh.com`` extension (OpenSSH, asyncssh, most servers), atomic; a
      server without it refuses the write rather than doing something weaker;
    - others (FTP, SMB, WebDAV, HDFS, ...): the filesystem's ``mv``; where it refuses to replace an
      existing file, the old file is deleted first, and a reader may then briefly find no value (never
      a partial one) — the contract allows that; where ``mv`` is a copy, the copy is what it is.

    ``commit="direct"`` writes the key in one call: an object store's ``PUT`` (atomic), the memory
    filesystem's dict assignment (atomic); on other filesystems a concurrent reader may see a partial
    value, so choose it only where that cannot happen.
    """

    schemes: ClassVar[tuple[str, ...]] = served_schemes()

    def __new__(cls, url: str = "", *args: Any, **kwargs: Any) -> FSSpec:
        # The memory filesystem lives in one process: its datastore is the unshared subclass.
        if cls is FSSpec and isinstance(url, str) and url:
            with contextlib.suppress(Exception):  # a bad URL is reported by __init__
                if kind_of(*_protocol_and_class(url)).in_process:
                    cls = FSSpecInProcess
        return super().__new__(cls)

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        commit: Commit | None = None,
        attempts: int = 3,
        max_workers: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        location, cls = parse(url)
        self.location = location
        self.fs_protocol = location.protocol
        self.kind = kind_of(location.protocol, cls)
        if commit not in (None, "rename", "direct"):
            raise ConfigurationError(
                f"commit is 'rename' or 'direct', not {commit!r} (datastore {location.url})"
            )
        self.commit: Commit = commit or self.kind.commit
        self.attempts = max(1, int(attempts))
        self.max_workers = max_workers if max_workers is not None else self.kind.max_workers
        if self.kind.worth_compressing is not None:
            self.worth_compressing = self.kind.worth_compressing
        self.storage_options: dict[str, Any] = {
            **self.kind.defaults,
            **location.options,
            **(storage_options or {}),
            **options,
        }
        self._secrets = _secrets(self.storage_options)
        self._clients: Clients | None = None
        self._clients_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> FSSpec:
        return cls(url)

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def root(self) -> str:
        """The root path on the filesystem (``/srv/laminar``)."""
        return self.location.root

    # ---- the filesystem --------------------------------------------------------------------------
    def _connect(self) -> AbstractFileSystem:
        """A new filesystem object of our own (fsspec's instance cache would share it across datastores)."""
        import fsspec

        try:
            return cast(
                "AbstractFileSystem",
                fsspec.filesystem(self.fs_protocol, skip_instance_cache=True, **self.storage_options),
            )
        except FileNotFoundError as error:  # a missing key file, say: not a missing key
            raise DatastoreError(
                f"connect {self.location.base} failed: {type(error).__name__}: {error}"
            ) from error

    def _filesystems(self) -> Clients:
        clients = self._clients
        if clients is None:
            with self._clients_lock:
                if self._clients is None:
                    alive = sftp_alive if self.kind.sftp else (lambda fs: True)
                    self._clients = Clients(self._connect, self.kind.thread_safe, alive)
                clients = self._clients
        return clients

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"no key {key!r} in {self.location.base}")

    def _transient(self, error: BaseException) -> bool:
        return not isinstance(error, LaminarError) and caused_by(error, TRANSIENT_NAMES)

    def _call(
        self, verb: str, key: str, operation: Callable[[AbstractFileSystem], T], *, keep: bool = False
    ) -> T:
        """``operation(fs)`` under retries; errors name ``verb`` and the key's URL, never a secret.

        ``FileNotFoundError`` passes through. With ``keep``, the filesystem object stays taken from the
        pool on success (the caller gives it back).
        """
        pool = self._filesystems()

        def attempt() -> T:
            fs = pool.acquire()
            try:
                result = operation(fs)
            except BaseException as error:
                transient = self._transient(error)
                lost = not transient and self.kind.sftp and not sftp_alive(fs)
                pool.release(fs, broken=transient or lost)
                if lost and isinstance(error, Exception):  # "Socket is closed": a plain OSError
                    raise ConnectionLost(
                        f"the connection to {self.location.base} was lost ({type(error).__name__}: {error})"
                    ) from error
                raise
            if not keep:
                pool.release(fs)
            return result

        where = f"{self.location.base}/{key}" if key else self.location.base
        try:
            return with_retries(
                attempt,
                transient=self._transient,
                describe=f"{verb} {where}",
                attempts=self.attempts,
                secrets=self._secrets,
            )
        except DatastoreError as error:
            failure = error
            if isinstance(error.__cause__, DatastoreError):  # ours, raised on purpose: it names the URL
                failure = error.__cause__
        raise masked(failure, self._secrets)  # outside the handler: a cut cause does not come back

    # ---- primitives ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)

        def read(fs: AbstractFileSystem) -> bytes:
            try:
                if self.kind.sftp:
                    return _sftp_read(fs, path)
                return bytes(fs.cat_file(path))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
                raise self._missing(key) from error

        return self._call("read", key, read)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        pool = self._filesystems()

        def open_(fs: AbstractFileSystem) -> tuple[AbstractFileSystem, Any]:
            try:
                return fs, fs.open(path, "rb")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
                raise self._missing(key) from error

        # The stream keeps its filesystem object (its SFTP channel) until it is closed.
        fs, file = self._call("read", key, open_, keep=True)
        if self.kind.thread_safe and not self.kind.sftp:
            return cast(BinaryIO, file)
        try:
            read = _SFTPReader(file).read if self.kind.sftp else file.read
        except BaseException:
            file.close()
            pool.release(fs, broken=True)
            raise

        def close() -> None:
            try:
                file.close()
            finally:
                pool.release(fs)

        return buffered_reader(read, close)

    def write_bytes(self, key: str, data: bytes) -> None:
        value = bytes(data)

        def put(fs: AbstractFileSystem, path: str) -> None:
            if self.kind.sftp:
                with fs.open(path, "wb") as file:
                    file.set_pipelined(True)  # paramiko: send every block, then wait for the answers
                    file.write(value)
            else:
                fs.pipe_file(path, value)

        self._call("write", key, lambda fs: self._store(fs, key, put))

    def write_file(self, key: str, path: str) -> None:
        def put(fs: AbstractFileSystem, target: str) -> None:
            if self.kind.sftp:
                with open(path, "rb") as source, fs.open(target, "wb") as file:
                    file.set_pipelined(True)
                    shutil.copyfileobj(source, file, _COPY)
            else:
                fs.put_file(path, target)

        self._call("write", key, lambda fs: self._store(fs, key, put))

    def _store(
        self, fs: AbstractFileSystem, key: str, put: Callable[[AbstractFileSystem, str], None]
    ) -> None:
        """``put(fs, path)`` the value, then make it ``key``'s: directly, or by a rename."""
        final = self._path(key)
        if self.commit == "direct":
            self._with_parent(fs, final, lambda: put(fs, final))
            return
        temporary = f"{self.root}/.staging/{uuid.uuid4().hex}"
        self._with_parent(fs, temporary, lambda: put(fs, temporary))
        try:
            self._with_parent(fs, final, lambda: _replace(fs, temporary, final))
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(temporary)
            raise

    def _with_parent(self, fs: AbstractFileSystem, path: str, operation: Callable[[], None]) -> None:
        """``operation()``; when the directory of ``path`` is missing, create it and try again.

        A concurrent delete may remove a directory it just emptied: a few rounds settle that.
        """
        for round_ in range(3):
            try:
                operation()
                return
            except FileNotFoundError:
                if round_ == 2:
                    raise
                _makedirs(fs, path.rsplit("/", 1)[0])

    def exists(self, key: str) -> bool:
        path = self._path(key)

        def check(fs: AbstractFileSystem) -> bool:
            try:
                return bool(fs.info(path)["type"] == "file")
            except (FileNotFoundError, NotADirectoryError):
                return False

        return self._call("check", key, check)

    def list_prefix(self, prefix: str) -> list[str]:
        path = self._path(prefix.rstrip("/")) if prefix else (self.root or "/")

        def listing(fs: AbstractFileSystem) -> list[str]:
            fs.invalidate_cache(path)
            try:
                entries = fs.ls(path, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                return []
            itself = str(fs._strip_protocol(path)).rstrip("/")
            names = set()
            for entry in entries:
                name = str(entry["name"]).rstrip("/")
                if name != itself:  # a file is listed as itself: it has nothing below it
                    names.add(name.rsplit("/", 1)[-1])
            if not prefix:
                names.discard(".staging")
            names.discard("")
            return sorted(names)

        return self._call("list", prefix, listing)

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove(fs: AbstractFileSystem) -> None:
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                return
            if self.kind.directories:
                # Like an object store, keep no empty "directories" behind (they would be listed).
                directory = path.rsplit("/", 1)[0]
                while directory.startswith(f"{self.root}/") and len(directory) > len(self.root):
                    try:
                        fs.rmdir(directory)
                    except OSError:
                        break
                    directory = directory.rsplit("/", 1)[0]

        self._call("delete", key, remove)

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, None
        if clients is not None:
            clients.close()
        super().close()

    # ---- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_clients"] = None
        state.pop("_clients_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._clients_lock = threading.Lock()


class FSSpecInProcess(FSSpec):
    """An :class:`FSSpec` on fsspec's memory filesystem, which lives in this process only.

    ``FSSpec("fsspec+memory://...")`` is one of these: like core's ``Memory``, only the Thread executor
    can reach it, and it refuses to be pickled. Datastores in one process with the same root share it.
    """

    shared = False
    cheap_exists = True

    def open_read(self, key: str) -> BinaryIO:
        return io.BytesIO(self.read_bytes(key))  # the filesystem hands every reader the same object

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            f"the datastore {self.url} is fsspec's memory filesystem, which lives in one process and "
            "cannot be sent to another; use executors.Thread() with it, or a filesystem other processes reach"
        )


def _protocol_and_class(url: str) -> tuple[str, type[AbstractFileSystem]]:
    protocol = url.partition("://")[0].lower().removeprefix(PREFIX)
    return protocol, filesystem_class(protocol, url)


def _makedirs(fs: AbstractFileSystem, path: str) -> None:
    """Create directory ``path`` and its parents; writers creating some of them at once are fine."""
    for round_ in range(4):
        try:
            fs.makedirs(path, exist_ok=True)
            return
        except OSError:  # "File exists" (SFTP says it as a plain OSError): someone made one first
            if fs.isdir(path):
                return
            if round_ == 3:
                raise


def _replace(fs: AbstractFileSystem, temporary: str, final: str) -> None:
    """Rename ``temporary`` to ``final``, replacing it; where ``mv`` refuses to replace, delete first."""
    try:
        fs.mv(temporary, final)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(final)
        fs.mv(temporary, final)


def _sftp_read(fs: AbstractFileSystem, path: str) -> bytes:
    """The whole file over paramiko's SFTP: one request for a small one, prefetched requests else."""
    with fs.open(path, "rb") as file:
        first = bytes(file.read(_SFTP_READ))
        if len(first) < _SFTP_READ:
            return first
        file.prefetch()  # the rest, requested all at once
        return first + bytes(file.read())


class _SFTPReader:
    """Reads of a paramiko SFTP file a window at a time: 32 requests sent at once (1 MiB), then served."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self._size = int(file.stat().st_size)
        self._position = 0  # of the window's end in the file
        self._window = b""
        self._offset = 0  # into the window

    def read(self, size: int) -> bytes:
        """At most ``size`` bytes, ``b""`` at the end."""
        if self._offset >= len(self._window):
            end = min(self._size, self._position + _SFTP_READ * _SFTP_WINDOW)
            if end <= self._position:
                return b""
            chunks = [
                (offset, min(_SFTP_READ, end - offset)) for offset in range(self._position, end, _SFTP_READ)
            ]
            self._window = b"".join(self._file.readv(chunks))
            self._offset = 0
            self._position += len(self._window)
            if not self._window:
                return b""
        data = self._window[self._offset : self._offset + size]
        self._offset += len(data)
        return data
