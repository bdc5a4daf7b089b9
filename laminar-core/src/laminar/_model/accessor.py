"""Accessor: a lazy, indexable, sliceable, iterable view over several stored values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

WINDOW = 64  # items fetched together when iterating or slicing


class Accessor(Sequence[Any]):
    """Reads item *i* only when it is asked for; nothing is read to build the Accessor or for ``len``.

    Iteration and slices fetch growing windows (``first_window`` items, then twice as many, ... up to
    ``WINDOW``) through ``read_many`` when one is given, so they are read several at once (an object
    store's parallel requests, a local disk's reads one a core); at most one window is held at once.

    Over the splits of a foreach layer, some splits may have no value (a split that ``Catch`` ended
    before it assigned the attribute): ``missing`` names them, reading one raises an error naming
    them all, and ``skip_missing()`` / ``fill_missing(value)`` give views of what exists.
    """

    def __init__(
        self,
        length: int,
        read: Callable[[int], Any],
        *,
        read_many: Callable[[Sequence[int]], list[Any]] | None = None,
        description: str = "",
        missing: Callable[[], Sequence[int]] | None = None,
        first_window: int = 1,
    ) -> None:
        self._length = length
        self._first_window = max(1, min(first_window, WINDOW))
        self._read = read
        self._read_many = read_many or (lambda indices: [read(i) for i in indices])
        self._description = description
        self._find_missing = missing
        self._missing: tuple[int, ...] | None = None if missing is not None else ()
        self._skipped: tuple[int, ...] = ()

    @property
    def missing(self) -> tuple[int, ...]:
        """The positions that have no value, in order: the splits that finished without assigning
        the attribute. Found from the splits' records (once), without reading any value."""
        if self._missing is None:
            assert self._find_missing is not None
            self._missing = tuple(sorted(self._find_missing()))
        return self._missing

    @property
    def skipped(self) -> tuple[int, ...]:
        """The positions of the Accessor that ``skip_missing()`` left out (empty for any other)."""
        return self._skipped

    def skip_missing(self) -> Accessor:
        """What exists: a view without the positions that have no value (``skipped`` names them)."""
        missing = self.missing
        if not missing:
            return self
        left_out = set(missing)
        present = [position for position in range(self._length) if position not in left_out]
        view = Accessor(
            len(present),
            lambda i: self._read(present[i]),
            read_many=lambda indices: self._read_many([present[i] for i in indices]),
            description=f"{self._description}, {len(missing)} missing skipped",
            first_window=self._first_window,
        )
        view._skipped = missing
        return view

    def fill_missing(self, value: Any = None) -> Accessor:
        """A view that gives ``value`` at each position that has no value (``missing`` still names them)."""
        missing = self.missing
        if not missing:
            return self
        absent = set(missing)

        def read_many(indices: Sequence[int]) -> list[Any]:
            found = iter(self._read_many([i for i in indices if i not in absent]))
            return [value if i in absent else next(found) for i in indices]

        view = Accessor(
            self._length,
            lambda i: value if i in absent else self._read(i),
            read_many=read_many,
            description=f"{self._description}, {len(missing)} missing as {value!r}",
            first_window=self._first_window,
        )
        view._missing = missing
        return view

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
        # Read ahead like a file system: the first window (as many items as are read at once: taking
        # the first item costs no longer than reading it alone), then twice as many, ... up to WINDOW.
        start, size = 0, self._first_window
        while start < len(indices):
            yield from self._read_many(indices[start : start + size])
            start, size = start + size, min(size * 2, WINDOW)

    def __reduce__(self) -> tuple[Any, ...]:
        # Assigning an Accessor as an artifact (``self.values = upstream.values``) stores its items as a
        # list; the reader it closes over belongs to this process and cannot travel.
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"Accessor({self._description}{', ' if self._description else ''}len={self._length})"
