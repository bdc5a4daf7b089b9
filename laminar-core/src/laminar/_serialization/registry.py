"""Which protocol serializes a value, and which reads a stored artifact back.

Protocols are keyed by the value's exact type; ``object`` keys the fallback (cloudpickle, which the
built-in plugin registers like any other). A user's ``@datastore.protocol(...)`` registry comes
first, then the protocols plugins register through the ``laminar_protocols`` hook.

Reading resolves the protocol a stored artifact names; the safe protocols (:mod:`.safe`) resolve
whether registered or not, and a name nothing resolves is an error, never a guess. A protocol added
for no type at all (a plugin's ``((), protocol)``) is known for reading only: what it stored reads
back, and nothing is written with it until a datastore registers it for a type (opt-in per store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Any, TypeVar

from laminar._serialization import safe
from laminar._serialization.protocols import Protocol

P = TypeVar("P", bound="type[Protocol[Any]]")

_changes = 0  # registrations in this process, in any registry


class ProtocolRegistry:
    """Protocols by exact type. ``datastore.protocols`` is one; the flow's plugin protocols another."""

    def __init__(self) -> None:
        self._by_type: dict[type, Protocol[Any]] = {}
        self._readers: dict[str, Protocol[Any]] = {}  # added for no type: read by name only

    def register(self, *types: type) -> Callable[[P], P]:
        """Class decorator: serialize values of exactly these types with the decorated Protocol."""
        if not types:
            raise TypeError("datastore.protocol() needs at least one type, e.g. @datastore.protocol(dict)")

        def register(protocol: P) -> P:
            self.add(types, protocol())
            return protocol

        return register

    def add(self, types: Iterable[type], protocol: Protocol[Any], *, replace: bool = True) -> None:
        global _changes
        _changes += 1  # the Protocols that protocols_for() keeps are stale from now on
        protocol.record_main_module()
        types = tuple(types)
        if not types and (replace or protocol.name not in self._readers):
            self._readers[protocol.name] = protocol
        for kind in types:
            if replace or kind not in self._by_type:
                self._by_type[kind] = protocol

    def get(self, kind: type) -> Protocol[Any] | None:
        return self._by_type.get(kind)

    def __iter__(self) -> Iterator[Protocol[Any]]:
        return iter(self._by_type.values())

    def readers(self) -> Iterator[Protocol[Any]]:
        """Every protocol this registry can read with: those for a type, and those added for none."""
        yield from self._readers.values()
        yield from self._by_type.values()

    def __len__(self) -> int:
        return len(self._by_type)

    def __repr__(self) -> str:
        shown = ", ".join(f"{kind.__name__}: {protocol.name}" for kind, protocol in self._by_type.items())
        return f"ProtocolRegistry({shown})"


class Protocols:
    """The registries one store consults, first match wins: the user's, then the plugins'."""

    def __init__(self, *registries: ProtocolRegistry) -> None:
        self.registries = registries

    def for_value(self, value: Any) -> Protocol[Any]:
        """The protocol for ``value``'s exact type, else the fallback registered for ``object``."""
        kind = type(value)
        for registry in self.registries:
            found = registry.get(kind)
            if found is not None:
                return found
        return self.fallback

    @cached_property
    def fallback(self) -> Protocol[Any]:
        """The protocol registered for ``object``: cloudpickle, unless a plugin says otherwise."""
        for registry in self.registries:
            found = registry.get(object)
            if found is not None:
                return found
        raise LookupError(
            "no serialization protocol is registered for object; the built-in plugin registers cloudpickle "
            "for it, so the flow's configuration was built without the plugin manager's protocols"
        )

    @cached_property
    def _by_name(self) -> dict[str, Protocol[Any]]:
        found: dict[str, Protocol[Any]] = {}
        for registry in reversed(self.registries):  # earlier registries win
            found.update({protocol.name: protocol for protocol in registry.readers()})
        return found

    def by_name(self, name: str) -> Protocol[Any]:
        """The protocol a stored artifact names; ``LookupError`` (saying how to register one) if none is."""
        found = self._by_name.get(name) or safe.BUILTIN.get(name)
        if found is None:
            raise LookupError(
                f"no serialization protocol named {name!r} is registered in this process; register the "
                "protocol that wrote it before reading, with @datastore.protocol(type, ...) on its class "
                "(importing the module that registers it), or install the plugin that provides it"
            )
        return found


_recent: dict[tuple[int, ...], tuple[tuple[ProtocolRegistry, ...], int, Protocols]] = {}


def protocols_for(*registries: ProtocolRegistry) -> Protocols:
    """``Protocols(*registries)``, the same object again while no registry changed.

    A store is built per split, and its ``Protocols`` works out its lookups once: reusing it saves
    that work on every split. Any registration anywhere makes every kept one stale.
    """
    key = tuple(map(id, registries))
    found = _recent.get(key)
    if (
        found is not None
        and found[1] == _changes
        and all(a is b for a, b in zip(found[0], registries, strict=True))
    ):
        return found[2]
    made = Protocols(*registries)
    if len(_recent) >= 64:
        _recent.clear()
    _recent[key] = (registries, _changes, made)
    return made
