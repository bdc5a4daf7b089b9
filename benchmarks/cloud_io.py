"""Benchmark: Laminar's cloud datastores against their emulators (moto, gcp-storage-emulator, Azurite).

For each backend, started on a free port of 127.0.0.1 exactly as the test suite starts it:

1. **Large artifact.** A 256 MiB incompressible numpy array written by one layer and read by the next
   (Thread executor), against the backend SDK's own upload and download of the same bytes
   (boto3 ``upload_fileobj`` / ``download_fileobj``, ``Blob.upload_from_file`` / ``download_to_file``,
   ``upload_blob`` / ``download_blob().readinto``). Target: at most 1.5x the SDK.
2. **Wide foreach.** A 1,000-split foreach (each split doubles its item; a join sums them), Thread
   executor, against the same flow on the Local datastore. Target: at most 3x Local. The backend's
   client is started before the clock starts (importing s3fs and botocore's models alone takes about
   1 s, once per process, whatever the flow); that start-up is printed separately.

Each measurement runs in a fresh process; the best of ``--repeat`` runs counts.

    .venv/bin/python benchmarks/cloud_io.py [--mib 256] [--splits 1000] [--repeat 2] [--backends s3,gcs,azure]
        [--concurrency N] [--foreach-only]

Azurite must be installed first (``scripts/install-emulators``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import io, json, os, sys, tempfile, time
import numpy as np

backend, mode, mib, splits, location, endpoint, concurrency = sys.argv[1:8]
mib, splits, concurrency = int(mib), int(splits), int(concurrency) or None


def make():
    return np.random.default_rng(0).integers(0, 2**63, size=mib * 2**20 // 8, dtype=np.int64)


def checksum(array):
    return int(array[::4096].sum())


def sdk_round_trip(array):
    data = memoryview(array).cast("B")
    name = "sdk-bench/blob"
    start = time.perf_counter()
    if backend == "s3":
        import boto3
        bucket = location.removeprefix("s3://").split("/")[0]
        client = boto3.client("s3", endpoint_url=endpoint)
        client.upload_fileobj(io.BytesIO(data), bucket, name)
        sink = io.BytesIO()
        client.download_fileobj(bucket, name, sink)
        raw = sink.getbuffer()
    elif backend == "gcs":
        from google.cloud import storage
        bucket = storage.Client().bucket(location.removeprefix("gs://").split("/")[0])
        bucket.blob(name).upload_from_file(io.BytesIO(data), size=len(data))
        sink = io.BytesIO()
        bucket.blob(name).download_to_file(sink)
        raw = sink.getbuffer()
    else:
        from azure.storage.blob import BlobServiceClient
        service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
        container = service.get_container_client(location.removeprefix("az://").split("/")[0])
        container.upload_blob(name, io.BytesIO(data), length=len(data), overwrite=True, max_concurrency=4)
        sink = io.BytesIO()
        container.download_blob(name, max_concurrency=4).readinto(sink)
        raw = sink.getbuffer()
    result = checksum(np.frombuffer(raw, dtype=np.int64))
    return time.perf_counter() - start, result


from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter


class Big(Flow): ...


@Big.register
class Write(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.array = make()


@Big.register
class Read(Layer):
    def __call__(self, write: Write) -> None:
        self.checksum = checksum(write.array)


class Wide(Flow): ...


@Wide.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(item=range(parameters.n))


@Wide.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Double(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.item * 2


@Wide.register
class Sum(Layer):
    def __call__(self, double: Double) -> None:
        self.total = sum(double.value)


if mode == "sdk":
    array = make()
    seconds, result = sdk_round_trip(array)
elif mode == "artifact":
    flow = Big(datastore=location, executor=executors.Thread())
    start = time.perf_counter()
    execution = flow(run=1)
    seconds = time.perf_counter() - start
    result = execution.layer(Read).checksum
    t0 = time.perf_counter(); make(); seconds -= time.perf_counter() - t0  # I/O only, as for the SDK
else:  # foreach
    if location == "local":
        location = datastores.Local(tempfile.mkdtemp(dir=os.environ.get("LAMINAR_BENCH_DIR")))
    flow = Wide(datastore=location, executor=executors.Thread(concurrency=concurrency))
    start = time.perf_counter()
    flow.configuration.datastore.exists("benchmark-warm-up")  # import the SDK, start its client
    opened = time.perf_counter() - start
    start = time.perf_counter()
    execution = flow(n=splits)
    seconds = time.perf_counter() - start
    result = execution.layer(Sum).total
    assert result == splits * (splits - 1), result
print(json.dumps({"seconds": seconds, "result": result, "opened": opened if mode == "foreach" else 0.0}))
"""


