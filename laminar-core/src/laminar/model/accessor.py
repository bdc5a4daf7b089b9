"""Accessor: a lazy, indexable, sliceable, iterable view over several stored values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload


class Accessor(Sequence[Any]):
    """Reads item *i* only when it is asked for; nothing is read to build the Accessor or for ``len``."""

    def __init__(self, length: int, read: Callable[[int], Any], *, description: str = "") -> None:
        self._length = length
        self._read = read
        self._description = description

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(self._length))]
        if not isinstance(index, int):
            raise TypeError(f"Accessor indices must be integers or slices, not {type(index).__name__}")
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"Accessor index {index} out of range for {self._length} items")
        return self._read(position)

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._length):
            yield self._read(i)

    def __reduce__(self) -> tuple[Any, ...]:
        # Assigning an Accessor as an artifact (``self.values = upstream.values``) stores its items as a
        # list; the reader it closes over belongs to this process and cannot travel.
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"Accessor({self._description}{', ' if self._description else ''}len={self._length})"
