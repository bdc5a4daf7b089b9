"""What the ``laminar ui`` tests share: flows to run, and the UI as a real server in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from laminar._ids import new_execution_id
from laminar._storage.records import seal, unseal

#: The `laminar` console script of this environment.
LAMINAR = str(Path(sys.executable).with_name("laminar"))

#: A repr and a value that would be markup if the page did not escape them.
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b id="planted-repr">bold-repr</b>'

#: A flow with a value of every kind the UI previews, one that fails, one held at a gate (a named
#: pipe: its layer blocks reading it until the test writes to it), and one that prints a line at
#: each of two gates.
FLOW = textwrap.dedent(
    f"""
    import os

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter

    HOSTILE = {HOSTILE!r}


    class Hostile:
        def __repr__(self) -> str:
            return HOSTILE


    class Shown(Flow): ...


    @Shown.register
    class Values(Layer):
        def __call__(self, parameters: Parameters) -> None:
            import matplotlib.figure  # here, so the other flows' runs do not import it
            import numpy
            import pandas
            import plotly.graph_objects

            print("values made")
            self.frame = pandas.DataFrame({{"city": ["Oslo", "Lima", "Pune"], "temp": [3.5, 19.0, 27.25]}})
            self.array = numpy.arange(1000, dtype="float64")
            figure = matplotlib.figure.Figure(figsize=(3, 2))
            figure.add_subplot().plot([1, 4, 2, 8])
            self.figure = figure
            self.plotly = plotly.graph_objects.Figure(
                plotly.graph_objects.Scatter(x=[1, 2, 3], y=[2, 1, 3], name="rise"),
                layout={{"title": {{"text": "a plotly figure"}}}},
            )
            self.hostile = Hostile()
            self.shard(item=[1, 5, 2, 9])


    @Shown.register(foreach=ForEach(parameters=[Parameter(layer=Values, attribute="item")]))
    class Square(Layer):
        def __call__(self, values: Values) -> None:
            self.squared = values.item ** 2


    @Shown.register
    class Total(Layer):
        def __call__(self, values: Values, square: Square) -> None:
            self.total = sum(square.squared) + len(values.frame)


    class Broken(Flow): ...


    @Broken.register
    class Fine(Layer):
        def __call__(self) -> None:
            self.ok = 1


    @Broken.register
    class Explode(Layer):
        def __call__(self, fine: Fine) -> None:
            raise ValueError("the gauge read " + HOSTILE)


    class Gated(Flow): ...


    @Gated.register
    class First(Layer):
        def __call__(self) -> None:
            self.ready = True


    @Gated.register
    class Gate(Layer):
        def __call__(self, first: First) -> None:
            print("waiting at the gate", flush=True)
            with open(os.environ["UI_TEST_GATE"]) as gate:  # blocks until the test writes
                self.opened = gate.read()
            print("through the gate", flush=True)


    @Gated.register
    class After(Layer):
        def __call__(self, first: First, gate: Gate) -> None:
            self.done = gate.opened


    class Queued(Flow): ...


    @Queued.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(item=[1, 2, 3])


    @Queued.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Each(Layer):
        def __call__(self, items: Items) -> None:
            self.value = items.item


    class Chatty(Flow): ...


    @Chatty.register
    class Talk(Layer):
        def __call__(self) -> None:
            for line, gate in (("first line", ""), ("second line", ".then")):
                print(line, flush=True)  # stored while the split runs: it flushed
                with open(os.environ["UI_TEST_GATE"] + gate) as opened:  # blocks until the test writes
                    opened.read()
            self.done = True
    """
)


def laminar(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``laminar`` command in a subprocess, as a user runs it."""
    return subprocess.run(
        [LAMINAR, *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def run(
    flow_file: Path, flow: str, datastore: str, execution: str, *parameters: str
) -> subprocess.CompletedProcess[str]:
    params = [item for pair in parameters for item in ("--param", pair)]
    return laminar(
        "run",
        f"{flow_file}:{flow}",
        "--datastore",
        datastore,
        "--executor",
        "thread",
        "--execution",
        execution,
        *params,
    )


def clone(root: Path, flow: str, execution: str, count: int) -> list[str]:
    """``count`` copies of a Local execution under new ids (ids Laminar makes, so they sort after the
    original): each record rewritten with its own id and sealed again with its checksum."""
    source = root / "flows" / flow / "executions" / execution
    made = []
    for _ in range(count):
        new = new_execution_id()
        target = source.parent / new
        shutil.copytree(source, target)
        for path in target.rglob("*.json"):
            data = path.read_bytes()
            if not data.startswith(b'{"sha256"'):  # a lease: not sealed
                path.write_bytes(data.replace(execution.encode(), new.encode()))
                continue
            record = unseal(data)
            record.pop("sha256", None)
            path.write_bytes(seal(json.loads(json.dumps(record).replace(execution, new))))
        made.append(new)
    return made


def without_dependencies(root: Path, flow: str, execution: str) -> None:
    """A Local execution's metadata as runs wrote it before they stored their flow's dependencies."""
    path = root / "flows" / flow / "executions" / execution / "execution.json"
    record = unseal(path.read_bytes())
    record.pop("sha256")
    assert record.pop("dependencies")
    path.write_bytes(seal(record))


@contextmanager
def ui_server(datastore: str, *arguments: str, cwd: Path | None = None) -> Iterator[str]:
    """``laminar ui DATASTORE --port 0`` running (no DATASTORE when ``""``); yields the URL it printed.
    Stopped (SIGTERM) after."""
    process = subprocess.Popen(
        [LAMINAR, "ui", *([datastore] if datastore else []), "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]  # the datastore, then the URL
        if not lines[1].startswith("http://"):
            process.kill()
            raise AssertionError(f"laminar ui did not print its URL: {lines} {process.communicate()[1]}")
        yield lines[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def opener(gate: Path) -> Callable[[], TextIO]:
    """Opens the named pipe ``gate`` for writing, in a thread: the call it returns gives the open
    pipe once the layer opened it to read (it is waiting there)."""
    opened: list[TextIO] = []
    thread = threading.Thread(target=lambda: opened.append(open(gate, "w")), daemon=True)  # noqa: SIM115
    thread.start()

    def waited() -> TextIO:
        thread.join(timeout=120)
        assert opened, f"no layer opened {gate}"
        return opened[0]

    return waited


class Background:
    """A ``laminar run`` subprocess held at a gate, for a test to release and join; :meth:`stop` kills
    it if it still runs (a test that failed before releasing it would leave it waiting for ever)."""

    def __init__(self, flow_file: Path, flow: str, datastore: str, execution: str, gate: Path) -> None:
        self.process = subprocess.Popen(
            [LAMINAR, "run", f"{flow_file}:{flow}", "--datastore", datastore, "--executor", "thread",
             "--execution", execution],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "UI_TEST_GATE": str(gate)},
        )  # fmt: skip

    def join(self) -> subprocess.CompletedProcess[str]:
        stdout, stderr = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, stdout, stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
