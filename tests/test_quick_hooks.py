"""A quick layer's lifecycle events cost little, and every reader sees what it saw before (issue 29,
item 3).

The status plugin makes a layer's "running" record only when its writer writes it (most layers of
a chain end first, and theirs is taken back unmade), with what the layer's run held when it started;
a status its layer record carries is built straight from the layer's run; the record handed over
is copied with it, never changed under a reader. The log capture checks what it installed by
identity, and installs it again when someone replaced it. The built-in logging computes nothing for
a level the ``laminar`` logger is not enabled for. Calls and files are counted, never timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import unpack_records
from laminar import Flow, Layer
from laminar._plugins import builtin, log_capture, run_records
from laminar._runtime import layer_records
from laminar._storage import layout
from laminar._storage.records import AttemptRecord, LayerStatusRecord, Ran, Record
from laminar.configurations import datastores, executors
from laminar.configurations.layers import Retry

DEADLINE = 30.0  # seconds: a bound for a hang, never reached when the behaviour holds


class Quickly(Flow): ...


@Quickly.register
class First(Layer):
    def __call__(self) -> None:
        self.value = 1


@Quickly.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


@Quickly.register
class Third(Layer):
    def __call__(self, second: Second) -> None:
        self.value = second.value + 1


QUICK = ("First", "Second", "Third")


def _record_json(root: Path, flow: str, execution: str, layer: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((root / layout.record(flow, execution, layer)).read_bytes())
    return found


# ---- the "running" record: made only when written, of what the layer had when it started ----------
def test_a_quick_layer_s_running_record_is_never_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 60.0)  # no layer here runs that long
    made: list[str] = []
    making = run_records._running

    def counted(run: Any, layer: str, *rest: Any) -> LayerStatusRecord:
        made.append(layer)
        return making(run, layer, *rest)

    monkeypatch.setattr(run_records, "_running", counted)
    execution = Quickly(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="q")
    assert made == []
    layers = Quickly(datastore=datastores.Local(tmp_path)).execution("q").status.layers
    assert {name: (layers[name].status, len(layers[name].attempts)) for name in QUICK} == dict.fromkeys(
        QUICK, ("finished", 1)
    )
    assert execution.layer(Third).value == 3


class Slowly(Flow): ...


@Slowly.register(retry=Retry(attempts=3, delay=0))
class Slow(Layer):
    """Fails its first attempt; its second waits until its "running" record is on the store, and
    keeps that record as written."""

    def __call__(self) -> None:
        if self.attempt == 0:
            raise ValueError("the first try fails")
        path = Path(os.environ["SLOW_STATUS"])
        deadline = time.monotonic() + DEADLINE
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.seen = json.loads(path.read_text())


def test_a_layer_still_running_after_the_delay_has_the_running_record_of_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made when due, on the writer's thread, it holds what the layer's run held when it started (no
    attempt yet, though one failed meanwhile), reserves the attempt numbers its run may use, and says
    why the layer ran, as the record built at the start did."""
    monkeypatch.setattr(run_records, "RUNNING_AFTER", 0.05)
    monkeypatch.setenv("SLOW_STATUS", str(tmp_path / layout.layer_status("Slowly", "slow", "Slow")))
    flow = Slowly(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow.execution("slow").run(reuse=True)
    seen = execution.layer(Slow).seen
    final = Slowly(datastore=datastores.Local(tmp_path)).execution("slow").store.layer_status("Slow")
    assert final is not None and final.status == "finished" and final.why
    assert [(a.attempt, a.error is not None) for a in final.attempts] == [(0, True), (1, False)]
    expected = LayerStatusRecord(
        "Slowly", "slow", "Slow", "running", final.started, splits=1, next_attempt=3, why=final.why
    )
    assert LayerStatusRecord.from_json(seen) == expected
    assert "attempts" not in seen or seen["attempts"] == []


# ---- a carried status: built from the layer's run, attached to a copy ------------------------------
def test_a_carried_status_is_the_status_record_it_stands_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from the layer's run, not from a status record: it reads back as the one ``Ran.of``
    made of that record (the attempt numbers reserved, the times in order)."""
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # records written at the end: all carry it
    Quickly(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="c")
    store = Quickly(datastore=datastores.Local(tmp_path)).execution("c").store
    statuses = {layer: store.layer_status(layer) for layer in QUICK}  # read as written (a record pack)
    unpack_records(tmp_path)  # each layer's record a file of its own (not a line of a record pack)
    for layer in QUICK:
        stored = _record_json(tmp_path, "Quickly", "c", layer)
        assert not (tmp_path / layout.layer_status("Quickly", "c", layer)).exists()
        status = statuses[layer]
        assert status is not None and Ran.of(status) == Ran.from_json(stored["ran"])
        assert (status.status, status.splits, status.next_attempt, status.why) == ("finished", 1, 1, None)
        (attempt,) = status.attempts
        assert (attempt.index, attempt.attempt, attempt.error, attempt.caught) == (0, 0, None, None)
        assert status.ended is not None and attempt.ended is not None
        assert status.started <= attempt.started <= attempt.ended <= status.ended


def test_a_status_attached_to_a_record_handed_over_is_carried_by_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_records, "INTERVAL", 3600.0)  # not taken before wait(), however slow
    store = Quickly(datastore=datastores.Local(tmp_path)).configuration.store("Quickly", "x")
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []
    records = layer_records.LayerRecords(store, loop, failed.append)
    try:
        handed = Record("Quickly", "First", 1, artifacts=("value",))
        records.put(handed)
        held = store.record("First")
        assert held is handed
        ran = Ran(1.0, 2.0, (AttemptRecord(0, 0, 1.0, 2.0),), next_attempt=1)
        assert records.attach("First", ran) is True
        carrying = store.record("First")  # held so in this process at once
        assert carrying == dataclasses.replace(handed, ran=ran) and carrying is not handed
        assert handed.ran is None and held.ran is None  # whoever read it before keeps what it read
        assert records.wait() is None and failed == []
    finally:
        records.close()
        loop.close()
    written = (tmp_path / layout.record("Quickly", "x", "First")).read_bytes()
    assert written == dataclasses.replace(handed, ran=ran).dumps()
    assert records.attach("First", ran) is False  # written: the status is a file of its own then


# ---- the log capture -------------------------------------------------------------------------------
class Talking(Flow): ...


@Talking.register
class Talk(Layer):
    def __call__(self) -> None:
        print("printed")
        logging.getLogger("user.talk").warning("logged")
        self.done = True


def test_the_capture_installs_itself_again_once_its_stream_or_handler_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Talking(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    said = "printed\nWARNING user.talk: logged\n"
    assert flow(execution="one").layer(Talk).state.logs() == said
    assert isinstance(sys.stdout, log_capture._Tee) and log_capture._handler in logging.root.handlers
    # someone removes the handler between runs (the streams stay wrapped)
    assert log_capture._handler is not None
    logging.root.removeHandler(log_capture._handler)
    assert flow(execution="two").layer(Talk).state.logs() == said
    assert sum(isinstance(h, log_capture._CaptureHandler) for h in logging.root.handlers) == 1
    assert log_capture._handler in logging.root.handlers
    # someone puts stdout back (the handler stays)
    monkeypatch.setattr(sys, "stdout", sys.stdout.stream)
    assert flow(execution="three").layer(Talk).state.logs() == said
    assert isinstance(sys.stdout, log_capture._Tee)


# ---- the built-in logging --------------------------------------------------------------------------
class Untouchable:
    """A layer no event may read anything of: any attribute read raises."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read {name} of a layer whose event is not logged")


def test_lifecycle_logging_reads_nothing_of_the_layer_when_the_logger_is_off() -> None:
    level = builtin.logger.level
    builtin.logger.setLevel(logging.WARNING)
    try:
        layer: Any = Untouchable()
        error = ValueError("broken")
        builtin.laminar_layer_started(layer, 1)
        builtin.laminar_layer_finished(layer, 1, None)
        builtin.laminar_layer_finished(layer, 1, error)
        builtin.laminar_split_started(layer, 0, 0)
        builtin.laminar_split_retried(layer, 0, 1, error)
        builtin.laminar_split_finished(layer, 0, 0, error)
    finally:
        builtin.logger.setLevel(level)


def test_lifecycle_logging_says_what_it_said_when_the_logger_is_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="laminar"):
        Quickly(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="said")
    messages = [record.getMessage() for record in caplog.records if record.name == "laminar"]
    for layer in QUICK:
        assert f"layer {layer} started (1 split)" in messages
        assert f"layer {layer} finished (1 split) in execution said" in messages
        assert f"layer {layer} split None attempt 0 started" in messages
