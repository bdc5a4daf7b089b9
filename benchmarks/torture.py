"""Torture: seeded SIGKILLs across a run and its resumes; the end state must equal an uninterrupted run.

A flow of 32 layers (a chain, a 50-split foreach in the middle, a join) runs in a child process that
is killed with SIGKILL at seeded random moments, then resumed, killed again, ... until it completes;
then the next execution starts, until the kill budget is spent. Checked and printed:

- every execution's final artifacts equal those of an uninterrupted run (every value read back,
  which verifies every content hash on the way);
- no layer, and no foreach split, whose record had been written before a kill ran again after it
  (each layer and split appends one line per run to a log; records are read between kills);
- how many kills landed, how many resumes it took, how many layer and split runs were repeated
  (work lost with its unrecorded results, which is expected) and the wall time.

    .venv/bin/python benchmarks/torture.py                      # 50 kills, Thread and Process
    .venv/bin/python benchmarks/torture.py --kills 20 --seed 7 --executor process
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CHAIN = 30  # chain layers, plus the foreach and the join
SPLITS = 50

FLOW = textwrap.dedent(
    f"""
    import os, sys, time

    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter


    class Tortured(Flow): ...


    def note(name, index=None):
        with open(os.environ["TORTURE_LOG"], "a") as file:
            file.write(f"{{name}} {{'' if index is None else index}}\\n")


    def chain_layer(number, previous):
        def __call__(self, before):
            note(type(self).__name__)
            time.sleep(0.05)
            self.value = (before.value if hasattr(before, "value") else before.seed) * 3 % 1000003 + number
            if number == {CHAIN // 2}:
                self.shard(item=list(range({SPLITS})))

        __call__.__annotations__ = {{"before": previous, "return": None}}
        return Tortured.register(type(f"L{{number:02d}}", (Layer,), {{"__call__": __call__}}))


    previous = Parameters
    layers = []
    for number in range({CHAIN}):
        previous = chain_layer(number, previous)
        layers.append(previous)
    middle = layers[{CHAIN // 2}]


    @Tortured.register(foreach=ForEach(parameters=[Parameter(layer=middle, attribute="item")]))
    class Fan(Layer):
        def __call__(self, source: middle) -> None:
            note("Fan", self.index)
            time.sleep(0.05)
            self.value = source.item * source.item + source.value


    @Tortured.register
    class Join(Layer):
        def __call__(self, fan: Fan, last: layers[-1]) -> None:
            note("Join")
            self.total = sum(fan.value) + last.value


    if __name__ == "__main__":
        store, executor, action, execution = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        chosen = executors.Thread(concurrency=4) if executor == "thread" else executors.Process(concurrency=2)
        flow = Tortured(datastore=datastores.Local(store), executor=chosen)
        if action == "run":
            flow(execution=execution, seed=12345)
        else:
            flow.execution(execution).resume()
    """
)

READ = textwrap.dedent(
    """
    import json, sys
    import tortured_flow as module
    from laminar.configurations import datastores, executors

    flow = module.Tortured(datastore=datastores.Local(sys.argv[1]), executor=executors.Thread())
    execution = flow.execution(sys.argv[3])
    if sys.argv[2] == "recorded":  # which layers and splits have records now (internal: the store)
        store = flow.configuration.store(flow.name, sys.argv[3])
        done = [name for name in flow.registry if name != "Parameters" and store.record(name) is not None]
        print(json.dumps({"layers": done, "fan": sorted(store.finished_splits("Fan"))}))
    else:  # every value, read back (verifying every content hash)
        values = {name: execution.layer(name).value for name in flow.registry if name.startswith("L")}
        values["Fan"] = list(execution.layer("Fan").value)
        values["Join"] = execution.layer("Join").total
        print(json.dumps(values, sort_keys=True))
    """
)


def child(
    directory: Path, store: Path, executor: str, action: str, log: Path, execution: str = "tortured"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(directory / "tortured_flow.py"), str(store), executor, action, execution],
        cwd=directory,
        env={**os.environ, "TORTURE_LOG": str(log), "PYTHONPATH": str(directory)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def read(directory: Path, store: Path, what: str, execution: str = "tortured") -> str:
    return subprocess.run(
        [sys.executable, str(directory / "read.py"), str(store), what, execution],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(directory)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def runs(log: Path) -> collections.Counter[str]:
    return collections.Counter(log.read_text().splitlines()) if log.exists() else collections.Counter()


def torture(directory: Path, executor: str, kills: int, seed: int) -> bool:
    import json

    rng = random.Random(seed)
    reference = directory / f"reference-{executor}"
    log = directory / f"reference-{executor}.log"
    started = time.monotonic()
    assert child(directory, reference, executor, "run", log).wait() == 0
    clean_time = time.monotonic() - started
    expected = read(directory, reference, "values")

    store = directory / f"tortured-{executor}"
    landed = resumes = rounds = repeated = 0
    layer_runs = split_runs = 0
    all_equal = True
    started = time.monotonic()
    while landed < kills:  # each round: one execution, run and resumed under kills until it completes
        rounds += 1
        execution = f"tortured-{rounds}"
        log = directory / f"tortured-{executor}-{rounds}.log"
        protected: list[dict[str, int]] = []
        action = "run"
        metadata = store / "flows/Tortured/executions" / execution / "execution.json"
        while True:
            process = child(directory, store, executor, action, log, execution)
            if landed < kills:
                try:
                    process.wait(timeout=rng.uniform(0.1, 0.3 + clean_time * 0.4))
                except subprocess.TimeoutExpired:
                    recorded = (
                        json.loads(read(directory, store, "recorded", execution))
                        if metadata.exists()
                        else None
                    )
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    landed += 1
                    before = runs(log)  # what had run by the kill: recorded work must not run after it
                    if recorded is not None:
                        lines = {f"{name} " for name in recorded["layers"]} | {
                            f"Fan {i}" for i in recorded["fan"]
                        }
                        protected.append({line: before[line] for line in lines})
                    action = "resume" if metadata.exists() else "run"
                    resumes += action == "resume"
                    continue
            if process.wait() == 0:
                break
            error = process.stderr.read().decode() if process.stderr else ""
            if "is being run by another scheduler" not in error:
                print(f"  a run failed for another reason than a kill:\n{error[-2000:]}")
                return False
            time.sleep(0.1)
        final = runs(log)
        repeated += sum(final[line] > count for baseline in protected for line, count in baseline.items())
        all_equal &= read(directory, store, "values", execution) == expected
        layer_runs += sum(count for line, count in final.items() if not line.startswith("Fan"))
        split_runs += sum(count for line, count in final.items() if line.startswith("Fan"))
    elapsed = time.monotonic() - started
    print(
        f"{executor:8} kills {landed:3} over {rounds} executions ({resumes} resumes), wall {elapsed:6.1f} s "
        f"(uninterrupted {clean_time:.1f} s each); layer runs {layer_runs} for {rounds * (CHAIN + 1)}, "
        f"split runs {split_runs} for {rounds * SPLITS}; recorded work run again: {repeated}; "
        f"final artifacts {'all equal' if all_equal else 'DIFFER'}"
    )
    return all_equal and repeated == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--executor", choices=["thread", "process", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laminar-torture-") as name:
        directory = Path(name)
        (directory / "tortured_flow.py").write_text(FLOW)
        (directory / "read.py").write_text(READ)
        chosen = ["thread", "process"] if args.executor == "both" else [args.executor]
        ok = all(torture(directory, executor, args.kills, args.seed) for executor in chosen)
    print("torture:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
