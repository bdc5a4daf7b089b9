"""Splits a reused layer borrows: read in place from the execution that stored them.

A reused layer's record (``Record.borrowed``) names, per execution, the runs of its split indices
that execution stored, and where each run starts there. Its readers follow the pointer to that
execution's own batches, so reusing a layer writes one record whatever its size, and every reader
(results, ``show``, ``report``, ``verify``, resume, downstream layers) reads the same split records
the other execution wrote. Pointers are resolved when they are written: one always names the
execution whose batches hold the splits, never one that borrowed them in turn.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from laminar._storage.records import Borrowed, Record

#: Where a split's record is stored: an execution, and the split's index there.
Place = tuple[str, int]


def fold(places: Mapping[int, Place]) -> dict[str, Borrowed]:
    """Split index here -> its place, as the runs ``Record.borrowed`` stores: consecutive indices
    whose places are consecutive splits of one execution make one run."""
    found: dict[str, list[tuple[int, int, int]]] = {}
    previous: tuple[int, str, int] | None = None
    for index, (execution, there) in sorted(places.items()):
        runs = found.setdefault(execution, [])
        if previous == (index - 1, execution, there - 1):
            first, _, start = runs[-1]
            runs[-1] = (first, index, start)
        else:
            runs.append((index, index, there))
        previous = (index, execution, there)
    return {execution: tuple(runs) for execution, runs in sorted(found.items())}


class Lent:
    """Finds where a split of a layer whose record borrows is stored: one bisection per lookup."""

    def __init__(self, record: Record) -> None:
        spans = sorted(
            (first, last, execution, there)
            for execution, runs in record.borrowed.items()
            for first, last, there in runs
        )
        self.firsts = [span[0] for span in spans]
        self.spans = spans

    @property
    def executions(self) -> set[str]:
        return {span[2] for span in self.spans}

    def find(self, index: int) -> Place | None:
        """The execution and index split ``index`` is stored under, or None if the layer holds it."""
        position = bisect.bisect_right(self.firsts, index) - 1
        if position < 0:
            return None
        first, last, execution, there = self.spans[position]
        return (execution, there + index - first) if index <= last else None

    def indices(self) -> Iterable[int]:
        """Every borrowed split index, in order."""
        for first, last, _, _ in self.spans:
            yield from range(first, last + 1)


def place(lent: Lent | None, execution: str, index: int) -> Place:
    """Where split ``index`` of ``execution`` (whose record borrows per ``lent``) is stored: what a
    new pointer to it names."""
    return (lent.find(index) if lent is not None else None) or (execution, index)


def resolve(lent: Lent | None, execution: str, indices: Iterable[int]) -> dict[int, Place]:
    """``place`` of each of ``indices``."""
    return {index: place(lent, execution, index) for index in indices}
