"""A chain of small layers does not wait for each layer's record (issue 29, item 3).

A layer's record is written behind by a thread of the run's own, in the order the layers finished,
while the layers reading it run; the run reports its end only once every record is written. A
crash leaves a prefix of the records (never one whose upstream's is missing), which a resume keeps
without running those layers again; a record that cannot be written fails the run, and its layer
never reads "finished".
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import lines, recorded_layers, records_one_a_file
from laminar import Flow, Layer
from laminar._runtime import layer_records
from laminar._storage import layout
from laminar.configurations import datastores, executors

DEADLINE = 60  # seconds: a bound for a hang, never reached when the behaviour holds


class Chain(Flow): ...


@Chain.register
class A(Layer):
    def __call__(self) -> None:
        self.carried = ["a"]


@Chain.register
class B(Layer):
    def __call__(self, a: A) -> None:
        self.carried = [*a.carried, "b"]


@Chain.register
class C(Layer):
    def __call__(self, b: B) -> None:
        self.carried = [*b.carried, "c"]
        C.ran.set()

    ran = threading.Event()


def _record(root: Path, execution: str, layer: str) -> Path:
    return root / layout.record("Chain", execution, layer)


class HeldBack(datastores.Local):
    """Writes layer A's record only once layer C has run (or after the deadline), and keeps, for each
    layer status written, the layer, its status and whether the layer's record existed then."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.c_ran_first: bool | None = None
        self.statuses: list[tuple[str, str, bool]] = []

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/layers/A/record.json") or "/records/A." in key:  # a file, or a pack A begins
            self.c_ran_first = C.ran.wait(10)
        if key.endswith("/status.json") and "/layers/" in key:
            directory = Path(self._path(key)).parent
            self.statuses.append(
                (directory.name, json.loads(data)["status"], (directory / "record.json").exists())
            )
        super().write_bytes(key, data)


def test_a_layer_s_record_is_written_behind_while_the_layers_reading_it_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # written at the end: none taken before its status
    C.ran.clear()
    datastore = HeldBack(tmp_path)
    execution = Chain(datastore=datastore, executor=executors.Thread())(execution="e")
    assert datastore.c_ran_first is True  # B and C read A's record before it was on the store
    # every record is on the store when the run returns, and read back by a new store
    assert recorded_layers(tmp_path, "Chain", "e") == ["A", "B", "C", "Parameters"]
    again = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution(execution.id)
    assert again.layer(C).carried == ["a", "b", "c"]
    # each layer's "finished" status is carried by its record (Record.ran): no status record of its
    # own, so none can read "finished" before its record is written
    assert datastore.statuses == []
    assert {name: layer.status for name, layer in again.status.layers.items()} == dict.fromkeys(
        ("A", "B", "C"), "finished"
    )
    assert execution.status.status == "succeeded"


class Failing(datastores.Local):
    """Fails to write the record of ``layer``, the last layer's only once the run returned (or a
    second passed: the run waits for it); keeps the layer statuses written."""

    def __init__(self, root: Path, layer: str) -> None:
        super().__init__(root)
        self.layer = layer
        self.statuses: dict[str, str] = {}
        self.returned = threading.Event()

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(f"/layers/{self.layer}/record.json"):
            if self.layer == "C":
                self.returned.wait(1)
            raise OSError(errno.ENOSPC, f"disk full writing {key}")
        if key.endswith("/status.json") and "/layers/" in key:
            self.statuses[key.split("/")[-2]] = json.loads(data)["status"]
        super().write_bytes(key, data)


@pytest.mark.parametrize("layer", ["B", "C"])
def test_a_record_that_cannot_be_written_behind_fails_the_run_and_none_after_it_lands(
    tmp_path: Path, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records_one_a_file(monkeypatch)  # one record's write fails (a pack's: test_record_packs.py)
    datastore = Failing(tmp_path, layer)
    try:
        with pytest.raises(OSError) as raised:  # the run waits for its last record before it ends
            Chain(datastore=datastore, executor=executors.Thread())(execution="e")
    finally:
        datastore.returned.set()
    assert f"disk full writing flows/Chain/executions/e/layers/{layer}/record.json" in str(raised.value)
    assert f"while writing the record of layer {layer}" in "\n".join(getattr(raised.value, "__notes__", []))
    assert _record(tmp_path, "e", "A").exists()
    assert not _record(tmp_path, "e", layer).exists()
    assert not _record(tmp_path, "e", "C").exists()  # C ran after B, so its record follows B's
    assert datastore.statuses.get(layer) != "finished"  # its record is not there: never "finished"
    assert datastore.statuses.get("C") != "finished"
    execution = Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread()).execution("e")
    assert execution.status.status == "failed"
    layers = execution.status.layers
    assert layers["A"].status == "finished" and len(layers["A"].attempts) == 1
    assert layers[layer].status != "finished"  # its record is not there: never "finished"
    assert layers["C"].status != "finished"
    execution.resume()  # keeps A, and completes the rest
    assert execution.layer(C).carried == ["a", "b", "c"]


