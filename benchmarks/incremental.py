"""Benchmark: incremental runs against the first run, measured in the same invocation.

A flow of 20 layers: ``Items`` shards N items (10,000 by default), ``Square`` is a foreach over
them, ``Join`` sums them, and ``Step01`` ... ``Step17`` follow in a chain. Each run is a fresh
process running the flow file with reuse on (``execution.run(reuse=True)``), as a user runs again
after an edit; only the run is timed: not the imports, nor opening the datastore's client (on S3,
importing s3fs and its first connection, over a second here), which every run does alike before it
starts. Measured, each against the first run:

1. the same flow run again unchanged: its time (target: at most 5% of the first run's) and how
   many layers ran (target: none);
2. one middle layer (``Step09``) edited: which layers ran (target: exactly it and its 8
   descendants, counted from the status records);
3. 1% new items: how many of ``Square``'s splits ran (target: 1%), read from its explanation;
4. what the datastore grew by in the unchanged rerun, per reused layer (target: a few KiB; a
   reused layer, a foreach's too, writes one record pointing at the earlier execution's splits);
5. the floor under the unchanged rerun: the requests it made (counted in its process: each read,
   existence check, listing and write) made again in a fresh process without Laminar around them,
   all at once on as many threads as the datastore uses (the reads of the same keys, the writes of
   as many bytes under ``floor/``): through the datastore object, and on S3 with boto3 too. It
   ignores the order a rerun must keep (a record is checked before the next layer's key is known),
   so no rerun can go below it; how far above it the rerun is says what Laminar itself costs.

A split does ``--work`` iterations of a loop (20,000: about a millisecond), so the first run does
what a small real flow does; the reruns' cost is mostly fixed (reading the records to key each
layer, and writing the reused layers' records).

    .venv/bin/python benchmarks/incremental.py [--items 10000] [--executor thread|process]
                                               [--datastore URL]   # e.g. an S3 emulator's s3://...
                                               [--unchanged-only]  # the first run and the rerun
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOW = """
from laminar import Flow, Layer, Parameters
from laminar.configurations.layers import ForEach, Parameter

WORK = {work}  # iterations of a split's loop: what a split costs

def work(value):
    total = 0
    for i in range(WORK):
        total += (value * i) % 7
    return total


class Bench(Flow): ...


@Bench.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.items)))


@Bench.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        self.value = work(items.values)


@Bench.register
class Join(Layer):
    def __call__(self, square: Square) -> None:
        self.total = sum(square.value)
"""

STEP = """

@Bench.register
class Step{n:02d}(Layer):
    def __call__(self, before: {before}) -> None:
        self.total = before.total + {n}  # step {n}
"""

DRIVER = """
import json, sys, threading, time
import flow
from laminar.configurations import executors

url, executor, items = sys.argv[1], sys.argv[2], int(sys.argv[3])
bench = flow.Bench(datastore=url, executor=executors.Thread() if executor == "thread" else executors.Process())
execution = bench.execution("run" + sys.argv[4])
opened = time.perf_counter()
bench.configuration.datastore.exists("flows/Bench/connected")  # opens the client, as imports are done
requests = []  # (operation, key, bytes written) of each request this process makes, for the floor
kind = type(bench.configuration.datastore)
for name in ("read_bytes", "write_bytes", "create", "exists", "list_prefix", "delete"):
    def counted(self, key, *rest, _name=name, _method=getattr(kind, name)):
        requests.append((_name, key, len(rest[0]) if rest and isinstance(rest[0], bytes) else 0))
        return _method(self, key, *rest)
    setattr(kind, name, counted)
started = time.perf_counter()
execution.run(parameters={"items": items}, reuse=True)
took = time.perf_counter() - started
if len(sys.argv) > 5:
    with open(sys.argv[5], "w") as out:
        json.dump(requests, out)
layers = {}
for name in bench.layer_names():
    if name != "Parameters":
        status = execution.store.layer_status(name)
        layers[name] = {"reused": status.reused, "why": status.why}
print(json.dumps({"seconds": took, "connecting": started - opened, "layers": layers}))
"""


FLOOR = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import flow

url, made = sys.argv[1], json.load(open(sys.argv[2]))
datastore = flow.Bench(datastore=url).configuration.datastore  # as the rerun's driver opens it
datastore.exists("flows/Bench/connected")  # opens the client, as the rerun's driver does
scratch = "floor/"
reads = [key for operation, key, _ in made if operation == "read_bytes"]
checks = [key for operation, key, _ in made if operation == "exists"]
listings = [key for operation, key, _ in made if operation == "list_prefix"]
writes = {scratch + key: b"x" * size for operation, key, size in made if operation in ("write_bytes", "create")}


def everything(read, check, listing, write):
    started = time.perf_counter()
    jobs = [(read, k) for k in reads] + [(check, k) for k in checks] + [(listing, k) for k in listings]
    jobs += [(lambda item: write(*item), item) for item in writes.items()]
    with ThreadPoolExecutor(datastore.max_workers) as pool:
        list(pool.map(lambda job: job[0](job[1]), jobs))
    return time.perf_counter() - started


found = {"requests": len(made), "datastore": everything(
    datastore.read_bytes, datastore.exists, datastore.list_prefix, datastore.write_bytes)}
if url.startswith("s3://"):
    import boto3, botocore.config, botocore.exceptions
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", config=botocore.config.Config(max_pool_connections=datastore.max_workers))
    where = lambda key: f"{prefix}/{key}" if prefix else key
    client.list_objects_v2(Bucket=bucket, Prefix=where("flows/"), MaxKeys=1)  # its first connection

    def head(key):
        try:
            client.head_object(Bucket=bucket, Key=where(key))
        except botocore.exceptions.ClientError:
            pass

    found["boto3"] = everything(
        lambda key: client.get_object(Bucket=bucket, Key=where(key))["Body"].read(),
        head,
        lambda key: client.list_objects_v2(Bucket=bucket, Prefix=where(key)),
        lambda key, data: client.put_object(Bucket=bucket, Key=where(key), Body=data),
    )
print(json.dumps(found))
"""


