"""The bounded cache of parsed metadata (records, split batches) that a datastore's stores share.

Batches and records never change once written, so this process keeps what it wrote and read of
them. The bound is a total *weight*: a split batch weighs the archives it holds (a split's named
values), the unit that costs memory (figures: docs/performance.md).

A plain least-recently-used cache fails the commonest read of all: a join over a layer larger than
the cache reads its batches in index order, each read evicting the oldest entry, which is the one
the same pass needs next, so every read misses. So there are two segments (a segmented LRU):

- **protected**: what this process *wrote*, which the next layer reads;
- **probation**: what was read, and what protected pushed out. It goes first.

A read does not promote an entry to protected, even when used again: a pass reads each batch in
several windows, and promoting those would push out the batches the same pass reaches last.

A pass over more than the cache then churns probation only: the batches written last stay and are
hit when the pass reaches them. Protected may fill at most ``PROTECTED`` of the bound, so what was
just read can be held until its reader is done with it; with nothing written, probation is a plain
LRU over the whole bound.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from typing import Any

from laminar._transport.datastore import Datastore

#: The bound: about this many archives. A join over 200,000 splits reads all its foreach wrote from
#: memory, and one over a million reads the rest from the store, where keeping them all took most of
#: the memory a million splits may use (issue 29); figures: docs/performance.md.
CAPACITY = 250_000
#: At most this share of the bound is protected.
PROTECTED = 7 / 8


class MetadataCache:
    """Immutable parsed metadata by key, bounded by total weight (see the module's docstring)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = CAPACITY if capacity is None else capacity
        self.protected: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.probation: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.protected_weight = 0
        self.weight = 0
        self.lock = threading.Lock()
        #: values held until they are written (``hold``): outside the bound, never evicted
        self.held: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The value under ``key``, or None; the most recently used of its segment now."""
        with self.lock:
            for segment in (self.protected, self.probation):
                found = segment.get(key)
                if found is not None:
                    segment.move_to_end(key)
                    return found[0]
            return None

    def put(self, key: str, value: Any, weight: int = 1, *, written: bool = False) -> None:
        """Keep ``value``: protected if this process wrote it (``written``), else on probation."""
        with self.lock:
            self._drop(key)
            self.held.pop(key, None)
            if written:
                self.protected[key] = (value, weight)
                self.protected_weight += weight
            else:
                self.probation[key] = (value, weight)
            self.weight += weight
            self._balance(key)

    def forget(self, key: str) -> None:
        """Drop ``key``: what it held was replaced (``laminar gc`` rewrites a borrowing record)."""
        with self.lock:
            self._drop(key)

    def hold(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` apart from the cache, never evicted, until ``put`` (it was
        written) or ``unhold`` (it was not): what this process writes behind reads before it lands."""
        with self.lock:
            self.held[key] = value

    def unhold(self, key: str) -> None:
        """Drop the value held under ``key``: its write failed."""
        with self.lock:
            self.held.pop(key, None)

    def held_value(self, key: str) -> Any:
        """The value held under ``key`` (see ``hold``), or None."""
        return self.held.get(key) if self.held else None

    def _drop(self, key: str) -> None:
        previous = self.protected.pop(key, None)
        if previous is not None:
            self.protected_weight -= previous[1]
        else:
            previous = self.probation.pop(key, None)
        if previous is not None:
            self.weight -= previous[1]

    def _balance(self, keep: str) -> None:
        """Demote protected's overflow, then drop the oldest entries until the weight fits, but not
        ``keep``: the entry just put, which its reader is about to use."""
        limit = self.capacity * PROTECTED
        while self.protected_weight > limit and len(self.protected) > 1:
            key, entry = self.protected.popitem(last=False)
            self.protected_weight -= entry[1]
            self.probation[key] = entry  # the newest on probation: it goes after what was read once
        while self.weight > self.capacity:
            segment = next(
                (
                    s
                    for s in (self.probation, self.protected)
                    if any(k != keep for k in itertools.islice(s, 2))
                ),
                None,
            )
            if segment is None:
                return  # only ``keep`` is left, however much it weighs
            key = next(k for k in segment if k != keep)
            _, dropped = segment.pop(key)
            if segment is self.protected:
                self.protected_weight -= dropped
            self.weight -= dropped


_caches: weakref.WeakKeyDictionary[Datastore, MetadataCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def cache_for(datastore: Datastore) -> MetadataCache:
    """The cache of this datastore object, shared by every store over it in this process."""
    with _caches_lock:
        cache = _caches.get(datastore)
        if cache is None:
            cache = _caches[datastore] = MetadataCache()
        return cache