def test_a_record_in_flight_is_read_in_this_process_even_when_the_cache_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from laminar._storage.cache import MetadataCache

    monkeypatch.setattr(MetadataCache, "get", lambda self, key: None)  # every cached value evicted
    C.ran.clear()
    execution = Chain(datastore=HeldBack(tmp_path), executor=executors.Thread())()
    assert execution.layer(C).carried == ["a", "b", "c"]


class Slow(datastores.Local):
    """Writes layer records a moment late (in the scheduler's process: workers write none)."""

    def write_bytes(self, key: str, data: bytes) -> None:
        if (key.endswith("/record.json") and "/Parameters/" not in key) or "/records/" in key:
            time.sleep(0.3)  # the window a worker would read the record in, were it handed over early
        super().write_bytes(key, data)


def test_splits_running_in_other_processes_are_handed_over_once_their_upstream_records_are_written(
    tmp_path: Path,
) -> None:
    execution = Chain(datastore=Slow(tmp_path), executor=executors.Process(concurrency=1))()
    assert execution.layer(C).carried == ["a", "b", "c"]


# ---- a real crash in the middle of a chain ----------------------------------------------------------
CRASHING = textwrap.dedent(
    """
    import os, sys, threading

    from laminar import Flow, Layer
    from laminar._runtime import layer_records
    from laminar.configurations import datastores, executors

    layer_records.PACK = 1  # a file a record, each watched as it lands (packs: test_record_packs.py)


    class Stuck(datastores.Local):
        '''The record of layer L3 never lands: the process is killed while it is being written.'''

        def write_bytes(self, key, data):
            if key.endswith("/layers/L3/record.json") and os.environ.get("STUCK") == "1":
                threading.Event().wait()
            super().write_bytes(key, data)


    class Long(Flow): ...


    def layer(number, previous):
        def __call__(self, before):
            with open(os.environ["RAN_LOG"], "a") as log:
                log.write(f"L{number}\\n")
            self.value = (before.value if previous is not None else 1) * 2
            if number == 6 and os.environ.get("STUCK") == "1":
                print("L6 ran", flush=True)  # L3's record is stuck, L4 and L5 are queued behind it

        if previous is None:
            def first(self):
                return __call__(self, None)
            return Long.register(type(f"L{number}", (Layer,), {"__call__": first}))
        __call__.__annotations__ = {"before": previous, "return": None}
        return Long.register(type(f"L{number}", (Layer,), {"__call__": __call__}))


    previous = None
    for number in range(8):
        previous = layer(number, previous)


    if __name__ == "__main__":
        flow = Long(datastore=Stuck(sys.argv[2]), executor=executors.Thread())
        if sys.argv[1] == "run":
            flow(execution="e")
        else:
            execution = flow.execution("e")
            execution.resume()
            print("L7", execution.layer("L7").value, flush=True)
    """
)


