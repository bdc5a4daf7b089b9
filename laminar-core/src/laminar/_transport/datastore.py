"""The Datastore contract: a few byte-level primitives a backend implements; everything else is shared.

A backend (``laminar-s3``, a third party's ``laminar-foo``) subclasses :class:`Datastore`, sets
``schemes`` and implements :meth:`read_bytes`, :meth:`write_bytes`, :meth:`exists` and
:meth:`list_prefix`, and :meth:`delete` to be cleaned up. It may override :meth:`open_read` (streaming reads),
:meth:`write_file` (streaming uploads) and the ``*_many`` batch calls; by default batches run the
primitives on a thread pool, which is what object stores want.

Keys are ``/``-separated relative paths (the storage layer, :mod:`laminar._storage.layout`, builds them). Writes of one key must
be atomic: a reader sees the old bytes, the new bytes, or nothing, never a part.
Run ``laminar.testing.DatastoreConformance`` against a backend to check it keeps this contract.

The seed's results API is on the datastore object too (``list_executions``, ``list_layers``,
``list_artifacts``), but this module knows no flows: the methods forward to the :class:`ResultsAPI`
the application installs on :class:`Datastore` when it is imported (:mod:`laminar._app.results`).
"""

from __future__ import annotations

import abc
import io
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol, TypeVar, cast

from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from laminar._model.execution import Execution
    from laminar._model.layer import Layer
    from laminar._serialization import protocols
    from laminar._serialization.registry import ProtocolRegistry

P = TypeVar("P", bound="type[protocols.Protocol[Any]]")
E = TypeVar("E", bound="Execution")
E_co = TypeVar("E_co", bound="Execution", covariant=True)

#: ``LAMINAR_TRUST=none`` opens every datastore of the process (and of the workers it starts) untrusted.
TRUST_VARIABLE = "LAMINAR_TRUST"
TRUST_LEVELS = ("all", "none")


def environment_value(name: str) -> str | None:
    """``os.environ.get(name)``, read several times a layer (is this store trusted, the log cap).

    For a name that is not set, ``os.environ`` raises a ``KeyError`` and catches it (twice over),
    which costs several times the look-up: where ``os.environ`` keeps its names in a dict of their
    encoded form (CPython's ``os._Environ``), an absent one is found absent there first."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    encode = getattr(environ, "encodekey", None)
    if isinstance(data, dict) and encode is not None and encode(name) not in data:
        return None
    return environ.get(name)


class FlowOf(Protocol[E_co]):
    """A flow as ``list_executions`` sees it: ``flow.execution(id)`` gives one of its executions (``E``)."""

    def execution(self, id: str) -> E_co: ...


class ResultsAPI(Protocol):
    """What answers the datastore's ``list_executions``, ``list_layers`` and ``list_artifacts``.

    The application provides it (:mod:`laminar._app.results`) and installs it as
    :attr:`Datastore.results_api`; the transport only forwards, so it imports nothing of the flows.
    """

    def executions(self, datastore: Datastore, flow: FlowOf[Execution]) -> list[Execution]:
        """``flow``'s executions stored in ``datastore``, oldest first, each as ``flow.execution(id)``."""
        ...

    def layers(self, datastore: Datastore, execution: Execution) -> list[Layer]:
        """The layers that stored artifacts in ``execution``."""
        ...

    def artifacts(self, datastore: Datastore, layer: Layer) -> list[str]:
        """Names of the artifacts ``layer`` (bound to an execution) stored, sorted."""
        ...


