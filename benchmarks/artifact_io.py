"""Benchmark: a 512 MiB incompressible numpy array written by one layer and read by the next.

Thread executor, Local datastore, against a raw ``np.save`` + ``np.load`` of the same array in the
same run. Each measurement runs in a fresh process so peak memory (ru_maxrss) is its own.
Targets (issue 2): time at most 2.5x raw; peak memory at most 1.5x the array's size.

    .venv/bin/python benchmarks/artifact_io.py [--mib 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
mode, mib, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def make():
    return np.random.default_rng(0).integers(0, 2**63, size=mib * 2**20 // 8, dtype=np.int64)

baseline = rss_mib()
if mode == "raw":
    array = make()
    start = time.perf_counter()
    path = os.path.join(directory, "raw.npy")
    np.save(path, array)
    del array
    loaded = np.load(path)
    checksum = int(loaded[::4096].sum())
    elapsed = time.perf_counter() - start
else:
    from laminar import Flow, Layer
    from laminar.configurations import datastores, executors

    class ArrayFlow(Flow): ...

    @ArrayFlow.register
    class Write(Layer):
        def __call__(self) -> None:
            self.array = make()

    @ArrayFlow.register
    class Read(Layer):
        def __call__(self, write: Write) -> None:
            self.checksum = int(write.array[::4096].sum())

    flow = ArrayFlow(datastore=datastores.Local(directory), executor=executors.Thread())
    start = time.perf_counter()
    execution = flow()
    elapsed = time.perf_counter() - start
    checksum = execution.layer(Read).checksum
    peak_flow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter(); make(); creation = time.perf_counter() - t0
    elapsed -= creation  # time the I/O only, as for raw (array creation is measured and removed)
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_flow - baseline, "checksum": checksum}))
    sys.exit(0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mib": peak - baseline, "checksum": checksum}))
"""


def measure(mode: str, mib: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("LAMINAR_BENCH_DIR")) as directory:
        output = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(mib), directory],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raw = [measure("raw", args.mib) for _ in range(args.repeat)]
    laminar = [measure("laminar", args.mib) for _ in range(args.repeat)]
    assert {r["checksum"] for r in raw} == {r["checksum"] for r in laminar}, "results differ"
    raw_time = min(r["seconds"] for r in raw)
    laminar_time = min(r["seconds"] for r in laminar)
    laminar_peak = min(r["peak_mib"] for r in laminar)
    raw_peak = min(r["peak_mib"] for r in raw)
    print(f"array: {args.mib} MiB incompressible int64, best of {args.repeat}")
    print(f"raw np.save + np.load : {raw_time:7.3f} s   peak +{raw_peak:7.0f} MiB")
    print(f"laminar write + read  : {laminar_time:7.3f} s   peak +{laminar_peak:7.0f} MiB")
    print("(peak: the process's maximum RSS above its RSS before the array was made, array included)")
    print(f"time ratio            : {laminar_time / raw_time:7.2f}x   (target <= 2.5x)")
    print(f"peak memory / array   : {laminar_peak / args.mib:7.2f}x   (target <= 1.5x)")


if __name__ == "__main__":
    main()
