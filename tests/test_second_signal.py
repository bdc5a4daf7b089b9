"""A second signal cancels every running layer at once, before the run reports its end: its splits
running on worker threads are recorded cancelled, and so are the layer and the execution."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from laminar import Flow, Layer
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import Interrupted

BOUND = 30.0  # seconds a split waits to be released (never reached: the test releases it)
STARTED = threading.Semaphore(0)
RELEASE = threading.Event()


class Held(Flow): ...


@Held.register
class Items(Layer):
    def __call__(self) -> None:
        self.shard(item=[0, 1])


@Held.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
class Waits(Layer):
    def __call__(self, items: Items) -> None:
        STARTED.release()
        RELEASE.wait(BOUND)
        self.item = items.item


def test_a_second_sigint_cancels_the_running_layers_before_the_run_ends(tmp_path: Path) -> None:
    RELEASE.clear()

    def sender() -> None:  # two SIGINTs to the main thread once both splits run on worker threads
        for _ in range(2):
            assert STARTED.acquire(timeout=BOUND)
        for _ in range(2):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            RELEASE.wait(0.2)  # (two signals close together may arrive as one)

    flow = Held(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=2))
    thread = threading.Thread(target=sender)
    thread.start()
    try:
        try:
            flow(execution="held")
        except (Interrupted, KeyboardInterrupt):
            pass
        else:
            raise AssertionError("the run was not stopped")
        status = flow.execution("held").status
        assert status.status == "cancelled", status
        waits = status.layers["Waits"]
        assert waits.status == "cancelled", waits
        # cancelled as the signal came, before the run reported its end, not torn down after it
        assert waits.ended is not None and status.ended is not None and waits.ended <= status.ended
    finally:
        RELEASE.set()
        thread.join()