def test_a_kill_while_records_are_written_behind_leaves_a_prefix_that_a_resume_keeps(tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text(CRASHING)
    store, ran = tmp_path / "store", tmp_path / "ran.log"
    environment = {**os.environ, "RAN_LOG": str(ran), "STUCK": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), "run", str(store)], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "L6 ran"
        # Looked at last layer first: records landing meanwhile (together, in order) are then all seen
        # with those before them, never after them (a prefix read front to back may show a hole).
        records = lambda: sorted(  # noqa: E731
            n for n in reversed(range(8)) if (store / layout.record("Long", "e", f"L{n}")).exists()
        )
        while (found := records()) != [0, 1, 2]:  # L0..L2's records land (L3's is stuck; none passes it)
            assert child.poll() is None and found in ([], [0], [0, 1]), found
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(DEADLINE)
    assert records() == [0, 1, 2]  # L4..L6 ran, and none of their records passed L3's
    statuses = {
        n: json.loads(path.read_bytes())["status"]
        for n in range(8)
        if (path := store / layout.layer_status("Long", "e", f"L{n}")).exists()
    }
    assert all(n in (0, 1, 2) for n, status in statuses.items() if status == "finished"), statuses
    before = lines(ran)  # L7 may have run too before the kill landed
    assert before in ([f"L{n}" for n in range(7)], [f"L{n}" for n in range(8)]), before
    resumed = subprocess.run(
        [sys.executable, str(script), "resume", str(store)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**environment, "STUCK": "0"},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == f"L7 {2**8}"
    # nothing whose record was written ran again; everything else did, once
    assert lines(ran)[len(before) :] == [f"L{n}" for n in range(3, 8)]


# ---- plugin registration per flow object ------------------------------------------------------------
def test_each_flow_s_plugin_manager_finds_the_hooks_pluggy_finds_in_every_plugin_module() -> None:
    import types

    import pluggy
    from laminar._plugins import manager
    from laminar.plugins import hookimpl

    @hookimpl
    def laminar_layer_started(layer: object) -> None: ...

    class Holder:
        @hookimpl
        def laminar_layer_finished(self, layer: object) -> None: ...

        @staticmethod
        @hookimpl
        def laminar_split_started(layer: object) -> None: ...

    odd = types.ModuleType("odd")
    odd.__dict__.update(
        laminar_layer_started=laminar_layer_started,  # a function
        laminar_layer_finished=Holder().laminar_layer_finished,  # a bound method
        laminar_split_started=Holder.__dict__["laminar_split_started"],  # a staticmethod
        __hidden__=laminar_layer_started,  # a function under a dunder name
        unmarked=lambda: None,
        number=3,
        Holder=Holder,
    )
    plain = pluggy.PluginManager("laminar")
    ours = manager._new_manager()
    modules = [plugin for _, plugin in manager.plugin_manager().list_name_plugin()] + [odd]
    assert len(modules) >= 5 and all(isinstance(module, types.ModuleType) for module in modules)
    found = 0
    for module in modules:
        for name in dir(module):
            assert ours.parse_hookimpl_opts(module, name) == plain.parse_hookimpl_opts(module, name), name
            found += plain.parse_hookimpl_opts(module, name) is not None
    assert found >= 20
    hooks = {name for name in dir(odd) if ours.parse_hookimpl_opts(odd, name) is not None}
    assert hooks == {"laminar_layer_started", "laminar_layer_finished", "laminar_split_started", "__hidden__"}


# ---- the Thread executor's threads --------------------------------------------------------------------
class Threads(Flow): ...


@Threads.register
class First(Layer):
    def __call__(self) -> None:
        self.started = sorted(
            thread.name for thread in threading.enumerate() if thread.name.startswith("laminar-layer_")
        )


@Threads.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.started = sorted(
            thread.name for thread in threading.enumerate() if thread.name.startswith("laminar-layer_")
        )


@Threads.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.started = sorted(
            thread.name for thread in threading.enumerate() if thread.name.startswith("laminar-layer_")
        )


class NotInline(executors.Thread):
    """The Thread executor handing every split to its threads, a chain's too."""

    inline_chains = False


def test_a_chain_of_one_split_layers_runs_on_one_thread_of_the_thread_executor() -> None:
    stray = [thread for thread in threading.enumerate() if thread.name.startswith("laminar-layer_")]
    for thread in stray:  # the pools of earlier runs, stopping
        thread.join(DEADLINE)
    execution = Threads(datastore=datastores.Memory(), executor=NotInline(concurrency=4))()
    # no thread is started for a layer while the one that ran the layer before waits for work
    assert execution.layer(Third).started == ["laminar-layer_0"]
    for thread in [thread for thread in threading.enumerate() if thread.name.startswith("laminar-layer_")]:
        thread.join(DEADLINE)
    execution = Threads(datastore=datastores.Memory(), executor=executors.Thread(concurrency=4))()
    assert execution.layer(Third).started == []  # a chain's splits run inline: no thread at all


# ---- signal handlers ----------------------------------------------------------------------------------
def test_a_run_puts_back_the_signal_handlers_and_wake_up_file_it_found(tmp_path: Path) -> None:
    received: list[int] = []

    def mine(number: int, frame: object) -> None:
        received.append(number)

    before = signal.signal(signal.SIGTERM, mine)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    earlier = signal.set_wakeup_fd(writer.fileno())
    try:
        C.ran.clear()
        Chain(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.set_wakeup_fd(writer.fileno()) == writer.fileno()
        os.kill(os.getpid(), signal.SIGTERM)  # still this test's, not the run's
        assert received == [signal.SIGTERM]
    finally:
        signal.set_wakeup_fd(earlier)
        signal.signal(signal.SIGTERM, before)
        reader.close()
        writer.close()
