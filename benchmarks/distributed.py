"""Benchmark: a trivial foreach on a Dask ``LocalCluster(n_workers=2)``, against raw Dask.

Measured in the same run, on the same cluster:

* raw Dask: ``client.map`` of the same trivial work (``x * 2`` for each item), then ``gather``;
* Laminar on that cluster (``Dask(address)``): the flow ``Numbers`` (shards the items) -> ``Double``
  (one split per item: ``self.y = numbers.x * 2``), Local datastore in a temporary directory, every
  split's record checked; short splits go to Dask in batches, one Dask task each;
* Laminar's local process executor (``executors.Process()``) running the same flow (up to 100,000
  splits; ``--no-process`` skips it).

Prints each one's cost per split, Laminar's on Dask against raw ``client.map`` (issue 29: at most
1.0x), and the peak RSS of this process (Laminar's scheduler) and of the Dask scheduler. Each figure
is the best of ``--repeat`` runs. Not part of the test suite.

    .venv/bin/python benchmarks/distributed.py [--splits 2000] [--repeat 3] [--workers 2]
    .venv/bin/python benchmarks/distributed.py --splits 1000000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import resource
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
    assert len(ys) == splits and sum(ys) == splits * (splits - 1)  # every split's record, read back
    return elapsed


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def dask_scheduler_rss_mib(client: Any) -> float:
    """The Dask scheduler's peak RSS (it runs in this process for a LocalCluster: then this one's)."""
    return float(client.run_on_scheduler(peak_rss_mib))


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
    parser.add_argument("--no-process", action="store_true", help="skip the process executor")
    parser.add_argument(
        "--raw-splits",
        type=int,
        default=None,
        help="items raw client.map runs (default: --splits up to 100,000, else 20,000: a million Dask "
        "tasks take hours on 2 cores); compared per split",
    )
    options = parser.parse_args()
    os.environ.setdefault("LAMINAR_PROGRESS", "0")
    with_process = not options.no_process and options.splits <= 100_000
    raw_n = options.raw_splits or (options.splits if options.splits <= 100_000 else 20_000)

    from distributed import Client, LocalCluster
    from laminar_dask import Dask

    n = options.splits
    print(f"{n:,} splits; LocalCluster(n_workers={options.workers}, threads_per_worker=1, processes=True); "
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
            raw.append(run_raw(client, raw_n))
            dask.append(
                run_laminar(
                    Dask(cluster.scheduler_address, concurrency=options.concurrency),
                    n,
                    Path(tmp) / f"d{round_}",
                )
            )
            if with_process:
                process.append(run_laminar(executors.Process(), n, Path(tmp) / f"p{round_}"))
            print(
                f"  round {round_ + 1}: raw dask ({raw_n:,} items) {raw[-1]:.2f} s, laminar on dask {dask[-1]:.2f} s"
                + (f", laminar process executor {process[-1]:.2f} s" if with_process else ""),
                flush=True,
            )
        scheduler_rss = dask_scheduler_rss_mib(client)

    best_raw, best_dask = min(raw), min(dask)
    print(
        f"raw dask client.map:       {best_raw:7.2f} s  {best_raw / raw_n * 1e6:8.1f} us/split ({raw_n:,} items)"
    )
    print(
        f"laminar, Dask executor:    {best_dask:7.2f} s  {best_dask / n * 1e6:8.1f} us/split ({n:,} splits)"
    )
    if process:
        print(f"laminar, Process executor: {min(process):7.2f} s  {min(process) / n * 1e6:8.1f} us/split")
    ratio = (best_dask / n) / (best_raw / raw_n)
    verdict = "ok" if ratio <= 1.0 else "MISSED (target 1.0)"
    print(f"laminar on Dask / raw client.map, per split: {ratio:.2f}  {verdict}")
    print(f"peak RSS: this process (Laminar's scheduler, the Dask scheduler) {peak_rss_mib():,.0f} MiB")
    print(f"peak RSS of the Dask scheduler as it reports it: {scheduler_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