class Datastore(abc.ABC):
    """Where a flow's artifacts, archives and records are stored.

    Subclasses must stay picklable: executors ship the datastore to the processes that run layers.
    Create clients lazily and drop them in ``__getstate__``.
    """

    #: URL schemes this datastore serves, e.g. ``("s3",)``; used by the plugin manager.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Whether processes other than the scheduler's can reach this datastore.
    shared: ClassVar[bool] = True
    #: Threads used by the default ``*_many`` batch calls.
    max_workers: int = 16
    #: Whether ``exists`` costs much less than a small write (a local ``stat``); object stores say no,
    #: and small content-addressed artifacts are then written without asking first.
    cheap_exists: ClassVar[bool] = False
    #: The fraction a sample of a value (and of each 1 MiB frame of it) must shrink to for Laminar
    #: to store it compressed: where moving bytes is slow (a network), compressing nearly anything
    #: that shrinks saves time. See ``laminar._serialization.codecs``.
    worth_compressing: float = 0.85
    #: Whether a small write costs less than handing it to a thread (a local file, a dict): the
    #: scheduler then writes its records on its event loop, where a hop to a thread and back would
    #: cost more than the write; to an object store they go through threads, off the loop.
    small_writes_inline: ClassVar[bool] = False
    #: Values whose serialized bytes pass this many are staged in a file in ``staging_directory()``
    #: as they are serialized, smaller ones in memory. A store whose ``write_file`` renames that file
    #: into place (a local disk) sets it low: a large value's bytes are then copied once, into the
    #: file, not into memory first and then out of it.
    staged_in_memory: ClassVar[int] = 8 * 1024 * 1024
    #: Whether :meth:`create` is atomic (the store's own exclusive create), so run leases exclude a
    #: scheduler racing another; the default ask-then-write is not.
    atomic_create: ClassVar[bool] = False
    #: What answers the results API below; installed by the application (:mod:`laminar._app.results`).
    results_api: ClassVar[ResultsAPI | None] = None

    def __init__(self) -> None:
        from laminar._serialization.registry import ProtocolRegistry  # with the first datastore made

        #: The user's ``@datastore.protocol`` registrations (see :meth:`protocol`).
        self.protocols: ProtocolRegistry = ProtocolRegistry()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # ---- trust ----------------------------------------------------------------------------------
    @property
    def trust(self) -> str:
        """``"all"`` (the default) reads every artifact; ``"none"`` unpickles nothing: only artifacts of
        protocols marked safe are read (see ``docs/trust.md``). Set it on any datastore object, before
        the flow ships it to workers: ``datastore.trust = "none"``. ``LAMINAR_TRUST=none`` in the
        environment makes every datastore untrusted, whatever this says."""
        return "none" if not self.trusted else str(self.__dict__.get("_trust", "all"))

    @trust.setter
    def trust(self, level: str) -> None:
        if level not in TRUST_LEVELS:
            raise ValueError(f"trust must be one of {', '.join(map(repr, TRUST_LEVELS))}, not {level!r}")
        self.__dict__["_trust"] = level

    @property
    def trusted(self) -> bool:
        """Whether artifacts of any protocol (pickles included) may be read from this datastore."""
        if self.__dict__.get("_trust") == "none":
            return False
        found = environment_value(TRUST_VARIABLE)
        if found is None or found == "all":
            return True
        if found.lower() in TRUST_LEVELS:
            return found.lower() != "none"
        raise ConfigurationError(f"{TRUST_VARIABLE} must be one of {', '.join(TRUST_LEVELS)}, not {found!r}")

    def untrusted(self) -> Datastore:
        """Open this datastore untrusted (``trust = "none"``) and return it: ``Local(root).untrusted()``."""
        self.trust = "none"
        return self

    @property
    def trust_source(self) -> str:
        """What made this datastore untrusted, for messages."""
        if self.__dict__.get("_trust") == "none":
            return 'trust="none"'
        return f"{TRUST_VARIABLE}={os.environ.get(TRUST_VARIABLE)}"

    def use_safe_protocols(self, *, numpy: bool = True) -> Datastore:
        """Store plain data as JSON, ``bytes`` and ``str`` as they are, and numpy arrays as ``.npy``
        (numpy arrays only if ``numpy`` and it is importable): all readable untrusted. Returns ``self``."""
        from laminar._serialization import safe

        safe.register(self.protocols, numpy=numpy)
        return self

    # ---- construction from a URL ---------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str) -> Datastore:
        """Build a datastore from a URL of one of ``schemes``. Backends override this."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL ({url})")

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this datastore points, for messages (``s3://bucket/prefix``)."""

    # ---- primitives ----------------------------------------------------------------------------
    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return the bytes at ``key``; raise ``FileNotFoundError`` if there are none."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` atomically, replacing what was there."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""

    @abc.abstractmethod
    def list_prefix(self, prefix: str) -> list[str]:
        """Names directly below ``prefix`` (which ends in ``/``), as a delimiter listing gives them.

        Both keys and "directories" are returned, without the prefix and without a trailing ``/``,
        sorted. An empty or missing prefix gives ``[]``.
        """

    # ---- optional overrides --------------------------------------------------------------------
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error.

        Optional: only deleting old executions (``laminar gc``) and releasing run leases need it,
        and ``laminar.testing.DatastoreConformance`` checks it where it is implemented.
        """
        raise NotImplementedError(f"the {type(self).__name__} datastore cannot delete keys")

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` at ``key`` only if nothing is there; ``True`` if this call created it.

        Run leases (one scheduler per execution) are taken with it. Override with the store's own
        atomic create (exclusive create on a disk, a conditional write on an object store): this
        default asks, then writes, so two processes racing for the same key can both succeed.
        """
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream over ``key``. Override to stream large values."""
        return io.BytesIO(self.read_bytes(key))

    def write_file(self, key: str, path: str) -> None:
        """Store the local file ``path`` at ``key``; the file may be moved or deleted afterwards.

        Override to stream the upload (object stores) or rename the file into place (local disks).
        """
        with open(path, "rb") as file:
            self.write_bytes(key, file.read())

    def staging_directory(self) -> str:
        """A local directory for values too large to hold in memory while they are serialized."""
        import tempfile

        return tempfile.gettempdir()

    def close(self) -> None:
        """Release clients and threads. The datastore may be used again afterwards."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # ---- batches -------------------------------------------------------------------------------
    def map_parallel(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, on up to ``max_workers`` threads (batch helpers use it)."""
        if len(items) <= 1 or self.max_workers <= 1:
            return [function(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="laminar-io")
            pool = self._pool
        return list(pool.map(function, items))

    def read_many(self, keys: Sequence[str]) -> list[bytes]:
        return self.map_parallel(self.read_bytes, keys)

    def write_many(self, items: Mapping[str, bytes]) -> None:
        self.map_parallel(lambda item: self.write_bytes(*item), list(items.items()))

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return self.map_parallel(self.exists, keys)

    def delete_many(self, keys: Sequence[str]) -> None:
        """``delete`` each key; override with the store's bulk delete (one request for many keys)."""
        self.map_parallel(self.delete, keys)

    # ---- the user's API on the datastore object (SPEC's seed), answered by the application ----
    def protocol(self, *types: type) -> Callable[[P], P]:
        """Class decorator: serialize values of exactly these types with the decorated Protocol."""
        return self.protocols.register(*types)

    def list_executions(self, *, flow: FlowOf[E]) -> list[E]:
        """The flow's executions in this datastore, oldest first, each as ``flow.execution(id)`` gives it."""
        # The results API builds each with flow.execution(id), so each is the flow's own kind.
        return cast("list[E]", self._results_api().executions(self, flow))

    def list_layers(self, *, execution: Execution) -> list[Layer]:
        """The layers that stored artifacts in ``execution``, sorted by name."""
        return self._results_api().layers(self, execution)

    def list_artifacts(self, *, layer: Layer) -> list[str]:
        """Names of the artifacts ``layer`` stored, across its splits, sorted."""
        return self._results_api().artifacts(self, layer)

    @classmethod
    def _results_api(cls) -> ResultsAPI:
        api = cls.results_api
        if api is None:
            raise RuntimeError(
                f"{cls.__name__}.results_api is None: nothing answers list_executions, list_layers and "
                "list_artifacts; `import laminar` installs Laminar's (laminar._app.results)"
            )
        return api

    # ---- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_pool_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"
