"""Small helpers several test modules share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest
from laminar.configurations import datastores, executors

#: The two executors every flow-level behaviour is checked on.
EXECUTORS = [pytest.param(executors.Thread, id="thread"), pytest.param(executors.Process, id="process")]


def files(root: Path) -> list[str]:
    """Every file a datastore wrote below ``root``, ignoring the empty staging directory."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def executions_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("flows/*/executions/*"))


class CountingLocal(datastores.Local):
    """A Local datastore that records the keys it reads and writes and the prefixes it lists (in this
    process)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.reads: list[str] = []
        self.writes: list[str] = []
        self.listings: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)

    def open_read(self, key: str) -> BinaryIO:
        self.reads.append(key)
        return super().open_read(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().write_bytes(key, data)

    def list_prefix(self, prefix: str) -> list[str]:
        self.listings.append(prefix)
        return super().list_prefix(prefix)
