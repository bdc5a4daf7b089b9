"""Benchmark: what starting costs a flow that declares no parameters, against another source tree.

Declared parameters are checked with Pydantic, which is heavy to import; it must stay off the path
of flows that declare none (issue 26). Two programs, each in a fresh process: ``import laminar``,
and a one-layer flow without declared parameters run to the end (Thread executor, Local datastore
in a new temporary directory). Each runs against this checkout's ``laminar-core/src`` (A) and
against ``--baseline`` (B, another checkout's ``laminar-core/src``, e.g. one made with
``git archive 835feec laminar-core/src | tar -x -C /tmp/base``), interleaved A B A B ... so drift
falls on both, with one interpreter and one set of installed packages. Prints each side's median
wall time, the median of the per-pair ratios A/B, and whether A imported pydantic (it must not).

    .venv/bin/python benchmarks/startup.py --baseline /tmp/base/laminar-core/src [--pairs 20]

With ``--earlier PYTHON`` (an interpreter of a virtual environment where the earlier, unrelated
``laminar`` 2022.5a1 from PyPI is installed: ``uv venv /tmp/earlier && uv pip install --python
/tmp/earlier laminar==2022.5a1``), it also times the same one-layer flow on this checkout's default
(process) executor against that flow written for the earlier laminar, on its ``Thread`` executor (its
default, Docker, needs a daemon), interleaved the same way; and ``import laminar`` against bare
``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "laminar-core" / "src"

FLOW = """
import sys
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores

class One(Flow): ...

@One.register
class Only(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.out = parameters.n + 1

if flow := One(datastore=datastores.Local(sys.argv[1]), executor="thread"):
    assert flow(n=1).layer(Only).out == 2
print("pydantic" in sys.modules)
"""
EARLIER_FLOW = """
import sys
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors

class One(Flow): ...

@One.register
class Only(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.out = parameters.n + 1

if flow := One(datastore=datastores.Local(root=sys.argv[1]), executor=executors.Thread()):
    assert flow(n=1).layer(Only).out == 2
print("earlier")
"""
DEFAULT_EXECUTOR_FLOW = FLOW.replace(', executor="thread"', "")
PROGRAMS = {"import laminar": 'import sys, laminar; print("pydantic" in sys.modules)', "one-layer flow": FLOW}


def timed(code: str, source: Path | None, python: str = sys.executable) -> tuple[float, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAR_")}
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    with tempfile.TemporaryDirectory() as root:  # the flow's datastore, new each run (sys.argv[1])
        start = time.perf_counter()
        done = subprocess.run(
            [python, "-c", code, root], env=environment, capture_output=True, text=True, check=True
        )
        return time.perf_counter() - start, (done.stdout.strip().splitlines() or [""])[-1]


def side_by_side(
    name: str, a: tuple[str, Path | None, str], b: tuple[str, Path | None, str], pairs: int
) -> None:
    """``a`` and ``b`` (code, source tree, interpreter) interleaved; each side's median, A/B per pair."""
    timed(*a), timed(*b)  # warm-up
    first, second = [], []
    for _ in range(pairs):
        first.append(timed(*a)[0])
        second.append(timed(*b)[0])
    ratios = [x / y for x, y in zip(first, second, strict=True)]
    print(
        f"{name}: A {statistics.median(first) * 1000:.0f} ms, B {statistics.median(second) * 1000:.0f} ms, "
        f"A-B median {statistics.median(x - y for x, y in zip(first, second, strict=True)) * 1000:.0f} ms, "
        f"A/B median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="another checkout's laminar-core/src")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--earlier", help="the python of a virtual environment with laminar 2022.5a1")
    arguments = parser.parse_args()
    if arguments.earlier:
        side_by_side(
            "import laminar (A) against python -c pass (B)",
            ("import laminar", SOURCE, sys.executable),
            ("pass", None, sys.executable),
            arguments.pairs,
        )
        side_by_side(
            "one-layer flow, default executor (A) against the earlier laminar 2022.5a1 on Thread (B)",
            (DEFAULT_EXECUTOR_FLOW, SOURCE, sys.executable),
            (EARLIER_FLOW, None, arguments.earlier),
            arguments.pairs,
        )
    for name, code in PROGRAMS.items() if arguments.baseline else ():
        timed(code, SOURCE), timed(code, arguments.baseline)  # warm-up: bytecode compiled, files cached
        a, b, imported = [], [], set()
        for _ in range(arguments.pairs):
            seconds, said = timed(code, SOURCE)
            a.append(seconds)
            imported.add(said)
            b.append(timed(code, arguments.baseline)[0])
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        print(
            f"{name}: A {statistics.median(a) * 1000:.0f} ms, B {statistics.median(b) * 1000:.0f} ms, "
            f"A/B median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
            f"A imported pydantic: {', '.join(sorted(imported))}"
        )


if __name__ == "__main__":
    main()
