"""Tracebacks users can read: the user's frames, wherever the split ran; Laminar's and asyncio's trimmed.

Where a split runs (a thread, a worker process, a Dask worker) :func:`remember` keeps the frames of
the layer's own code on the error, as plain ``(file, line, function)`` tuples that travel with it
when it is pickled back. :func:`describe` turns an error into the ``type`` / ``message`` /
``traceback`` mapping the run records store; :func:`for_user` trims the traceback the user sees
(``LAMINAR_DEBUG=1`` keeps every frame) and, when the layer ran in another process, chains the
layer's frames in as the cause, as ``concurrent.futures`` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import traceback
import types
from pathlib import Path

from laminar.errors import LayerTraceback

_ATTRIBUTE = "_laminar_frames"
_RAN = "_laminar_ran"
DEBUG = "LAMINAR_DEBUG"

#: Directories whose frames are the machinery's, not the user's.
_MACHINERY = (
    *(
        str(directory) + os.sep
        for directory in (
            Path(__file__).resolve().parents[1],  # the laminar package
            *(
                Path(module.__file__).resolve().parent
                for module in (asyncio, concurrent.futures)
                if module.__file__
            ),
        )
    ),
    str(Path(threading.__file__).resolve()),
)
_OTHER_MACHINERY = tuple(
    f"{os.sep}{name}{os.sep}"
    for name in ("pluggy", "cloudpickle", "distributed", "dask", "laminar_dask", "tornado")
)

Frame = tuple[str, int, str]  # file, line, function


def debugging() -> bool:
    """Whether the user asked for full tracebacks (``LAMINAR_DEBUG=1``)."""
    return os.environ.get(DEBUG, "").lower() not in ("", "0", "false", "no")


def _machinery(filename: str) -> bool:
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, RuntimeError, ValueError):
        resolved = filename
    if resolved.startswith(_MACHINERY) or filename.startswith("<frozen "):
        return True
    return any(part in resolved for part in _OTHER_MACHINERY)


def _user_frames(tb: types.TracebackType | None) -> list[Frame]:
    return [
        (frame.filename, frame.lineno or 0, frame.name)
        for frame in traceback.extract_tb(tb)
        if not _machinery(frame.filename)
    ]


def remember(error: BaseException, started: float | None = None, ended: float | None = None) -> None:
    """Keep the user's frames of ``error``'s traceback on it, and when the split ran, so they survive
    pickling back from a worker."""
    with contextlib.suppress(AttributeError, TypeError):  # an exception type without a __dict__
        if _ATTRIBUTE not in error.__dict__:
            error.__dict__[_ATTRIBUTE] = _user_frames(error.__traceback__)
        if started is not None and _RAN not in error.__dict__:
            error.__dict__[_RAN] = (started, ended if ended is not None else started)


def ran(error: BaseException) -> tuple[float, float] | None:
    """When the split that raised ``error`` ran, if it was measured where it ran."""
    found = getattr(error, "__dict__", {}).get(_RAN)
    return (float(found[0]), float(found[1])) if found else None


def _frames(error: BaseException) -> list[Frame]:
    remembered = error.__dict__.get(_ATTRIBUTE) if hasattr(error, "__dict__") else None
    return list(remembered) if remembered is not None else _user_frames(error.__traceback__)


def _format(frames: list[Frame]) -> str:
    summary = traceback.StackSummary.from_list([(file, line, name, None) for file, line, name in frames])
    return "".join(summary.format())


def describe(error: BaseException) -> dict[str, str]:
    """The ``type``, ``message`` and readable ``traceback`` text of ``error``, for the run records."""
    frames = _frames(error)
    text = "".join(traceback.format_exception_only(type(error), error))
    if frames:
        text = "Traceback (most recent call last):\n" + _format(frames) + text
    return {"type": type(error).__name__, "message": str(error), "traceback": text}


def for_user(error: BaseException) -> BaseException:
    """``error`` as the user sees it: Laminar's and asyncio's frames trimmed, the layer's frames shown.

    With ``LAMINAR_DEBUG`` set, the traceback is left whole.
    """
    if debugging():
        return error
    here = {(file, line, name) for file, line, name in _user_frames(error.__traceback__)}
    remembered = error.__dict__.get(_ATTRIBUTE) if hasattr(error, "__dict__") else None
    error.__traceback__ = _trim(error.__traceback__)
    if remembered and not set(remembered) <= here and error.__cause__ is None:
        # The layer ran in another process: its frames are not in this traceback.
        cause = LayerTraceback(
            '\n"""\nTraceback (most recent call last):\n' + _format(list(remembered)) + '"""'
        )
        error.__cause__ = cause
    return error


def _trim(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without the frames of the machinery (rebuilt; the frames themselves are kept)."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not _machinery(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: types.TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt
