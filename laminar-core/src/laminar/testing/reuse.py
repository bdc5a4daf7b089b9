"""The reuse checks both conformance kits run: on every datastore (with the thread executor) and on
every executor (with a local datastore), an incremental run (``reuse=True``) must behave the same.

Whether a layer ran is read from what it stored, so it works wherever the layer ran (a thread, a
worker process, a Dask worker): each layer stores a fresh random ``ran`` token, which a reused layer
keeps from the execution it was reused from. The checks: an unchanged rerun runs nothing; a changed
input runs what reads it, and only that; after ``gc`` has deleted the execution reused from, a rerun
computes again; two executions computing the same layer at once both succeed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from laminar import Flow, Layer, Parameters
from laminar._storage import gc
from laminar.configurations.layers import ForEach, Parameter
from laminar.plugins import Datastore, Executor

#: The layers of :class:`Reused`, and what ``ran`` token each stored, by execution.
LAYERS = ("Items", "Tripled", "Total", "Apart")


class Reused(Flow):
    """Parameters -> Items (shard) -> Tripled (foreach) -> Total (join); Apart reads nothing."""


def _token() -> str:
    return uuid.uuid4().hex


@Reused.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(parameters.count)))
        self.ran = _token()


@Reused.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Tripled(Layer):
    def __call__(self, items: Items) -> None:
        self.value = items.values * 3
        self.ran = _token()


@Reused.register
class Total(Layer):
    def __call__(self, tripled: Tripled) -> None:
        self.total = sum(tripled.value)
        self.ran = _token()


@Reused.register
class Apart(Layer):
    def __call__(self) -> None:
        self.ran = _token()


class Concurrent(Flow):
    """One layer that waits (up to a minute) until another execution is inside it too."""


@Concurrent.register
class Meet(Layer):
    def __call__(self, parameters: Parameters) -> None:
        marks = Path(parameters.marks)
        (marks / _token()).touch()
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("layer Meet ran alone: the two executions did not run it at once")
            time.sleep(0.01)
        self.value = parameters.count * 2


MakeExecutor = Callable[[], Executor]


def _tokens(flow: Reused, execution: str) -> dict[str, Any]:
    """Each layer's ``ran`` token; for the foreach, its splits' tokens."""
    found = {name: flow.execution(execution).layer(name).ran for name in LAYERS}
    found["Tripled"] = tuple(found["Tripled"])
    return found


def _reused(flow: Flow, execution: str) -> dict[str, str | None]:
    layers = flow.execution(execution).status.layers
    return {name: layers[name].reused for name in LAYERS}


def check_an_unchanged_rerun_runs_nothing(datastore: Datastore, make_executor: MakeExecutor) -> None:
    flow = Reused(datastore=datastore, executor=make_executor())
    first = flow(count=3, reuse=True)
    second = flow(count=3, reuse=True)
    assert _reused(flow, second.id) == dict.fromkeys(LAYERS, first.id)
    assert _tokens(flow, second.id) == _tokens(flow, first.id), "a layer ran again in an unchanged rerun"
    assert second.layer(Total).total == 9 and list(second.layer(Tripled).value) == [0, 3, 6]


def check_a_changed_input_runs_what_reads_it(datastore: Datastore, make_executor: MakeExecutor) -> None:
    flow = Reused(datastore=datastore, executor=make_executor())
    first = flow(count=3, reuse=True)
    changed = flow(count=4, reuse=True)
    before, after = _tokens(flow, first.id), _tokens(flow, changed.id)
    ran = {name for name in LAYERS if before[name] != after[name]}
    assert ran == {"Items", "Tripled", "Total"}, f"layers that ran after count changed: {sorted(ran)}"
    assert len(set(before["Tripled"]) & set(after["Tripled"])) == 0  # every split ran: Items' token is new
    assert _reused(flow, changed.id) == {"Items": None, "Tripled": None, "Total": None, "Apart": first.id}
    assert changed.layer(Total).total == 18


def check_a_rerun_after_gc_computes_again(datastore: Datastore, make_executor: MakeExecutor) -> None:
    flow = Reused(datastore=datastore, executor=make_executor())
    first = flow(count=3, reuse=True)
    before = _tokens(flow, first.id)
    flow(count=2, reuse=True)  # kept: Items, Tripled and Total differ from the first's
    gc.collect(datastore, keep_last=1)  # deletes the first, and the index entries naming it
    again = flow(count=3, reuse=True)
    reused = _reused(flow, again.id)
    assert first.id not in reused.values(), f"reused from an execution gc deleted: {reused}"
    assert reused["Items"] is None and reused["Tripled"] is None and reused["Total"] is None, reused
    assert not set(_tokens(flow, again.id)["Tripled"]) & set(before["Tripled"])
    assert again.layer(Total).total == 9 and list(again.layer(Tripled).value) == [0, 3, 6]


def check_two_executions_computing_a_layer_at_once_both_succeed(
    datastore: Datastore, make_executor: MakeExecutor, marks: Path
) -> None:
    marks.mkdir()
    done: dict[str, Any] = {}
    failed: list[BaseException] = []

    def run(name: str) -> None:
        try:
            flow = Concurrent(datastore=datastore, executor=make_executor())
            done[name] = flow(execution=name, count=3, marks=str(marks), reuse=True).layer(Meet).value
        except BaseException as error:  # the test fails with it below
            failed.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("together-one", "together-two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failed, f"two executions computing the same layer at once: {failed!r}"
    assert done == {"together-one": 6, "together-two": 6}
    third = Concurrent(datastore=datastore, executor=make_executor())(count=3, marks=str(marks), reuse=True)
    assert third.status.layers["Meet"].reused in ("together-one", "together-two")
    assert len(list(marks.iterdir())) == 2  # the third execution did not run it
