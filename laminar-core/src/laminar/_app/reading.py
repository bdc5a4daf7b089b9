"""Importing a flow file to read it: a run the file starts at import time is refused, never started.

The ``laminar`` command imports a user's file to find its flow. A script without the execution
guard (``flow = MyFlow(); flow()`` at module level) would start a real run on every ``laminar
show``; while a file is imported for reading, ``Execution.run`` raises :class:`RunAtImport` before
anything is stored, and the import stops there. The state also names the file's folder, where the
default datastore is looked for after the working directory (see ``laminar._plugins.discovery``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

#: The flow files being imported for reading, innermost last. A context variable: another thread of
#: the process (a run a long-lived program started) is not affected by this thread's import.
_files: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("laminar_reading", default=())


class RunAtImport(BaseException):
    """A flow file started a run while it was imported for reading; nothing was stored.

    A ``BaseException``, so an ``except Exception`` around the script's ``flow()`` does not let the
    import go on as if the run had happened.
    """

    def __init__(self, flow: str) -> None:
        super().__init__(f"flow {flow} was run while its file was imported for reading")
        self.flow = flow


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """While it lasts, no execution runs in this thread, and ``path``'s folder is searched for a
    default datastore too."""
    token = _files.set((*_files.get(), path.resolve()))
    try:
        yield
    finally:
        _files.reset(token)


def refuse_run(flow: str) -> None:
    """Raise :class:`RunAtImport` if a flow file is being imported for reading."""
    if _files.get():
        raise RunAtImport(flow)


def search_folders() -> tuple[Path, ...]:
    """Where a flow built now looks for its default datastore: the working directory, then the
    folder of the flow file being read, if any."""
    folders = [Path.cwd()]
    folders.extend(path.parent for path in reversed(_files.get()) if path.parent not in folders)
    return tuple(folders)
