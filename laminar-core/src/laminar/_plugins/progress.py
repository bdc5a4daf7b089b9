"""The progress display, an ordinary plugin on the lifecycle hooks: what a run is doing, on stderr.

In a terminal (stderr is an interactive terminal), for a run on the Thread executor (or with
``LAMINAR_PROGRESS=live``), a `rich` live display shows each execution's
layers done/total and each running ForEach layer's splits done/total, redrawn in place by a thread
of its own. Otherwise plain lines: when a layer starts, finishes or is skipped, and every
``LAMINAR_PROGRESS_INTERVAL`` seconds (default 10) one line per running ForEach layer with its
splits done/total, never a line per split. In both modes each retry and each split failing for good
is one line naming the layer, the split and the attempt, with the error; the lines of the layer and
the run that it ends do not repeat it, and say nothing of how to resume a stopped run (the error
raised to the caller does, once). The first line says where the run stores. ``LAMINAR_PROGRESS=0``
(or ``off``, ``false``, ``no``) turns it off. Only the scheduler's process shows it, never a worker.

The hooks run on the scheduler's event loop, so they only count and queue: split events update two
integers, and nothing is rendered or written to the terminal in a hook of the live display. While
the live display runs, what this process writes to ``sys.stdout`` and ``sys.stderr`` (a layer's
prints, logging) is printed above it, whole lines at a time, so the display never draws over it:
a small stream wrapper goes in below the log capture's tee (which keeps capturing exactly once) and
comes out when the display stops: at the end of the last execution running in this process,
whether it succeeded, failed or was interrupted. Lines that other processes write straight to the
terminal (Process and Dask workers) are not seen by it, so their runs get plain lines.

What a run's lines count lives in its run object's stash (``PROGRESS``); the display is the
process's one, shared by the runs going on at once, each a row of its own.
"""

from __future__ import annotations

import atexit
import collections
import functools
import io
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from laminar._plugins.hookspecs import hookimpl
from laminar._plugins.log_capture import _Tee
from laminar._runtime import background, environment
from laminar._runtime.executor import SplitNotStarted
from laminar._runtime.run import Run, StashKey
from laminar.errors import Interrupted

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from rich.console import Console, ConsoleOptions
    from rich.progress import Progress, TaskID
    from rich.segment import Segment

    from laminar._model.execution import Execution
    from laminar._model.layer import Layer

#: ``LAMINAR_PROGRESS`` set to one of these (any case) turns the display off.
ENVIRONMENT = "LAMINAR_PROGRESS"
OFF = frozenset({"0", "off", "false", "no"})
#: Seconds between the plain mode's lines on running ForEach layers.
INTERVAL_ENVIRONMENT = "LAMINAR_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0
#: Seconds between redraws of the live display.
REFRESH = 0.1
#: A partial line longer than this (characters) is printed above the live display without its end.
PARTIAL_LIMIT = 65_536


def enabled() -> bool:
    """Whether ``LAMINAR_PROGRESS`` allows the display."""
    return os.environ.get(ENVIRONMENT, "").strip().lower() not in OFF


def interval() -> float:
    """``LAMINAR_PROGRESS_INTERVAL`` in seconds; the default when unset or not a positive number."""
    try:
        seconds = float(os.environ.get(INTERVAL_ENVIRONMENT) or DEFAULT_INTERVAL)
    except ValueError:
        return DEFAULT_INTERVAL
    return seconds if seconds > 0 else DEFAULT_INTERVAL


