"""The default datastore: the nearest ``.laminar`` directory, found as git finds ``.git``.

A run started in ``etl/`` stores in ``etl/.laminar``; a command started later in ``etl/notebooks/``
finds it by looking in its working directory, then in each parent up to the root. When no folder
has one, a new ``.laminar`` is made in the first folder searched (the working directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The directory name searched for.
DIRECTORY = ".laminar"


@dataclass(frozen=True)
class Found:
    """The default datastore's directory, and how it was found (for messages saying where)."""

    path: Path
    searched: tuple[Path, ...]  # the folders the search started from, each followed by its parents
    start: Path | None  # the one of them it was found from; None: none has one, so it is new

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def describe(self) -> str:
        """Where the search looked: ``the nearest .laminar to /home/ada/etl``, or that none was found."""
        if self.start is None:
            where = ", nor in ".join(f"{folder} or its parents" for folder in self.searched)
            return f"no {DIRECTORY} in {where}"
        skipped = self.searched[: self.searched.index(self.start)]
        before = "".join(f", none being in {folder} or its parents" for folder in skipped)
        return f"the nearest {DIRECTORY} to {self.start}{before}"


def nearest(starts: Sequence[Path]) -> Found:
    """The nearest ``.laminar`` directory to the first of ``starts`` (or its parents) that has one;
    else ``.laminar`` in the first of ``starts``, not created yet."""
    searched = tuple(Path(start).resolve() for start in starts)
    for start in searched:
        for folder in (start, *start.parents):
            candidate = folder / DIRECTORY
            if candidate.is_dir():
                return Found(candidate, searched, start)
    return Found(searched[0] / DIRECTORY, searched, None)
