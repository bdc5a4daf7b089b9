"""A fork of a process whose log-flushing thread runs (a scheduler that ran splits on threads, then
forks the process executor's worker template) waits until the thread stores nothing, so the child
inherits no lock held half-way through a store, and the child's own logs start a thread of their own.

Each test forks in a fresh ``python``: pytest's process holds other tests' threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import json
import os
import threading
from pathlib import Path

from laminar._storage import logs
from laminar.configurations import datastores

entered, release = threading.Event(), threading.Event()
events = []


class Slow(datastores.Local):
    \"\"\"Its writes wait for ``release``: the flushing thread is caught in the middle of a store.\"\"\"

    def write_bytes(self, key: str, data: bytes) -> None:
        entered.set()
        release.wait(60)
        super().write_bytes(key, data)
        events.append("stored")


writer = logs.LogWriter(Slow(Path("store")), "Flow", "run", "Layer", 0, 0, cap=1 << 20)
writer.write("flushed by the parent\\n")
writer.flush()
assert entered.wait(60)  # the flushing thread is storing now
# Released a moment later from another thread: the fork called meanwhile returns after the store.
threading.Timer(0.5, release.set).start()
pid = os.fork()
if pid == 0:
    fresh = logs.flushing_threads() == []
    child = logs.LogWriter(datastores.Local(Path("store")), "Flow", "run", "Layer", 1, 0, cap=1 << 20)
    child.write("flushed by the child\\n")
    child.flush()  # starts the child's own flushing thread
    child.close()
    started = [thread.name for thread in logs.flushing_threads()]
    os._exit(0 if fresh and started == ["laminar-logs"] else 1)
events.append("forked")
_, status = os.waitpid(pid, 0)
writer.close()
print(json.dumps({"events": events, "child": os.waitstatus_to_exitcode(status)}))
"""


def test_a_fork_waits_for_the_flushing_thread_to_finish_its_store_and_the_child_flushes_on_its_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "forks.py").write_text(textwrap.dedent(SCRIPT))
    finished = subprocess.run(
        [sys.executable, "forks.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout.splitlines()[-1])
    assert result["events"] == ["stored", "forked"]  # the store ended before the fork
    assert result["child"] == 0  # no thread carried over; the child's own thread stored its log
    chunks = sorted(path.read_text() for path in (tmp_path / "store").rglob("*.log"))
    assert chunks == ["flushed by the child\n", "flushed by the parent\n"]
