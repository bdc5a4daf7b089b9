"""The progress display: in place in a real pseudo-terminal, plain lines when piped, off on request.

Each test runs a flow script in a child process (the display is shown in the scheduler's process,
on its stderr): a ForEach of 50 splits on the Thread executor, each printing a line, one failing once
and retried. In a terminal the output is also replayed through a small terminal emulator, to check
that what the layers print survives the display's redraws line for line.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter, Retry


    class Shown(Flow): ...


    @Shown.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=list(range(parameters.n)))


    @Shown.register(
        foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]),
        retry=Retry(attempts=int(os.environ.get("ATTEMPTS", "2")), delay=0),
    )
    class Work(Layer):
        def __call__(self, items: Items) -> None:
            time.sleep(float(os.environ.get("SLEEP", "0.03")))
            print(f"split {items.item} says hello")
            marker = os.path.join(os.environ["MARKS"], str(items.item))
            if items.item == 7 and (os.environ.get("ALWAYS") or not os.path.exists(marker)):
                open(marker, "w").close()
                raise ValueError(f"item {items.item} is broken")
            self.value = items.item


    @Shown.register
    class Total(Layer):
        def __call__(self, work: Work) -> None:
            self.total = sum(work.value)
            print("the total is", self.total)


    executor = executors.Process(concurrency=4) if os.environ.get("EXECUTOR") == "process" else executors.Thread(concurrency=4)
    flow = Shown(datastore=datastores.Local(sys.argv[1]), executor=executor)
    if __name__ == "__main__":
        flow(n=50)
    """
)

