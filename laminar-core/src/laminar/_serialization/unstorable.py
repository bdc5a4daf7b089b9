"""Values that cannot come back from storage: open files, sockets, locks and the like.

cloudpickle stores some of them as something else (an open file as a ``StringIO`` of what was left
to read, ``sys.stdout`` as the reader's own) and fails on others with a message that names neither
the value nor what to do. The default protocol asks :func:`refusal` about each object it pickles and
refuses these with one message saying what to store instead.

Only types of modules already imported are checked: a value cannot be of a type whose module was
never imported, and importing ``sqlite3`` or ``multiprocessing`` to look would cost every process.
"""

from __future__ import annotations

import io
import sys
from typing import Any

#: (module, class, what an instance is, what to store instead). Subclasses are refused too.
_KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("_io", "_IOBase", "an open file", "store what you read from it, or its path"),
    ("socket", "socket", "a socket", "store the address to connect to, and connect where it is used"),
    ("_thread", "LockType", "a lock", "create the lock where it is used"),
    ("_thread", "RLock", "a lock", "create the lock where it is used"),
    ("threading", "Condition", "a lock", "create the lock where it is used"),
    ("threading", "Semaphore", "a lock", "create the lock where it is used"),
    ("threading", "Event", "a lock", "create the lock where it is used"),
    ("threading", "Barrier", "a lock", "create the lock where it is used"),
    ("multiprocessing.synchronize", "SemLock", "a lock", "create the lock where it is used"),
    ("threading", "Thread", "a thread", "store what it computed"),
    ("subprocess", "Popen", "a running process", "store its output or its return code"),
    ("queue", "Queue", "a queue", "store a list of its items"),
    ("mmap", "mmap", "a memory map", "store bytes(...) of it, or the path of the file it maps"),
    ("sqlite3", "Connection", "a database connection", "store the rows you read, or the database's path"),
    ("sqlite3", "Cursor", "a database cursor", "store the rows you read (cursor.fetchall())"),
    ("types", "GeneratorType", "a generator", "store list(...) of what it yields"),
)
#: In-memory files come back as they were.
_KEPT = (io.BytesIO, io.StringIO)

_found: tuple[int, tuple[type, ...], dict[type, tuple[str, str]]] = (-1, (), {})


def _types() -> tuple[tuple[type, ...], dict[type, tuple[str, str]]]:
    """The refused types of the modules imported so far (looked up again once more are imported)."""
    global _found
    imported = len(sys.modules)
    if _found[0] != imported:
        kinds: dict[type, tuple[str, str]] = {}
        for module, name, what, instead in _KINDS:
            kind = getattr(sys.modules.get(module), name, None)
            if isinstance(kind, type):
                kinds.setdefault(kind, (what, instead))
        _found = (imported, tuple(kinds), kinds)
    return _found[1], _found[2]


def refused_types() -> tuple[type, ...]:
    """What :func:`refusal` may refuse: a value of none of these is never refused (a quick check)."""
    return _types()[0]


def refusal(value: Any, *, whole: bool) -> str | None:
    """Why ``value`` cannot be stored and what to store instead, or ``None`` if nothing says it cannot.

    ``whole``: ``value`` is the whole value being stored, not something inside it.
    """
    types, kinds = _types()
    if not isinstance(value, types) or isinstance(value, _KEPT):
        return None
    what, instead = next(found for kind, found in kinds.items() if isinstance(value, kind))
    kind = type(value)
    shown = f"{kind.__module__}.{kind.__qualname__}"
    name = getattr(value, "name", None) if what == "an open file" else None
    if isinstance(name, str):
        shown += f" {name!r}"
    return (
        f"{'it is' if whole else 'it holds'} {what} ({shown}), which cannot come back when the value is read "
        f"in another process or later; {instead} instead"
    )
