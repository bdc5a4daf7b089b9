"""Serialization protocols: how a value of one exact type becomes bytes and back.

Override ``dumps``/``loads`` for bytes, or ``dump``/``load`` to stream through a file. Override
``write``/``read`` to take over the stored form entirely (compression included), e.g. for values that
are already compressed. ``hexdigest`` may return a content address of its own; by default the hash of
the serialized bytes is used.

The earlier laminar's form is kept too: ``write(self, value, uri)`` and ``read(self, uri)`` (the
second parameter named ``uri``) are handed a path to write the value to, or read it from, with any
library that takes one (``df.to_parquet(uri)``); Laminar then hashes and stores that file.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, BinaryIO, Generic, TypeVar

import cloudpickle

T = TypeVar("T")


def dtype(kind: type) -> str:
    """The name the earlier laminar recorded for a type: ``"module.Name"``."""
    return f"{kind.__module__}.{kind.__name__}"


def takes_uri(protocol: Protocol[Any]) -> bool:
    """Whether ``protocol`` overrides ``write``/``read`` in the earlier form, taking a ``uri``."""
    kind = type(protocol)
    found = _TAKES_URI.get(kind)
    if found is None:
        found = _TAKES_URI[kind] = any(
            getattr(kind, name) is not getattr(Protocol, name)
            and list(inspect.signature(getattr(kind, name)).parameters)[position : position + 1] == ["uri"]
            for name, position in (("write", 2), ("read", 1))
        )
    return found


_TAKES_URI: dict[type, bool] = {}  # per protocol class, so signatures are inspected once


def write_to_path(protocol: Protocol[Any], value: Any, path: str) -> None:
    """Store ``value`` at the local ``path`` the way a URI-taking protocol wants it (see ``takes_uri``)."""
    if type(protocol).write is not Protocol.write:
        protocol.write(value, path)  # type: ignore[arg-type]  # the earlier form: write(value, uri)
    else:
        with open(path, "wb") as file:
            protocol.dump(value, file)


def read_from_path(protocol: Protocol[Any], path: str) -> Any:
    """Read a value a URI-taking protocol stored at the local ``path``."""
    if type(protocol).read is not Protocol.read:
        return protocol.read(path)  # type: ignore[arg-type]  # the earlier form: read(uri)
    with open(path, "rb") as file:
        return protocol.load(file)


def main_module_name() -> str | None:
    """The name under which another process imports the script running as ``__main__``, if any.

    ``python -m pkg.tool`` gives ``pkg.tool``; ``python tool.py`` gives ``tool`` (another program
    imports it as ``import tool``). An interactive session or ``python -c`` has none.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    path = getattr(main, "__file__", None)
    if not path:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem.isidentifier() else None


class Protocol(Generic[T]):
    """Base class for serialization protocols. Register with ``@datastore.protocol(type, ...)``."""

    #: Whether the stored bytes may be compressed by Laminar's codecs.
    compress: bool = True
    #: Whether reading runs no code that the stored bytes choose. Only protocols marked safe are read
    #: from a datastore opened untrusted (``trust="none"``); pickle-based ones must never be.
    safe: bool = False

    @property
    def name(self) -> str:
        """Recorded with each artifact so readers pick the same protocol.

        A protocol class defined in the script being run (module ``__main__``) is recorded under the
        name other processes import that script by (see :func:`main_module_name`), fixed when it is
        registered, so worker processes and later readers resolve the same name.
        """
        kind = type(self)
        module = getattr(self, "__dict__", {}).get("_laminar_module") or kind.__module__
        return f"{module}.{kind.__qualname__}"

    def record_main_module(self) -> None:
        """Fix the module name recorded for a protocol class defined in ``__main__`` (see ``name``)."""
        if type(self).__module__ == "__main__" and "_laminar_module" not in getattr(self, "__dict__", {}):
            found = main_module_name()
            if found is not None:
                self.__dict__["_laminar_module"] = found

    def dumps(self, value: T) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} must override dumps() or dump()")

    def loads(self, data: bytes) -> T:
        raise NotImplementedError(f"{type(self).__name__} must override loads() or load()")

    def dump(self, value: T, file: BinaryIO) -> None:
        file.write(self.dumps(value))

    def load(self, file: BinaryIO) -> T:
        return self.loads(file.read())

    def write(self, value: T, file: BinaryIO) -> None:
        """Write the serialized form of ``value``; Laminar hashes and (maybe) compresses ``file``."""
        self.dump(value, file)

    def read(self, file: BinaryIO) -> T:
        """Read a value back from the (already decompressed) ``file``."""
        return self.load(file)

    def hexdigest(self, value: T) -> str | None:
        """A content address for ``value``, or ``None`` to use the SHA-256 of its serialized bytes."""
        return None


class Pickle(Protocol[Any]):
    """The default: cloudpickle with pickle protocol 5, streamed (large buffers are not copied).

    Unpickling runs whatever code the stored bytes name: never read it from a store you do not trust.
    """

    @property
    def name(self) -> str:
        return "cloudpickle"

    def dumps(self, value: Any) -> bytes:
        data: bytes = cloudpickle.dumps(value, protocol=5)
        return data

    def loads(self, data: bytes) -> Any:
        return cloudpickle.loads(data)

    def dump(self, value: Any, file: BinaryIO) -> None:
        cloudpickle.dump(value, file, protocol=5)

    def load(self, file: BinaryIO) -> Any:
        return cloudpickle.load(file)
