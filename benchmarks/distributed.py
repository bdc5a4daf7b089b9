"""Benchmark: a 2,000-split trivial foreach on a Dask ``LocalCluster(n_workers=2)``.

Measured in the same run, on the same cluster:

* raw Dask: ``client.map`` of the same trivial work (``x * 2`` for each item), then ``gather``;
* Laminar on that cluster (``Dask(address)``): the flow ``Numbers`` (shards the items) -> ``Double``
  (one split per item: ``self.y = numbers.x * 2``), Local datastore in a temporary directory;
* Laminar's local process executor (``executors.Process()``) running the same flow.

Prints Laminar's extra cost per split over raw Dask (target, issue 5: at most 5 ms) and the process
executor's cost per split. Each figure is the best of ``--repeat`` runs. Not part of the test suite.

    .venv/bin/python benchmarks/distributed.py [--splits 2000] [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file is named like the ``distributed`` package it measures: keep its directory off the path,
# or ``import distributed`` would import this script (here, and in the worker processes it spawns).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from laminar import Flow, Layer, Parameters  # noqa: E402
from laminar.configurations import datastores, executors  # noqa: E402
from laminar.configurations.executors import Executor  # noqa: E402
from laminar.configurations.layers import ForEach, Parameter  # noqa: E402


class Trivial(Flow): ...


@Trivial.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(x=list(range(parameters.count)))


@Trivial.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="x")]))
class Double(Layer):
    def __call__(self, numbers: Numbers) -> None:
        self.y = numbers.x * 2


def double(x: int) -> int:
    return x * 2


def run_laminar(executor: Executor, splits: int, root: Path) -> float:
    flow = Trivial(datastore=datastores.Local(root), executor=executor)
    start = time.perf_counter()
    execution = flow(count=splits)
    elapsed = time.perf_counter() - start
    ys = execution.layer(Double).y
    assert len(ys) == splits and ys[splits - 1] == 2 * (splits - 1)
    return elapsed


def run_raw(client: Any, splits: int) -> float:
    start = time.perf_counter()
    futures = client.map(double, range(splits), pure=False)
    results = client.gather(futures)
    elapsed = time.perf_counter() - start
    assert len(results) == splits and results[-1] == 2 * (splits - 1)
    del futures
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--splits", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None, help="Dask executor concurrency")
    options = parser.parse_args()

    from distributed import Client, LocalCluster
    from laminar_dask import Dask

    n = options.splits
    print(f"{n} splits; LocalCluster(n_workers={options.workers}, threads_per_worker=1, processes=True); "
          f"{os.cpu_count()} CPUs; best of {options.repeat}")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="laminar-bench-") as tmp,
        LocalCluster(
            n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        run_raw(client, 100)  # warm the workers up (imports, connections)
        raw: list[float] = []
        dask: list[float] = []
        process: list[float] = []
        for round_ in range(options.repeat):
            raw.append(run_raw(client, n))
            dask.append(
                run_laminar(
                    Dask(cluster.scheduler_address, concurrency=options.concurrency),
                    n,
                    Path(tmp) / f"d{round_}",
                )
            )
            process.append(run_laminar(executors.Process(), n, Path(tmp) / f"p{round_}"))
            print(
                f"  round {round_ + 1}: raw dask {raw[-1]:.2f} s, laminar on dask {dask[-1]:.2f} s, "
                f"laminar process executor {process[-1]:.2f} s"
            )

    best_raw, best_dask, best_process = min(raw), min(dask), min(process)
    extra = (best_dask - best_raw) / n * 1000
    print(f"raw dask client.map:       {best_raw:7.2f} s  {best_raw / n * 1000:6.2f} ms/split")
    print(f"laminar, Dask executor:    {best_dask:7.2f} s  {best_dask / n * 1000:6.2f} ms/split")
    print(f"laminar, Process executor: {best_process:7.2f} s  {best_process / n * 1000:6.2f} ms/split")
    verdict = "meets" if extra <= 5 else "misses"
    print(f"laminar's extra cost per split on Dask: {extra:.2f} ms ({verdict} the 5 ms target)")


if __name__ == "__main__":
    main()
