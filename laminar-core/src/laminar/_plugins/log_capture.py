"""Log capture, an ordinary plugin: what each split attempt prints and logs is kept in the datastore.

Around every split attempt (the ``laminar_split_context`` hook, in whichever process runs it) the
thread running it gets a :class:`~laminar._storage.logs.LogWriter`, made when the attempt first
writes (most print nothing, and a writer each would cost them more than their own work).
``sys.stdout`` and ``sys.stderr`` are wrapped once per process in a tee that still writes
everything through (so output is shown live) and hands what the current thread writes to its
writer; a handler on the root logger does the same for ``logging`` records that pass their
logger's level. Output of threads a layer starts itself, and of C code writing to the file
descriptors directly, is not captured. The tee writes through whole lines only (see ``_Tee``), so
lines that splits print at once on threads do not glue together. What a split flushes (and each
``logging`` record) is stored while it runs, at most once a second (``LogWriter.flush``). A split
that failed because the datastore failed stores no more of its log: that would wait out another
storage deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from laminar._plugins.hookspecs import hookimpl
from laminar._storage.logs import LogWriter, cap_from_environment
from laminar.errors import DatastoreError

if TYPE_CHECKING:
    from laminar._model.layer import Layer

_current = threading.local()  # .capture: the _Capture of the split this thread runs, if any
_install_lock = threading.Lock()
_tees: list[_Tee] = []  # every tee this process installed, to end lines and write partials at exit
_handler: _CaptureHandler | None = None  # the handler on the root logger, once installed
#: A partial line longer than this (characters) is written without waiting for its end.
PARTIAL_LIMIT = 65_536


class _Capture:
    """One split attempt's capture: what its thread writes goes to a LogWriter made at the first write
    (where it stores, read of the split's layer then: most splits print nothing)."""

    __slots__ = ("_attempt", "_cap", "_index", "_layer", "_outer", "writer")

    def __init__(self, layer: Layer, index: int | None, attempt: int, cap: int) -> None:
        self._layer, self._index, self._attempt, self._cap = layer, index, attempt, cap
        self._outer: _Capture | None = None
        self.writer: LogWriter | None = None

    def write(self, text: str) -> None:
        writer = self.writer
        if writer is None:
            execution = self._layer.execution
            assert execution is not None
            flow = execution.flow
            where = (flow.name, execution.id, self._layer.name, self._index or 0, self._attempt)
            writer = self.writer = LogWriter(flow.configuration.datastore, *where, self._cap)
        writer.write(text)

    def __enter__(self) -> None:
        _install()
        self._outer = _capturing()
        _current.capture = self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _current.capture = self._outer
        for tee in _tees:
            if tee._partial:  # a line begun (most splits print nothing: no call then)
                tee.end_line()
        if self.writer is None:
            return
        if error is None:
            self.writer.close()
        elif isinstance(error, DatastoreError):
            # The store failed (it may have stopped answering): writing the rest of the log to it
            # would wait out another deadline. What the split printed was shown live.
            return
        else:
            with contextlib.suppress(Exception):  # the split's own error is the one to report
                self.writer.close()


def _capturing() -> _Capture | None:
    return getattr(_current, "capture", None)


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and to the current thread's log writer.

    It writes through whole lines: what a thread writes is held until it ends a line, then that
    line goes to ``stream`` in one call, so lines that threads print at once never glue together
    (``print`` writes its text and its end as two calls). A thread's partial line goes out as it is
    when that thread flushes the stream, when it grows past ``PARTIAL_LIMIT``, and when the process
    exits; the split a thread runs ends its partial line (see :meth:`end_line`).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._partial: dict[int, str] = {}  # thread ident -> the line it has begun
        self._lock = threading.RLock()  # reentrant: a signal handler may print during a write

    def write(self, text: str) -> int:
        writer = _capturing()
        if writer is not None:
            writer.write(text)
        thread = threading.get_ident()
        with self._lock:
            begun = self._partial.pop(thread, "")
            cut = text.rfind("\n") + 1
            if cut == 0 and len(begun) + len(text) < PARTIAL_LIMIT:
                if text or begun:
                    self._partial[thread] = begun + text
                return len(text)
            whole = text[:cut] if cut else text
            if cut and cut < len(text):
                self._partial[thread] = text[cut:]
            self.stream.write(begun + whole)
        return len(text)

    def end_line(self) -> None:
        """End the line this thread has begun, if any: its split is over, and another split's
        output must not continue it. Most splits print nothing: looked up without the lock first
        (only this thread adds its own partial line, so one missing now does not come meanwhile)."""
        thread = threading.get_ident()
        if thread not in self._partial:
            return
        with self._lock:
            begun = self._partial.pop(thread, "")
            if begun:
                self.stream.write(begun + "\n")

    def write_partials(self) -> None:
        """Write every thread's partial line as it is (the process is exiting)."""
        with self._lock:
            partials, self._partial = list(self._partial.values()), {}
            for begun in partials:
                self.stream.write(begun)
            self.stream.flush()

    def flush(self) -> None:
        with self._lock:
            begun = self._partial.pop(threading.get_ident(), "")
            if begun:
                self.stream.write(begun)
        self.stream.flush()
        capture = _capturing()
        if capture is not None and capture.writer is not None:
            capture.writer.flush()  # stored while the split runs, for whoever follows its log

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
            if writer.writer is not None:
                writer.writer.flush()


def _other_handlers(name: str, capture: logging.Handler) -> list[logging.Handler]:
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        found.extend(h for h in logger.handlers if h is not capture)
        logger = logger.parent if logger.propagate else None
    return found


def _install() -> None:
    """Wrap this process's stdout and stderr (again, if someone replaced them) and add the handler.
    Called around every split: what it finds in place is checked by identity first."""
    if (
        sys.stdout.__class__ is _Tee
        and sys.stderr.__class__ is _Tee
        and _handler is not None
        and _handler in logging.root.handlers
    ):
        return
    _install_slowly()


def _install_slowly() -> None:
    global _handler
    with _install_lock:
        if sys.stdout is not None and not isinstance(sys.stdout, _Tee):
            sys.stdout = _tee(sys.stdout)
        if sys.stderr is not None and not isinstance(sys.stderr, _Tee):
            sys.stderr = _tee(sys.stderr)
        installed = [handler for handler in logging.root.handlers if isinstance(handler, _CaptureHandler)]
        if installed:
            _handler = installed[0]
        else:
            _handler = _CaptureHandler()
            logging.getLogger().addHandler(_handler)


def _tee(stream: TextIO) -> _Tee:
    if not _tees:
        atexit.register(_write_partials)
    tee = _Tee(stream)
    _tees.append(tee)
    return tee


def _write_partials() -> None:
    for tee in _tees:
        with contextlib.suppress(Exception):  # a closed stream at exit: nothing more can be shown
            tee.write_partials()


@hookimpl
def laminar_split_context(
    layer: Layer, index: int | None, attempt: int
) -> contextlib.AbstractContextManager[None]:
    return _Capture(layer, index, attempt, cap_from_environment())
