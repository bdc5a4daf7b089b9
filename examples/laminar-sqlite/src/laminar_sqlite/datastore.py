"""``sqlite:///path/to/db.sqlite`` — every key in one table of one SQLite file.

A complete third-party datastore plugin in about a hundred lines: it implements the five primitives
of :class:`laminar.plugins.Datastore`, gives itself a URL scheme, stays picklable, and is
registered through the ``laminar`` entry-point group (see ``plugin.py`` and ``pyproject.toml``).

URLs follow SQLAlchemy's convention: ``sqlite:///relative/path.sqlite`` (three slashes) is relative to
the working directory, ``sqlite:////absolute/path.sqlite`` (four) is absolute. The path is made
absolute when the datastore is created, so processes started elsewhere find the same file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any
from urllib.parse import unquote, urlparse

from laminar.errors import ConfigurationError
from laminar.plugins import Datastore

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS laminar_objects (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
)


_SETUP = threading.Lock()


def _set_up(connection: sqlite3.Connection, *, patience: float) -> None:
    """WAL mode and the table. Changing the journal mode takes a lock that SQLite's busy timeout does
    not wait for, so another process setting up the same file is waited for here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            connection.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLite(Datastore):
    """Stores each key as one row of the ``laminar_objects`` table in the SQLite file ``path``."""

    schemes = ("sqlite",)
    # SQLite serializes writers; a few threads still overlap reads with each other.
    max_workers = 4

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = timeout
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str) -> SQLite:
        parsed = urlparse(url)
        if parsed.scheme != "sqlite" or parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"not a SQLite URL: {url!r}; write sqlite:///path/to/db.sqlite")
        path = unquote(parsed.path)
        if path.startswith("/"):
            path = path[1:]  # sqlite:///x -> "x" (relative); sqlite:////x -> "/x" (absolute)
        if not path or path.endswith("/"):
            raise ConfigurationError(
                f"the SQLite URL {url!r} names no file; write sqlite:///path/to/db.sqlite"
            )
        return cls(path)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"  # self.path is absolute, so this has four slashes

    # ---- one connection per thread -------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            directory = os.path.dirname(self.path)
            os.makedirs(directory, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            with _SETUP:  # threads of this process set the database up one at a time
                _set_up(connection, patience=self.timeout)
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    # ---- primitives ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        row = self._connection().execute("SELECT value FROM laminar_objects WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise FileNotFoundError(f"no key {key!r} in {self.url}")
        return bytes(row[0])

    def write_bytes(self, key: str, data: bytes) -> None:
        # One statement is one transaction: readers see the old row or the new one, never half.
        self._connection().execute(
            "INSERT INTO laminar_objects (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, sqlite3.Binary(data)),
        )

    def exists(self, key: str) -> bool:
        row = self._connection().execute("SELECT 1 FROM laminar_objects WHERE key = ?", (key,)).fetchone()
        return row is not None

    def list_prefix(self, prefix: str) -> list[str]:
        # A range scan on the primary key: every key that starts with ``prefix`` sorts in
        # [prefix, prefix + U+10FFFF), so no row outside the prefix is read.
        rows = self._connection().execute(
            "SELECT key FROM laminar_objects WHERE key >= ? AND key < ?", (prefix, prefix + "\U0010ffff")
        )
        names = {key[len(prefix) :].split("/", 1)[0] for (key,) in rows}
        names.discard("")
        return sorted(names)

    def delete(self, key: str) -> None:
        self._connection().execute("DELETE FROM laminar_objects WHERE key = ?", (key,))

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        super().close()

    # ---- pickling: connections stay behind, the path travels -----------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()
