"""``file://`` — a directory on a local (or shared network) disk. The default datastore."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from laminar.storage.datastore import Datastore


class Local(Datastore):
    """Stores everything below ``root`` (default: ``.laminar`` in the working directory).

    Writes go to a temporary file in ``root/.staging`` and are renamed into place, so a reader never
    sees half a file, even if the writer is killed.
    """

    schemes = ("file",)
    max_workers = 4

    def __init__(self, root: str | os.PathLike[str] = ".laminar") -> None:
        super().__init__()
        self.root = os.path.abspath(os.fspath(root))

    @classmethod
    def from_url(cls, url: str) -> Local:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"not a local file URL: {url!r}; write file:///absolute/path")
        return cls(unquote(parsed.path) or "/")

    @property
    def url(self) -> str:
        return Path(self.root).as_uri()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def read_bytes(self, key: str) -> bytes:
        with open(self._path(key), "rb") as file:
            return file.read()

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def write_bytes(self, key: str, data: bytes) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.staging_directory())
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            self._move(temporary, key)
        except BaseException:
            _remove(temporary)
            raise

    def write_file(self, key: str, path: str) -> None:
        if os.path.dirname(os.path.abspath(path)) == self.staging_directory():
            self._move(path, key)  # same filesystem: a rename moves the bytes zero times
        else:
            with open(path, "rb") as file:
                self.write_bytes(key, file.read())

    def _move(self, temporary: str, key: str) -> None:
        destination = self._path(key)
        try:
            os.replace(temporary, destination)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            os.replace(temporary, destination)

    def staging_directory(self) -> str:
        staging = os.path.join(self.root, ".staging")
        os.makedirs(staging, exist_ok=True)
        return staging

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def list_prefix(self, prefix: str) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self._path(prefix.rstrip("/"))) if name != ".staging")
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        _remove(self._path(key))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
