"""Accessor: a lazy, indexable, sliceable, iterable view over several stored values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

WINDOW = 64  # items fetched together when iterating or slicing


class Accessor(Sequence[Any]):
    """Reads item *i* only when it is asked for; nothing is read to build the Accessor or for ``len``.

    Iteration and slices fetch growing windows (1, 2, 4, ... ``WINDOW`` items) through ``read_many``
    when one is given, so an object store serves them in parallel; at most one window is held at once.
    """

    def __init__(
        self,
        length: int,
        read: Callable[[int], Any],
        *,
        read_many: Callable[[range], list[Any]] | None = None,
        description: str = "",
    ) -> None:
        self._length = length
        self._read = read
        self._read_many = read_many or (lambda indices: [read(i) for i in indices])
        self._description = description

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(self._windows(range(*index.indices(self._length))))
        if not isinstance(index, int):
            raise TypeError(f"Accessor indices must be integers or slices, not {type(index).__name__}")
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"Accessor index {index} out of range for {self._length} items")
        return self._read(position)

    def __iter__(self) -> Iterator[Any]:
        return self._windows(range(self._length))

    def _windows(self, indices: range) -> Iterator[Any]:
        # Read ahead like a file system: 1 item, then 2, 4, ... up to WINDOW, so taking the first
        # item reads one artifact and a full pass still fetches in parallel batches.
        start, size = 0, 1
        while start < len(indices):
            yield from self._read_many(indices[start : start + size])
            start, size = start + size, min(size * 2, WINDOW)

    def __reduce__(self) -> tuple[Any, ...]:
        # Assigning an Accessor as an artifact (``self.values = upstream.values``) stores its items as a
        # list; the reader it closes over belongs to this process and cannot travel.
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"Accessor({self._description}{', ' if self._description else ''}len={self._length})"