def write_project(root: Path, work: int) -> None:
    source = FLOW.replace("{work}", str(work))
    before = "Join"
    for n in range(1, 18):
        source += STEP.format(n=n, before=before)
        before = f"Step{n:02d}"
    (root / "flow.py").write_text(source)
    (root / "driver.py").write_text(DRIVER)
    (root / "floor.py").write_text(FLOOR)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")


def run(root: Path, url: str, executor: str, items: int, number: int, *more: str) -> dict:
    return _child(root, "driver.py", url, executor, str(items), str(number), *more)


def _child(root: Path, script: str, *arguments: str) -> dict:
    out = subprocess.run(
        [sys.executable, script, *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
            "LAMINAR_PROGRESS": "off",
        },
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def ran(result: dict) -> list[str]:
    return [name for name, layer in result["layers"].items() if layer["reused"] is None]


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--work", type=int, default=20_000, help="iterations of each split's loop")
    parser.add_argument("--executor", choices=("thread", "process"), default="thread")
    parser.add_argument("--datastore", default=None, help="a datastore URL (default: a temporary folder)")
    parser.add_argument("--unchanged-only", action="store_true", help="stop after the unchanged rerun")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root, store = Path(scratch) / "project", Path(scratch) / "store"
        root.mkdir()
        write_project(root, options.work)
        url = options.datastore or store.as_uri()
        items = options.items

        first = run(root, url, options.executor, items, 1)
        print(
            f"first run: {first['seconds']:.2f} s, {len(ran(first))} layers ran ({options.executor}, {items} items); "
            f"opening the datastore's client before it: {first['connecting']:.2f} s, not counted in any run"
        )

        local = options.datastore is None
        before = size(store) if local else 0
        made = Path(scratch) / "requests.json"
        again = run(root, url, options.executor, items, 2, str(made))
        share = again["seconds"] / first["seconds"]
        print(
            f"unchanged rerun: {again['seconds']:.2f} s = {share:.1%} of the first run (target <= 5%): "
            f"{'OK' if share <= 0.05 else 'MISSED'}; layers that ran: {ran(again) or 'none'}"
        )
        if local:
            grown = size(store) - before
            layers = store / "flows" / "Bench" / "executions" / "run2" / "layers"
            each = {layer.name: size(layer) for layer in layers.iterdir()}
            plain = max(v for k, v in each.items() if k not in ("Items", "Square", "Parameters"))
            print(
                f"datastore growth: {grown / 1024:.1f} KiB in all (first run stored {before / 1024:.0f} KiB): "
                f"at most {plain / 1024:.1f} KiB per reused one-split layer; Items {each['Items'] / 1024:.0f} KiB "
                f"and Square {each['Square'] / 1024:.0f} KiB (one record each, pointing at the first run's {items} split records)"
            )

        kinds: dict[str, int] = {}
        for operation, key, _ in json.loads(made.read_text()):
            what = (
                "reuse entry"
                if "/reuse/" in key
                else "split batch"
                if "/splits/" in key
                else key.rsplit("/", 1)[-1]
            )
            kinds[f"{operation} {what}"] = kinds.get(f"{operation} {what}", 0) + 1
        print("the rerun's requests by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        floor = _child(root, "floor.py", url, str(made))
        for client in ("datastore", "boto3"):
            if client in floor:
                print(
                    f"floor ({client}): the rerun's {floor['requests']} requests made at once without Laminar: "
                    f"{floor[client]:.2f} s = {floor[client] / first['seconds']:.1%} of the first run; "
                    f"the rerun took {again['seconds'] / floor[client]:.1f}x that"
                )

        if options.unchanged_only:
            return
        flow = root / "flow.py"
        flow.write_text(flow.read_text().replace("before.total + 9  # step 9", "before.total + 90  # step 9"))
        edited = run(root, url, options.executor, items, 3)
        expected = [f"Step{n:02d}" for n in range(9, 18)]
        print(
            f"Step09 edited: {edited['seconds']:.2f} s = {edited['seconds'] / first['seconds']:.1%}; ran "
            f"{len(ran(edited))} layers {ran(edited)} (target: exactly Step09 and its 8 descendants): "
            f"{'OK' if ran(edited) == expected else 'MISSED'}"
        )

        grown_items = items + items // 100
        more = run(root, url, options.executor, grown_items, 4)
        why = more["layers"]["Square"]["why"] or ""
        reused = int(why.rsplit("; ", 1)[-1].split(" of ")[0]) if " splits reused" in why else 0
        splits_ran = grown_items - reused
        print(
            f"1% new items: {more['seconds']:.2f} s = {more['seconds'] / first['seconds']:.1%}; Square ran "
            f"{splits_ran} of {grown_items} splits = {splits_ran / grown_items:.1%} (target 1%): "
            f"{'OK' if splits_ran == items // 100 else 'MISSED'}; layers that ran: {ran(more)}"
        )


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