# ---- what this process saw of its runs -----------------------------------------------------------
@dataclass(eq=False)
class _ExecutionRun:
    """What the display shows of one run (kept in the run object's stash, under ``PROGRESS``)."""

    flow: str
    id: str
    layers: int  # how many layers the flow has (the Parameters layer is not one)
    dependencies: Mapping[str, frozenset[str]]
    started: float
    display: _Display  # where its lines go: the process's one display, shared by the runs at once
    done: set[str] = field(default_factory=set)  # finished, skipped, or finished before a resume
    running: dict[str, _LayerRun] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)  # the errors a line of this run has shown

    @property
    def label(self) -> str:
        return f"{self.flow} {self.id}"

    def error(self, error: BaseException) -> str:
        """``: Type: message`` the first time a line of this run shows the error, then nothing: a
        failing split's error is shown where it failed, not again as its layer's and the run's. A stop
        (Ctrl-C) is said by the line itself: how to resume is for the caller to say."""
        if isinstance(error, KeyboardInterrupt):
            return ""
        text = _error(error)
        if text in self.told:
            return ""
        self.told.add(text)
        return f": {text}"

    def counts(self) -> str:
        return f"{len(self.done)}/{self.layers} layers"

    def mark_done(self, name: str) -> None:
        """``name`` is done, and so is every layer it depends on (a resume does not run those)."""
        waiting = [name]
        while waiting:
            layer = waiting.pop()
            if layer != "Parameters" and layer not in self.done:
                self.done.add(layer)
                waiting.extend(self.dependencies.get(layer, ()))


@dataclass(eq=False)
class _LayerRun:
    execution: _ExecutionRun
    name: str
    splits: int
    foreach: bool
    started: float
    done: int = 0  # splits ended for good, succeeded or not
    failed: int = 0
    retried: int = 0

    def counts(self) -> str:
        return f"{self.done}/{self.splits} splits"

    def notes(self) -> str:
        found = [f"{self.retried} retried"] if self.retried else []
        if self.failed:
            found.append(f"{self.failed} failed")
        return ", ".join(found)


PROGRESS = StashKey[_ExecutionRun]()
_lock = threading.RLock()  # taken when executions and layers start or end, never for a split
#: The display on this process's terminal while runs are going on: one, whatever runs at once.
_display: _Display | None = None


