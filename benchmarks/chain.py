"""Benchmark: a chain of 50 small layers, each passing a small dict to the next.

Measured in the same run, interleaved (A B A B ...):

* Laminar: 50 layers ``Step0 -> Step1 -> ... -> Step49``; each reads the previous layer's ``carried``
  (a dict of 10 small items), adds one key and stores it. Thread executor, Local datastore in a
  fresh temporary directory; the run records, the log capture and the progress display are on, as
  a user gets them.
* Plain Python: the same 50 function calls, each writing the same dict with ``pickle`` to a file of
  its own and reading the previous one back.

Prints both medians, the per-step cost and the ratio (issue 14: "a chain of small layers costs
little more than the layers' own work"). Not part of the test suite.

    .venv/bin/python benchmarks/chain.py [--layers 50] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from typing import Any

from laminar import Flow, Layer
from laminar.configurations import datastores, executors


def step(number: int, upstream: type[Layer] | None) -> type[Layer]:
    """Layer ``Step<number>``: reads ``upstream``'s dict (if any), adds one key, stores it."""

    def first(self: Any) -> None:
        self.carried = {f"k{i}": i for i in range(10)} | {f"step{number}": number}

    def after(self: Any, before: Any) -> None:
        self.carried = dict(before.carried) | {f"step{number}": number}

    after.__annotations__ = {"before": upstream, "return": None}  # the dependency
    return type(f"Step{number}", (Layer,), {"__call__": first if upstream is None else after})


def chain_flow(length: int) -> type[Flow]:
    """A flow of ``length`` layers, each depending on the one before."""

    class Chain(Flow): ...

    previous: type[Layer] | None = None
    for number in range(length):
        previous = Chain.register(step(number, previous))
    return Chain


def laminar_run(flow_class: type[Flow], length: int) -> float:
    with tempfile.TemporaryDirectory(prefix="laminar-chain-") as root:
        flow = flow_class(datastore=datastores.Local(root), executor=executors.Thread())
        start = time.perf_counter()
        execution = flow()
        elapsed = time.perf_counter() - start
        last = execution.layer(f"Step{length - 1}").carried
        assert last[f"step{length - 1}"] == length - 1 and len(last) == 10 + length
    return elapsed


def plain_run(length: int) -> float:
    with tempfile.TemporaryDirectory(prefix="plain-chain-") as root:
        start = time.perf_counter()
        state: dict[str, Any] = {}
        for number in range(length):
            if number == 0:
                state = {f"k{i}": i for i in range(10)}
            else:
                with open(os.path.join(root, f"step{number - 1}.pkl"), "rb") as file:
                    state = dict(pickle.load(file))
            state[f"step{number}"] = number
            with open(os.path.join(root, f"step{number}.pkl"), "wb") as file:
                pickle.dump(state, file)
        elapsed = time.perf_counter() - start
        assert len(state) == 10 + length
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    arguments = parser.parse_args()
    os.environ.setdefault("LAMINAR_PROGRESS", "0")
    flow_class = chain_flow(arguments.layers)
    laminar_run(flow_class, arguments.layers)  # warm up imports
    laminar_times, plain_times = [], []
    for _ in range(arguments.repeat):
        laminar_times.append(laminar_run(flow_class, arguments.layers))
        plain_times.append(plain_run(arguments.layers))
    lam, plain = statistics.median(laminar_times), statistics.median(plain_times)
    n = arguments.layers
    print(f"chain: python {sys.version.split()[0]}, {n} layers, {arguments.repeat} interleaved pairs")
    print(
        f"laminar  median {lam * 1e3:8.1f} ms  ({lam / n * 1e3:6.2f} ms a layer)  runs: "
        + ", ".join(f"{t * 1e3:.0f}" for t in laminar_times)
    )
    print(
        f"plain    median {plain * 1e3:8.1f} ms  ({plain / n * 1e3:6.3f} ms a step)   runs: "
        + ", ".join(f"{t * 1e3:.1f}" for t in plain_times)
    )
    print(f"ratio    laminar / plain = {lam / plain:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
