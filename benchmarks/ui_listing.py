"""Benchmark: ``laminar ui``'s executions list over 10,000 executions, and the UI process's memory.

One real run of a small flow (with a parameter) is stored on Local, then copied under new execution
ids (each record rewritten with its id and sealed again) until the datastore holds ``--executions``.
The UI is the real command in a subprocess (``laminar ui DATASTORE --port 0``); the figures are
wall-clock times of HTTP requests to it, each the median of ``--rounds``:

- the first page (50 executions, newest first), cold: the UI's first request, which reads every
  execution's metadata for when it was created (ids are the user's, so they do not say), then the
  50 records the page shows;
- the first page again, warm: creation times never change, so the UI keeps them and reads only the
  executions made since, and the 50 records;
- a page far down the list (``start=9000``), which reads its 50 records only, as the first does;
- a status filter that matches nothing, which has to read every execution's record: the cost a
  filter pays on a datastore where few executions match.

The UI process's memory is its resident set (``VmRSS``) after the pages were served, and its peak
(``VmHWM``), from /proc. Target (issue 28): the first page in at most 1 s on Local.

    .venv/bin/python benchmarks/ui_listing.py [--executions 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from laminar._ids import new_execution_id
from laminar._storage.records import seal, unseal

FLOW = textwrap.dedent(
    """
    from laminar import Flow, Layer, Parameters


    class Listed(Flow): ...


    @Listed.register
    class Only(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.value = parameters.n * 2
    """
)


def clone(root: Path, flow: str, execution: str, count: int) -> None:
    """``count`` copies of a stored execution, each record under its new id and sealed again."""
    source = root / "flows" / flow / "executions" / execution
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


def memory(pid: int) -> tuple[int, int]:
    """The process's resident set and its peak, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def timed(client: httpx.Client, url: str, rounds: int) -> tuple[float, str]:
    times = []
    text = ""
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        text = response.text
    return statistics.median(times), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    laminar = str(Path(sys.executable).with_name("laminar"))
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "listed.py").write_text(FLOW)
        store = root / ".laminar"
        first = new_execution_id()
        subprocess.run(
            [laminar, "run", str(root / "listed.py"), "--datastore", store.as_uri(), "--executor", "thread",
             "--execution", first, "--param", "n=3"],
            check=True, capture_output=True,
        )  # fmt: skip
        start = time.perf_counter()
        clone(store, "Listed", first, arguments.executions - 1)
        print(f"stored {arguments.executions} executions in {time.perf_counter() - start:.1f} s")
        server = subprocess.Popen(
            [laminar, "ui", store.as_uri(), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            url = server.stdout.readline().strip()
            with httpx.Client(timeout=600) as client:
                cold, _ = timed(client, url, 1)
                first_page, text = timed(client, url, arguments.rounds)
                assert text.count('class="execution"') == 50, "the first page does not show 50 executions"
                far, _ = timed(client, f"{url}?start={arguments.executions - 1000}", arguments.rounds)
                scan, text = timed(client, f"{url}?status=cancelled", 1)
                assert 'class="execution"' not in text
            rss, peak = memory(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"first page (50 of {arguments.executions}, newest first), cold: {cold * 1000:.0f} ms, warm: "
        f"{first_page * 1000:.0f} ms (target: at most 1000 ms)"
    )
    print(f"a page at start={arguments.executions - 1000}: {far * 1000:.0f} ms")
    print(f"a status filter matching none (reads all {arguments.executions} records): {scan * 1000:.0f} ms")
    print(f"UI process memory: {rss / 1024:.0f} MiB resident after serving them, peak {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