def child(
    backend: str, mode: str, args: argparse.Namespace, location: str, endpoint: str, env: dict[str, str]
) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            backend,
            mode,
            str(args.mib),
            str(args.splits),
            location,
            endpoint,
            str(args.concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def best(
    backend: str, mode: str, args: argparse.Namespace, new_location: Any, endpoint: str, env: dict[str, str]
) -> dict[str, Any]:
    runs = [child(backend, mode, args, new_location(), endpoint, env) for _ in range(args.repeat)]
    assert len({run["result"] for run in runs}) == 1, runs
    return min(runs, key=lambda run: run["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--splits", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backends", default="s3,gcs,azure")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="Thread executor concurrency of the foreach (0: its default)",
    )
    parser.add_argument("--foreach-only", action="store_true", help="skip the large-artifact measurement")
    args = parser.parse_args()

    from emulators import fixtures

    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    with tempfile.TemporaryDirectory() as scratch:
        factory = _Factory(Path(scratch))
        local = best("local", "foreach", args, lambda: "local", "", {})
        print(f"Local datastore, {args.splits}-split foreach: {local['seconds']:7.3f} s")
        for backend in backends:
            service, endpoint, env, stop = _start(backend, fixtures, factory)
            try:
                if not args.foreach_only:
                    sdk = best(backend, "sdk", args, service.new_location, endpoint, env)
                    artifact = best(backend, "artifact", args, service.new_location, endpoint, env)
                    assert sdk["result"] == artifact["result"], (sdk, artifact)
                wide = best(backend, "foreach", args, service.new_location, endpoint, env)
            finally:
                stop()
            print(f"\n{backend} ({endpoint})")
            if not args.foreach_only:
                ratio = artifact["seconds"] / sdk["seconds"]
                print(f"  {args.mib} MiB: SDK upload + download {sdk['seconds']:7.3f} s")
                print(f"  {args.mib} MiB: Laminar artifact      {artifact['seconds']:7.3f} s")
                print(f"  ratio                          {ratio:7.2f}x   (target <= 1.5x)")
            print(f"  client start-up (not counted) {wide['opened']:7.3f} s   (SDK import, first request)")
            print(f"  {args.splits}-split foreach         {wide['seconds']:7.3f} s")
            print(
                f"  ratio to Local                 {wide['seconds'] / local['seconds']:7.2f}x   (target <= 3x)"
            )


class _Factory:
    """Enough of pytest's TempPathFactory for the harness's session fixtures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def mktemp(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{name}{self.count}"
        path.mkdir()
        return path


def _start(backend: str, fixtures: Any, factory: _Factory) -> tuple[Any, str, dict[str, str], Any]:
    """Start one emulator through the test harness's own session fixture (a generator)."""
    fixture = {"s3": fixtures.s3_service, "gcs": fixtures.gcs_service, "azure": fixtures.azure_service}[
        backend
    ]
    generator = fixture.__wrapped__(factory)
    service = next(generator)
    env = dict(service.env)
    if backend == "s3":
        env.update(AWS_ENDPOINT_URL_S3=service.endpoint, AWS_ENDPOINT_URL=service.endpoint)
        endpoint = service.endpoint
    elif backend == "gcs":
        endpoint = service.endpoint
    else:
        endpoint = service.connection_string.split("BlobEndpoint=")[1].rstrip(";")
    os.environ.update(env)  # so new_location() (bucket creation) in this process reaches it too

    def stop() -> None:
        for name in env:
            os.environ.pop(name, None)
        next(generator, None)

    return service, endpoint, env, stop


if __name__ == "__main__":
    main()
