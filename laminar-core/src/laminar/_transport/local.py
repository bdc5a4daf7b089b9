"""``file://`` — a directory on a local (or shared network) disk. The default datastore."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from laminar._transport.datastore import Datastore
from laminar._transport.pieces import write_fd
from laminar._transport.staging_files import open_new

_READ = 1 << 20
#: A staging file's flags: written whole in binary (Windows' ``os.open`` would translate newlines).
_WRITE = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
#: How many directories a ``Local`` remembers to exist before it forgets them all: a bound on its
#: memory; one forgotten costs a ``mkdir`` that finds it, never a wrong write.
_KNOWN = 4096
_HOST = os.urandom(6).hex()  # with the pid and a counter: unique staging names, no syscall per write
_counter = itertools.count()
_process = f"{_HOST}.{os.getpid()}"  # this process's part of a staging name, renewed in a forked child


def _forked() -> None:
    global _process
    _process = f"{_HOST}.{os.getpid()}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class Local(Datastore):
    """Stores everything below ``root`` (default: ``.laminar`` in the working directory).

    Writes go to a temporary file in ``root/.staging`` and are renamed into place, so a reader never
    sees half a file, even if the writer is killed.

    It remembers the directories it made or found (``_known``), so a key in a new directory (a
    layer's record, a fresh execution's first files) costs a ``mkdir`` and the rename, not a rename
    that fails first; and a key in a known one only the rename. One removed meanwhile (``laminar
    gc``, :meth:`delete`, another process) fails the rename: it is made again and the rename retried.
    The staging directory, made once, is made again likewise when a staging file cannot be opened in
    it (``staging_files``).
    """

    schemes = ("file",)
    cheap_exists = True
    small_writes_inline = True
    atomic_create = True
    max_workers = 1  # small local writes are faster in a row than handed to threads
    # zstd compresses a DataFrame's ids, codes or timestamps several times slower than a local disk
    # takes bytes into its cache: compressing costs more time than the bytes it saves, unless they
    # shrink fifty-fold (zeros, long runs, sparse columns), which zstd compresses fast (figures:
    # docs/performance.md).
    worth_compressing = 0.02
    # ``write_file`` renames a staging file into place: a value past 1 MiB is serialized straight into
    # one, so its bytes are copied once (into the page cache), as a script writing a pickle file does.
    staged_in_memory = 1 << 20

    def __init__(self, root: str | os.PathLike[str] = ".laminar") -> None:
        super().__init__()
        self.root = os.path.abspath(os.fspath(root))
        self._known: set[str] = set()  # directories seen to exist (see the class docstring)

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
        # Keys are validated '/'-separated names (see laminar._names): no '..', no absolute parts.
        return f"{self.root}{os.sep}{key.replace('/', os.sep) if os.sep != '/' else key}"

    def read_bytes(self, key: str) -> bytes:
        fd = os.open(self._path(key), os.O_RDONLY)  # raw calls: most keys are small metadata
        try:
            # One read of the file's size (and a byte more, to see it end), not of a fixed 1 MiB:
            # making a 1 MiB bytes object for a small file costs several times the read itself; and
            # a larger file is read in one call rather than in chunks joined after.
            size = os.fstat(fd).st_size
            first = os.read(fd, size + 1)
            if len(first) == size or not first:
                return first  # its whole size and no byte more: the end, no second call
            chunks = [first]  # it grew since, or the read stopped short (Linux reads 2 GiB at most)
            while chunk := os.read(fd, _READ):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def write_bytes(self, key: str, data: bytes) -> None:
        temporary = f"{self.staging_directory()}{os.sep}{_process}.{next(_counter)}"
        try:
            fd = open_new(temporary, _WRITE | os.O_EXCL, 0o644)  # .staging made again if removed
            try:
                write_fd(fd, data)
            finally:
                os.close(fd)
            self._move(temporary, key)
        except BaseException:
            _remove(temporary)
            raise

    def create(self, key: str, data: bytes) -> bool:
        """Atomic: the bytes are written to a staging file, then hard-linked into place, which fails
        if the key exists; a reader never sees a part, and of two racing creators exactly one wins."""
        temporary = f"{self.staging_directory()}{os.sep}{_process}.{next(_counter)}"
        try:
            # As ``open(temporary, "wb")`` made it (its flags and mode), in raw calls: its
            # FileExistsError below must only ever mean the key exists.
            fd = open_new(temporary, _WRITE | os.O_TRUNC, 0o666)
            try:
                write_fd(fd, data)
            finally:
                os.close(fd)
            self._place(os.link, temporary, key)
            return True
        except FileExistsError:
            return False
        finally:
            _remove(temporary)

    def write_file(self, key: str, path: str) -> None:
        if os.path.dirname(os.path.abspath(path)) == self.staging_directory():
            self._move(path, key)  # same filesystem: a rename moves the bytes zero times
        else:
            super().write_file(key, path)

    def _move(self, temporary: str, key: str) -> None:
        self._place(os.replace, temporary, key)

    def _place(self, place: Callable[[str, str], None], temporary: str, key: str) -> None:
        """``place(temporary, path of key)`` (a rename, or a link), its directory made first unless
        known to exist, and made again if it was removed since this process saw it."""
        destination = self._path(key)
        directory = os.path.dirname(destination)
        if directory not in self._known:
            self._directory(directory)
        try:
            place(temporary, destination)
        except FileNotFoundError:  # removed since this process saw it
            self._directory(directory, gone=True)
            place(temporary, destination)

    def _directory(self, directory: str, *, gone: bool = False) -> None:
        """Make ``directory`` unless it exists, and its missing parents, and remember them (``gone``:
        it was known, and is not there any more). Most often only it is missing (a layer's own
        directory, a blob's two-letter one): one ``mkdir``; a parent missing too, one more for each,
        found by the ``mkdir`` that fails (not ``makedirs``' look at each parent first)."""
        known = self._known
        if gone:
            known.discard(directory)
        missing = []
        while True:
            try:
                os.mkdir(directory)
            except FileExistsError:  # made meanwhile, or a file there (the write then says so)
                pass
            except FileNotFoundError:  # its parent is missing too
                parent = os.path.dirname(directory)
                if parent == directory:
                    raise
                known.discard(parent)
                missing.append(directory)
                directory = parent
                continue
            break
        for child in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(child)
        if len(known) >= _KNOWN:
            known.clear()
        known.add(directory)
        known.update(missing)

    def staging_directory(self) -> str:
        staging: str | None = self.__dict__.get("_staging")
        if staging is None:
            staging = os.path.join(self.root, ".staging")
            os.makedirs(staging, exist_ok=True)
            self._staging = staging
        return staging

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list_prefix(self, prefix: str) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self._path(prefix.rstrip("/"))) if name != ".staging")
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        path = self._path(key)
        _remove(path)
        # Like an object store, keep no empty "directories" behind (they would still be listed).
        directory = os.path.dirname(path)
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                break
            self._known.discard(directory)
            directory = os.path.dirname(directory)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_known", None)  # what this process saw: a copy elsewhere (a worker) sees for itself
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._known = set()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
