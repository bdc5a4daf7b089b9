"""Log capture, an ordinary plugin: what each split attempt prints and logs is kept in the datastore.

Around every split attempt (the ``laminar_split_context`` hook, in whichever process runs it) the
thread running it gets a :class:`~laminar._storage.logs.LogWriter`, made when the attempt first
writes (most print nothing, and a writer each would cost them more than their own work).
``sys.stdout`` and ``sys.stderr`` are wrapped once per process in a tee that still writes
everything through (so output is shown live) and hands what the current thread writes to its
writer; a handler on the root logger does the same for ``logging`` records that pass their
logger's level. Output of threads a layer starts itself, and of C code writing to the file
descriptors directly, is not captured.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from laminar._plugins.hookspecs import hookimpl
from laminar._storage.logs import LogWriter, cap_from_environment

if TYPE_CHECKING:
    from laminar._model.layer import Layer
    from laminar._transport.datastore import Datastore

_current = threading.local()  # .capture: the _Capture of the split this thread runs, if any
_install_lock = threading.Lock()


class _Capture:
    """One split attempt's capture: what its thread writes goes to a LogWriter made at the first write."""

    __slots__ = ("_cap", "_datastore", "_outer", "_where", "writer")

    def __init__(self, datastore: Datastore, where: tuple[str, str, str, int, int], cap: int) -> None:
        self._datastore, self._where, self._cap = datastore, where, cap
        self._outer: _Capture | None = None
        self.writer: LogWriter | None = None

    def write(self, text: str) -> None:
        writer = self.writer
        if writer is None:
            writer = self.writer = LogWriter(self._datastore, *self._where, self._cap)
        writer.write(text)

    def __enter__(self) -> None:
        _install()
        self._outer = _capturing()
        _current.capture = self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _current.capture = self._outer
        if self.writer is None:
            return
        if error is None:
            self.writer.close()
        else:
            with contextlib.suppress(Exception):  # the split's own error is the one to report
                self.writer.close()


def _capturing() -> _Capture | None:
    return getattr(_current, "capture", None)


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and to the current thread's log writer."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        writer = _capturing()
        if writer is not None:
            writer.write(text)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _CaptureHandler(logging.Handler):
    """Hands ``logging`` records to the current thread's log writer, unless a stream captures them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        handlers = _other_handlers(record.name, self)
        writer = _capturing()
        if not handlers:
            # This handler must not silence Python's last resort (warnings to stderr when logging is
            # not configured); the record is kept in this handler's format, not the last resort's.
            if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                _current.capture = None
                try:
                    logging.lastResort.handle(record)
                finally:
                    _current.capture = writer
        elif any(isinstance(getattr(h, "stream", None), _Tee) for h in handlers):
            return  # a handler writes it to a captured stream: kept as that handler wrote it
        if writer is not None:
            writer.write(self.format(record) + "\n")


def _other_handlers(name: str, capture: logging.Handler) -> list[logging.Handler]:
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        found.extend(h for h in logger.handlers if h is not capture)
        logger = logger.parent if logger.propagate else None
    return found


def _install() -> None:
    """Wrap this process's stdout and stderr (again, if someone replaced them) and add the handler."""
    if isinstance(sys.stdout, _Tee) and isinstance(sys.stderr, _Tee) and _installed_handler():
        return
    with _install_lock:
        if sys.stdout is not None and not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if sys.stderr is not None and not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)
        if not _installed_handler():
            logging.getLogger().addHandler(_CaptureHandler())


def _installed_handler() -> bool:
    return any(isinstance(handler, _CaptureHandler) for handler in logging.root.handlers)


@hookimpl
def laminar_split_context(
    layer: Layer, index: int | None, attempt: int
) -> contextlib.AbstractContextManager[None]:
    execution = layer.execution
    assert execution is not None
    where = (execution.flow.name, execution.id, layer.name, index or 0, attempt)
    return _Capture(execution.flow.configuration.datastore, where, cap_from_environment())