def _error(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


# ---- the two displays ------------------------------------------------------------------------------
class _Display:
    """Where the lines go; subclasses add what runs between events. ``runs``: the runs it shows
    (changed holding ``_lock``)."""

    def __init__(self) -> None:
        self.runs: list[_ExecutionRun] = []

    def message(self, text: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class _Plain(_Display):
    """Plain lines on ``sys.stderr``, and a thread writing one per running ForEach layer every so often."""

    def __init__(self, every: float) -> None:
        super().__init__()
        self._write_lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticking = background.start(functools.partial(self._tick, every), "laminar-progress")

    def message(self, text: str) -> None:
        line = f"laminar: {text}\n"
        with self._write_lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):  # a closed or broken stderr: progress is not worth failing for
                pass

    def _tick(self, every: float) -> None:
        while not self._stopped.wait(every):
            with _lock:
                running = [layer for run in self.runs for layer in run.running.values() if layer.foreach]
            for run in running:
                notes = run.notes()
                self.message(
                    f"{run.execution.label}: layer {run.name}: {run.counts()} done"
                    + (f" ({notes})" if notes else "")
                    + f" [{run.execution.counts()}]"
                )

    def stop(self) -> None:
        self._stopped.set()
        self._ticking.wait(timeout=5)


class _Raw:
    """Text rich writes as it is (a layer's own output, escapes and all)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        from rich.segment import Segment

        yield Segment(self.text)


class _Guard(io.TextIOBase):
    """Stands in for a stream writing to the display's terminal: whole lines are printed above the
    live display; partial ones wait for their end. Once the display stops it writes straight through."""

    def __init__(self, stream: TextIO, display: _Live) -> None:
        self.stream = stream
        self.display: _Live | None = display
        self._pending: dict[int, tuple[int, list[str]]] = {}  # thread -> (length, parts) of its partial line

    def write(self, text: str) -> int:
        display = self.display
        if display is None or display.drawing():
            return self.stream.write(text)
        thread = threading.get_ident()
        length, parts = self._pending.pop(thread, (0, []))
        cut = text.rfind("\n") + 1
        if cut == 0 and length + len(text) < PARTIAL_LIMIT:
            parts.append(text)
            self._pending[thread] = (length + len(text), parts)
            return len(text)
        parts.append(text[:cut] if cut else text)
        if cut and cut < len(text):
            self._pending[thread] = (len(text) - cut, [text[cut:]])
        self.stream.flush()
        display.write("".join(parts))
        return len(text)

    def release(self) -> None:
        """Write through from now on, starting with the partial lines waiting for their end."""
        self.display = None
        while self._pending:
            _, parts = self._pending.popitem()[1]
            self.stream.write("".join(parts))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _innermost(stream: Any) -> Any:
    """The stream below the log capture's tees and any guard."""
    while isinstance(stream, (_Tee, _Guard)):
        stream = stream.stream
    return stream


def _same_file(first: Any, second: Any) -> bool:
    try:
        return os.path.samestat(os.fstat(first.fileno()), os.fstat(second.fileno()))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _insert_guard(name: str, display: _Live) -> _Guard:
    """Put a guard on ``sys.<name>`` just above the real stream, below the log capture's tees."""
    holder: Any = sys
    attribute = name
    while isinstance(getattr(holder, attribute), _Tee):
        holder, attribute = getattr(holder, attribute), "stream"
    guard = _Guard(getattr(holder, attribute), display)
    setattr(holder, attribute, guard)
    return guard


def _remove_guard(name: str, guard: _Guard) -> None:
    guard.release()
    holder: Any = sys
    attribute = name
    while True:
        current = getattr(holder, attribute)
        if current is guard:
            setattr(holder, attribute, guard.stream)
            return
        if not isinstance(current, (_Tee, _Guard)):
            return  # replaced by someone else: the guard, released, just writes through
        holder, attribute = current, "stream"


class _Live(_Display):
    """A rich live display on the terminal, redrawn by a thread of its own."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().__init__()
        self.console = console
        self.progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[notes]}"),
            console=console,
            auto_refresh=False,  # redrawn by the ticking thread, never by a hook
            redirect_stdout=False,  # what the layers print goes through the guards instead
            redirect_stderr=False,
            transient=True,  # the lines printed above it tell how the run ended
        )
        self._messages: collections.deque[str] = collections.deque()
        self._draw = threading.RLock()
        self._drawing = threading.local()
        self._tasks: dict[object, TaskID] = {}
        self._stopped = threading.Event()
        self.progress.live.start(refresh=False)  # (Progress.start draws it at once: the first tick does)
        self._guards: list[tuple[str, _Guard]] = [("stderr", _insert_guard("stderr", self))]
        if _same_file(_innermost(sys.stdout), console.file):
            self._guards.append(("stdout", _insert_guard("stdout", self)))
        self._ticking = background.start(self._tick, "laminar-progress")

    def message(self, text: str) -> None:
        self._messages.append(text)  # printed by the drawing thread: a hook must not render

    def drawing(self) -> bool:
        """Whether this thread is drawing (what rich itself writes must not come back in)."""
        return bool(getattr(self._drawing, "on", False))

    def write(self, text: str) -> None:
        """Print a layer's own output above the display, after the lines of the events before it."""
        with self._draw:
            self._drawing.on = True
            try:
                self._print_messages()
                self.console.print(_Raw(text), end="", soft_wrap=True)
            finally:
                self._drawing.on = False

    def _print_messages(self) -> None:
        """Print the events' lines queued so far above the display, in one print: rich draws the
        live display again below what each print prints, so a line a print cost a chain's run a
        redraw a layer event, two a layer (figures: docs/performance.md)."""
        from rich.text import Text

        lines = []
        while self._messages:
            lines.append(self._messages.popleft())
        if lines:
            self.console.print(Text("\n".join(lines)), soft_wrap=True)

    def _tick(self) -> None:
        while not self._stopped.wait(REFRESH):
            try:
                self._redraw()
            except Exception:  # never let the display stop a run; the next tick tries again
                continue

    def _redraw(self) -> None:
        with self._draw:
            self._drawing.on = True
            try:
                self._print_messages()
                self._update()
                self.progress.refresh()
            finally:
                self._drawing.on = False

    def _update(self) -> None:
        with _lock:
            rows: list[tuple[object, str, int, int, str, str]] = []
            for run in self.runs:
                names = ", ".join(name for name, layer in run.running.items() if not layer.foreach)
                rows.append(
                    (run, run.label, len(run.done), run.layers, "layers", f"running {names}" if names else "")
                )
                for layer in run.running.values():
                    if layer.foreach:
                        rows.append(
                            (layer, f"  {layer.name}", layer.done, layer.splits, "splits", layer.notes())
                        )
        seen = set()
        for owner, description, done, total, unit, notes in rows:  # keyed by the run itself, not its id
            seen.add(owner)
            task = self._tasks.get(owner)
            if task is None:
                self._tasks[owner] = self.progress.add_task(
                    description, total=total, completed=done, unit=unit, notes=notes
                )
            else:
                self.progress.update(task, total=total, completed=done, notes=notes)
        for owner in [owner for owner in self._tasks if owner not in seen]:
            self.progress.remove_task(self._tasks.pop(owner))

    def stop(self) -> None:
        self._stopped.set()
        self._ticking.wait(timeout=5)
        try:
            with self._draw:
                self._drawing.on = True
                try:
                    self._print_messages()
                    self._update()
                    self.progress.stop()  # (draws it once more, then erases it: not drawn before that too)
                finally:
                    self._drawing.on = False
        finally:
            for name, guard in self._guards:
                _remove_guard(name, guard)


def _start_display(execution: Execution) -> _Display:
    """The live display on an interactive terminal when every split prints through this process (the
    Thread executor), or when ``LAMINAR_PROGRESS=live``; plain lines otherwise (``=plain`` forces them).

    Workers of other executors write straight to the terminal, where a redraw could draw over their
    lines: their runs get plain lines, which never touch what others wrote.
    """
    from laminar._runtime.thread import Thread

    mode = os.environ.get(ENVIRONMENT, "").strip().lower()
    in_process = isinstance(execution.flow.configuration.executor, Thread)
    stderr = _innermost(sys.stderr)
    if mode == "plain" or not (in_process or mode == "live") or not _may_be_terminal(stderr):
        return _Plain(interval())  # without importing rich, which a script's start would pay for
    from rich.console import Console

    console = Console(file=stderr) if stderr is not None else None
    if console is not None and console.is_interactive and mode != "plain" and (in_process or mode == "live"):
        try:
            return _Live(console)
        except Exception:  # an odd terminal: plain lines still tell the story
            pass
    return _Plain(interval())


#: The variables by which rich takes a stream that is not a terminal for one.
_TERMINAL_VARIABLES = ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _may_be_terminal(stream: Any) -> bool:
    """Whether rich could take ``stream`` for an interactive terminal: it is a tty, or a variable
    tells rich to treat it as one. False spares importing rich where it would say no anyway."""
    if any(name in os.environ for name in _TERMINAL_VARIABLES):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _stop_display() -> None:
    global _display
    with _lock:
        display, _display = _display, None
    if display is not None:
        display.stop()


atexit.register(_stop_display)  # a run that never reached its end (a second Ctrl-C) restores the terminal


# ---- the hooks -------------------------------------------------------------------------------------
@hookimpl
def laminar_execution_started(execution: Execution, run: Run) -> None:
    global _display
    if not enabled() or environment.runs_a_split():
        return
    plan = execution.flow.plan
    with _lock:
        if _display is None:
            _display = _start_display(execution)
        progress = _ExecutionRun(
            execution.flow.name,
            execution.id,
            sum(1 for name in plan.order if name != "Parameters"),
            plan.dependencies,
            time.monotonic(),
            _display,
        )
        _display.runs.append(progress)
    run.stash[PROGRESS] = progress
    configuration = getattr(execution.flow, "configuration", None)  # where it stores, so a user finds it
    stored = f", storing in {configuration.datastore.url}" if configuration is not None else ""
    layers = progress.layers
    progress.display.message(f"{progress.label}: started, {layers} layer{'' if layers == 1 else 's'}{stored}")


@hookimpl
def laminar_execution_finished(error: BaseException | None, run: Run) -> None:
    global _display
    progress = run.stash.get(PROGRESS, None)
    if progress is None:
        return
    del run.stash[PROGRESS]
    display = progress.display
    with _lock:
        display.runs.remove(progress)
        last = not display.runs
        if last and _display is display:  # a run starting from now on gets a display of its own
            _display = None
    took = _duration(time.monotonic() - progress.started)
    if error is None:
        progress.done.update(name for name in progress.dependencies if name != "Parameters")
        display.message(f"{progress.label}: succeeded in {took} [{progress.counts()}]")
    else:
        stopped = "was stopped" if isinstance(error, (Interrupted, KeyboardInterrupt)) else "failed"
        display.message(
            f"{progress.label}: {stopped} after {took} [{progress.counts()}]{progress.error(error)}"
        )
    if last:
        display.stop()


@hookimpl
def laminar_layer_started(layer: Layer, splits: int, run: Run) -> None:
    progress = run.stash.get(PROGRESS, None)
    if progress is None:
        return
    try:
        foreach = run.execution.flow.registry[layer.name].configuration.foreach is not None
    except (AttributeError, KeyError):
        foreach = splits != 1
    running = _LayerRun(progress, layer.name, splits, foreach, time.monotonic())
    with _lock:
        progress.running[layer.name] = running
        for dependency in progress.dependencies.get(layer.name, ()):
            progress.mark_done(dependency)
    if isinstance(progress.display, _Plain):  # the live display shows it as a row
        what = f"{splits} split{'' if splits == 1 else 's'}" if foreach else "1 split"
        progress.display.message(
            f"{progress.label}: layer {layer.name} started: {what} [{progress.counts()}]"
        )


@hookimpl
def laminar_layer_skipped(layer: Layer, reason: str, run: Run) -> None:
    progress = run.stash.get(PROGRESS, None)
    if progress is None:
        return
    with _lock:
        progress.mark_done(layer.name)
    progress.display.message(f"{progress.label}: layer {layer.name} skipped: {reason} [{progress.counts()}]")


@hookimpl
def laminar_split_retried(
    layer: Layer, index: int | None, attempt: int, error: BaseException, run: Run
) -> None:
    progress = run.stash.get(PROGRESS, None)
    running = progress.running.get(layer.name) if progress is not None else None
    if progress is None or running is None:
        return
    running.retried += 1
    split = "" if index is None else f" split {index}"
    progress.display.message(
        f"{progress.label}: layer {layer.name}{split} attempt {attempt - 1} failed "
        f"({_error(error)}); retrying as attempt {attempt}"
    )


@hookimpl
def laminar_split_finished(
    layer: Layer, index: int | None, attempt: int, error: BaseException | None, run: Run
) -> None:
    progress = run.stash.get(PROGRESS, None)
    if progress is None:
        return
    running = progress.running.get(layer.name)
    if running is None or isinstance(error, SplitNotStarted):  # never ran: neither done nor failed
        return
    if error is None:
        running.done += 1
    else:
        running.failed += 1
        split = "" if index is None else f" split {index}"
        progress.display.message(
            f"{progress.label}: layer {layer.name}{split} failed on attempt {attempt}{progress.error(error)}"
        )


@hookimpl
def laminar_layer_finished(layer: Layer, splits: int, error: BaseException | None, run: Run) -> None:
    progress = run.stash.get(PROGRESS, None)
    if progress is None:
        return
    with _lock:
        running = progress.running.pop(layer.name, None)
        if running is None:
            return
        if error is None:
            progress.mark_done(layer.name)
    took = _duration(time.monotonic() - running.started)
    if error is None:
        running.done = splits
        counted = running.counts() if running.foreach else "1 split"
        notes = running.notes()
        reused, why = run.explanations.get(layer.name, (None, None))
        if reused is not None:  # with reuse on: where its values come from, or why it ran
            progress.display.message(
                f"{progress.label}: layer {layer.name} reused from execution {reused}: {counted} "
                f"[{progress.counts()}]"
            )
            return
        notes = "; ".join(note for note in (notes, why) if note)
        progress.display.message(
            f"{progress.label}: layer {layer.name} finished: {counted}"
            + (f" ({notes})" if notes else "")
            + f" in {took} [{progress.counts()}]"
        )
    else:
        progress.display.message(
            f"{progress.label}: layer {layer.name} stopped after {took} ({running.counts()} done"
            f"{f', {running.failed} failed' if running.failed else ''}){progress.error(error)}"
        )