HELLO = [f"split {n} says hello" for n in range(50)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    (tmp_path / "marks").mkdir()
    path = tmp_path / "shown.py"
    path.write_text(SCRIPT)
    return path


def environment(script: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAR_")}
    return {**env, "MARKS": str(script.parent / "marks"), "TERM": "xterm-256color", **extra}


def run_in_terminal(
    script: Path, *, env: dict[str, str], interrupt_after: float | None = None
) -> tuple[int, str]:
    """Run the script with stdout and stderr on a pseudo-terminal of 100x40; its exit code and output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, str(script), str(script.parent / "store")],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=script.parent,
    )
    os.close(slave)
    output = bytearray()
    started = time.monotonic()
    try:
        while True:
            if interrupt_after is not None and time.monotonic() - started > interrupt_after:
                process.send_signal(signal.SIGINT)
                interrupt_after = None
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
            assert time.monotonic() - started < 120, output.decode(errors="replace")
    finally:
        os.close(master)
        code = process.wait(timeout=30)
    return code, output.decode(errors="replace")


def screen(output: str) -> list[str]:
    """The lines a terminal shows (its scrollback included) after writing ``output``: enough of a
    VT100 for carriage return, line feed, cursor up/down/column and erasing lines; colours ignored."""
    lines: list[list[str]] = [[]]
    row = column = 0
    position = 0
    while position < len(output):
        character = output[position]
        if character == "\x1b":
            match = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])").match(output, position)
            if match is None:
                position += 2  # a two-character escape (none that matter here)
                continue
            arguments, command = match.groups()
            number = int(arguments) if arguments.isdigit() else None
            if command == "A":
                row = max(0, row - (number or 1))
            elif command == "B":
                row += number or 1
            elif command == "G":
                column = (number or 1) - 1
            elif command == "K":
                line = lines[row]
                if number == 2:
                    line.clear()
                elif number == 1:
                    line[: column + 1] = [" "] * min(len(line), column + 1)
                else:
                    del line[column:]
            while len(lines) <= row:
                lines.append([])
            position = match.end()
            continue
        if character == "\r":
            column = 0
        elif character == "\n":
            row += 1
            while len(lines) <= row:
                lines.append([])
        elif character >= " " or character == "\t":
            line = lines[row]
            while len(line) < column:
                line.append(" ")
            if column < len(line):
                line[column] = character
            else:
                line.append(character)
            column += 1
        position += 1
    return ["".join(line).rstrip() for line in lines]


def retry_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "retrying" in line]


def test_a_terminal_shows_progress_in_place_and_keeps_printed_lines_whole(script: Path) -> None:
    code, output = run_in_terminal(script, env=environment(script))
    assert code == 0, output
    assert "\x1b[1A" in output and "\x1b[2K" in output  # the display is redrawn in place
    assert "50/50" in output
    assert "3/3" in output
    for name in ("Items", "Work", "Total"):
        assert name in output
    shown = screen(output)
    retries = retry_lines(shown)
    assert len(retries) == 1, "\n".join(shown)
    assert (
        "layer Work split 7 attempt 0 failed (ValueError: item 7 is broken); retrying as attempt 1"
        in retries[0]
    )
    # What the layers printed is on the screen, each line whole and once, whatever the display drew.
    for line in [*HELLO, "the total is 1225"]:
        assert shown.count(line) == (2 if line == "split 7 says hello" else 1), (line, "\n".join(shown))
    assert any("layer Work finished: 50/50 splits (1 retried)" in line for line in shown)
    assert output.rindex("\x1b[?25h") > output.rindex("\x1b[?25l")  # the cursor is shown again


def test_a_failing_run_in_a_terminal_stops_the_display_and_names_the_failure(script: Path) -> None:
    code, output = run_in_terminal(script, env=environment(script, ALWAYS="1"))
    assert code != 0
    shown = screen(output)
    assert len(retry_lines(shown)) == 1
    failures = [line for line in shown if "failed on attempt" in line]
    assert (
        len(failures) == 1
        and "layer Work split 7 failed on attempt 1: ValueError: item 7 is broken" in failures[0]
    )
    assert output.rindex("\x1b[?25h") > output.rindex("\x1b[?25l")
    assert "ValueError: item 7 is broken" in "\n".join(shown[-5:])  # the traceback is printed after it, whole


def test_an_interrupted_run_in_a_terminal_restores_it(script: Path) -> None:
    code, output = run_in_terminal(script, env=environment(script, SLEEP="0.2"), interrupt_after=2.0)
    assert code != 0
    shown = screen(output)
    assert any("was stopped after" in line for line in shown), "\n".join(shown)
    assert output.rindex("\x1b[?25h") > output.rindex("\x1b[?25l")


def test_a_run_whose_workers_write_to_the_terminal_gets_plain_lines_there(script: Path) -> None:
    code, output = run_in_terminal(script, env=environment(script, EXECUTOR="process"))
    assert code == 0, output
    assert not ANSI.search(output)  # no redraw can draw over what the worker processes print
    shown = screen(output)
    assert len(retry_lines(shown)) == 1
    assert any("laminar: Shown" in line and "layer Work finished: 50/50 splits" in line for line in shown)
    assert "\n".join(shown).count("says hello") == 51


@pytest.mark.parametrize(
    ("value", "executor", "live"), [("plain", "thread", False), ("live", "process", True)]
)
def test_the_mode_can_be_chosen(script: Path, value: str, executor: str, live: bool) -> None:
    code, output = run_in_terminal(script, env=environment(script, LAMINAR_PROGRESS=value, EXECUTOR=executor))
    assert code == 0, output
    assert ("\x1b[1A" in output) is live
    assert len(retry_lines(screen(output))) == 1


def run_piped(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(script.parent / "store")],
        capture_output=True,
        text=True,
        env=env,
        cwd=script.parent,
        timeout=120,
    )


def test_piped_output_gets_plain_periodic_lines(script: Path) -> None:
    result = run_piped(script, environment(script, LAMINAR_PROGRESS_INTERVAL="0.2"))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\x1b" not in result.stdout
    lines = result.stderr.splitlines()
    assert all(line.startswith("laminar: ") for line in lines), result.stderr
    retries = retry_lines(lines)
    assert len(retries) == 1
    assert (
        "layer Work split 7 attempt 0 failed (ValueError: item 7 is broken); retrying as attempt 1"
        in retries[0]
    )
    for name in ("Items", "Work", "Total"):
        assert sum(f"layer {name} finished" in line for line in lines) == 1, result.stderr
    assert any("layer Work finished: 50/50 splits (1 retried)" in line for line in lines)
    assert any(re.search(r"layer Work: \d+/50 splits done", line) for line in lines), (
        result.stderr
    )  # periodic
    assert len(lines) < 25, result.stderr  # not a line per split
    assert result.stdout.count("says hello") == 51  # (lines of threads printing at once may interleave)


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_it_is_off_with_an_environment_variable(script: Path, value: str) -> None:
    result = run_piped(script, environment(script, LAMINAR_PROGRESS=value))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "the total is 1225" in result.stdout


def test_it_is_off_in_a_terminal_too(script: Path) -> None:
    code, output = run_in_terminal(script, env=environment(script, LAMINAR_PROGRESS="off"))
    assert code == 0, output
    assert not ANSI.search(output)
    assert "50/50" not in output and "retrying" not in output
    assert "\n".join(screen(output)).count("says hello") == 51  # (threads' prints may interleave)


def test_concurrent_and_nested_executions_in_one_process_are_told_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar import Flow, Layer, Parameters
    from laminar._plugins import progress
    from laminar.configurations import datastores, executors

    monkeypatch.delenv("LAMINAR_PROGRESS", raising=False)

    class Inner(Flow): ...

    @Inner.register
    class Leaf(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.value = parameters.x

    class Outer(Flow): ...

    @Outer.register
    class Nest(Layer):
        def __call__(self, parameters: Parameters) -> None:  # runs an execution of its own, in this process
            time.sleep(0.2)
            inner = Inner(datastore=datastores.Local(tmp_path / "inner"), executor=executors.Thread())
            self.value = inner(execution=f"inner-{parameters.x}", x=parameters.x).layer(Leaf).value

    def run(name: str, x: int) -> None:  # a flow object (and executor) per thread
        Outer(datastore=datastores.Local(tmp_path / "outer"), executor=executors.Thread())(
            execution=name, x=x
        )

    runs = [threading.Thread(target=run, args=(name, x)) for x, name in ((1, "a"), (2, "b"))]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)
    lines = capsys.readouterr().err.splitlines()
    for label in ("Outer a", "Outer b", "Inner inner-1", "Inner inner-2"):
        assert any(line.startswith(f"laminar: {label}: succeeded") for line in lines), lines
    assert sum("layer Nest finished" in line for line in lines) == 2
    assert sum("layer Leaf finished" in line for line in lines) == 2
    assert progress._display is None


CHAIN = textwrap.dedent(
    """
    import sys

    from laminar import Flow, Layer
    from laminar.configurations import datastores, executors


    class Quick(Flow): ...


    def first(self):
        self.value = 0


    previous = Quick.register(type("Step0", (Layer,), {"__call__": first}))
    def step(previous):
        def after(self, before):
            self.value = before.value + 1
        after.__annotations__ = {"before": previous, "return": None}
        return after


    for number in range(1, 30):
        previous = Quick.register(type(f"Step{number}", (Layer,), {"__call__": step(previous)}))

    if __name__ == "__main__":
        Quick(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())()
    """
)


def test_a_quick_chain_in_a_terminal_prints_its_lines_without_a_redraw_for_each(tmp_path: Path) -> None:
    # The lines of a chain's layer events queued between two draws are printed in one print: rich
    # draws the live display again below each print, which cost a quick chain a redraw an event.
    path = tmp_path / "quick.py"
    path.write_text(CHAIN)
    code, output = run_in_terminal(path, env=environment(path))
    assert code == 0, output
    shown = screen(output)
    for number in range(30):  # every event's line is there, once, in order
        assert sum(f"layer Step{number} finished" in line for line in shown) == 1, "\n".join(shown)
    finished = [line for line in shown if " finished: 1 split" in line]
    assert finished == sorted(finished, key=lambda line: int(line.split("layer Step")[1].split()[0]))
    redraws = output.count("\x1b[2K")  # the display's line is erased before each time it is drawn
    assert 0 < redraws < 15, f"the display drawn {redraws} times for a chain of 30 layers"


def test_the_live_display_is_first_drawn_by_its_thread_not_when_it_starts() -> None:
    # A quick run's display is drawn once, as it stops (then erased), not also as it starts: each
    # draw of rich's live display costs a fraction of a millisecond, a run's whole time when quick.
    import io

    from laminar._plugins import progress
    from rich.console import Console

    terminal = io.StringIO()
    display = progress._Live(Console(file=terminal, force_terminal=True, force_interactive=True, width=80))
    try:
        assert terminal.getvalue() == "\x1b[?25l"  # the cursor hidden, nothing drawn: its thread draws it
        display.message("a layer event")
    finally:
        display.stop()
    written = terminal.getvalue()
    assert written.count("a layer event") == 1
    assert written.count("\x1b[2K") <= 1, repr(written)  # drawn (and erased) once at most, at its stop
