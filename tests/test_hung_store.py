"""A store that stops answering ends the run within about one per-call deadline, logs plugin and all.

S3 and GCS emulators behind the fault proxy, which is switched to its black hole (connections
accepted, never answered) while a split runs. That split prints and logs, so its log capture holds
text (and then the storage retries' warnings) when its write gives up. Before, the capture then
flushed all of it to the same frozen store and waited out a second deadline: 2 deadlines in all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from emulators.faultproxy import FaultProxy
from laminar import Flow, Layer, Parameters
from laminar.configurations import executors
from laminar.errors import DatastoreError
from test_storage_faults import Backend, _gcs, _s3, messages

#: The per-call deadline of this test's datastore, and the most the run may take once the store froze.
DEADLINE = 5.0
WITHIN = 1.2 * DEADLINE


class Frozen(Flow):
    """Start -> Stuck: Stuck asks for the store to freeze, prints and logs, then stores a value."""


@Frozen.register
class Start(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.marks = parameters.marks


@Frozen.register
class Stuck(Layer):
    def __call__(self, start: Start) -> None:
        marks = Path(start.marks)
        (marks / "freeze").touch()
        ends = time.monotonic() + 60
        while not (marks / "frozen").exists() and time.monotonic() < ends:
            time.sleep(0.01)
        print("stuck: about to store a value")
        logging.getLogger("stuck").warning("the store may not answer")
        self.value = os.urandom(100_000)  # written (not inline) as the split ends: no answer comes


def _freeze_when_asked(proxy: FaultProxy, marks: Path, frozen_at: list[float]) -> None:
    ends = time.monotonic() + 120
    while not (marks / "freeze").exists():
        if time.monotonic() > ends:
            return
        time.sleep(0.01)
    proxy.black_hole()
    frozen_at.append(time.monotonic())
    (marks / "frozen").touch()


@pytest.fixture(
    params=[
        pytest.param(_s3, id="s3", marks=pytest.mark.s3),
        pytest.param(_gcs, id="gcs", marks=pytest.mark.gcs),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    make: Callable[[pytest.FixtureRequest], Backend] = request.param
    return make(request)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_store_that_stops_answering_ends_the_run_within_one_deadline(
    backend: Backend,
    fault_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
    executor: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAMINAR_LEASE_TTL", "3")  # the heartbeat refreshes the lease while the store hangs
    proxy = fault_proxy(backend.endpoint)
    datastore = backend.through(proxy, deadline=DEADLINE)
    chosen = executors.Thread() if executor == "thread" else executors.Process(concurrency=1)
    flow = Frozen(datastore=datastore, executor=chosen)
    marks = tmp_path / "marks"
    marks.mkdir()
    frozen_at: list[float] = []
    freezer = threading.Thread(target=_freeze_when_asked, args=(proxy, marks, frozen_at), daemon=True)
    freezer.start()
    with pytest.raises(DatastoreError) as error:
        flow(execution="frozen", marks=str(marks))
    elapsed = time.monotonic() - frozen_at[0]
    freezer.join()
    assert proxy.counts["black_hole"] >= 1
    shown = messages(error.value)
    assert "deadline" in shown and proxy.endpoint in shown, shown
    assert elapsed < WITHIN, (
        f"the run ended {elapsed:.1f}s after the store stopped answering; the deadline is {DEADLINE:g}s"
    )
    datastore.close()
