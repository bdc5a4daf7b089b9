"""Reuse on every datastore and executor, and what keeps it safe: gc never leaves an index entry
naming deleted values, and two executions computing the same layer at once both succeed."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from laminar import Flow, Layer, Parameters
from laminar._storage import gc, layout
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter

from tests.helpers import EXECUTORS

RAN: list[str] = []  # the layers that ran in this process (the thread executor runs them here)


class Shared(Flow): ...


@Shared.register
class Items(Layer):
    def __call__(self, parameters: Parameters) -> None:
        RAN.append("Items")
        self.shard(values=list(range(parameters.count)))
        self.noise = random.Random(0).randbytes(8192)  # under artifacts/, not inline


@Shared.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="values")]))
class Square(Layer):
    def __call__(self, items: Items) -> None:
        RAN.append("Square")
        self.value = items.values**2


@Shared.register
class Total(Layer):
    def __call__(self, square: Square, items: Items) -> None:
        RAN.append("Total")
        self.total = sum(square.value) + len(items.noise)


def _explained(flow: Flow, execution: str) -> dict[str, str | None]:
    store = flow.execution(execution).store
    return {name: store.layer_status(name).reused for name in ("Items", "Square", "Total")}  # type: ignore[union-attr]


def _check_reuse(datastore: Any, executor: Any) -> None:
    flow = Shared(datastore=datastore, executor=executor)
    first = flow(count=4, reuse=True)
    second = flow(count=4, reuse=True)
    assert _explained(flow, second.id) == dict.fromkeys(("Items", "Square", "Total"), first.id)
    assert second.layer(Total).total == 14 + 8192
    assert list(second.layer(Square).value) == [0, 1, 4, 9]
    third = flow(count=5, reuse=True)
    assert _explained(flow, third.id) == dict.fromkeys(("Items", "Square", "Total"))
    assert third.layer(Total).total == 30 + 8192


@pytest.mark.parametrize("executor", EXECUTORS)
def test_reuse_on_a_local_store(tmp_path: Path, executor: Any) -> None:
    _check_reuse(datastores.Local(str(tmp_path)), executor())


def test_reuse_on_memory() -> None:
    _check_reuse(datastores.Memory(), executors.Thread())


def test_reuse_on_s3(s3_datastore: Any) -> None:
    _check_reuse(s3_datastore, executors.Thread())


def test_reuse_on_gcs(gcs_datastore: Any) -> None:
    _check_reuse(gcs_datastore, executors.Thread())


def test_reuse_on_azure(azure_datastore: Any) -> None:
    _check_reuse(azure_datastore, executors.Thread())


def test_gc_deletes_the_entries_naming_what_it_deletes_and_a_rerun_recomputes(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Shared(datastore=datastore, executor=executors.Thread())
    first = flow(count=3, reuse=True)
    other = flow(count=2, reuse=True)  # Items and Square differ; its entries stay
    entries = sorted(p.name for p in tmp_path.glob("flows/Shared/reuse/*/*.json"))
    assert len(entries) == 6
    assert len(list(tmp_path.glob("flows/Shared/reuse/Square/splits/*.json"))) == 1  # one base: the latest
    gc.collect(datastore, keep_last=1)
    assert not (tmp_path / layout.execution("Shared", first.id)).exists()
    left = sorted(tmp_path.glob("flows/Shared/reuse/*/*.json"))
    assert len(left) == 3 and all(other.id in p.read_text() for p in left)
    (split_index,) = tmp_path.glob("flows/Shared/reuse/Square/splits/*.json")
    assert first.id not in split_index.read_text() and other.id in split_index.read_text()
    RAN.clear()
    again = flow(count=3, reuse=True)  # the kept execution's two splits are reused
    assert RAN.count("Items") == 1 and RAN.count("Square") == 1 and RAN.count("Total") == 1
    assert again.layer(Total).total == 5 + 8192


def test_gc_removes_entries_of_executions_already_gone(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    flow = Shared(datastore=datastore, executor=executors.Thread())
    first = flow(count=3, reuse=True)
    gc.delete_execution(datastore, "Shared", first.id)  # as an older gc, or a hand, did
    assert gc.drop_entries(datastore, set()) == 4  # three layers' entries and Square's split index
    assert not list(tmp_path.glob("flows/Shared/reuse/**/*.json"))


class Slow(Flow): ...


BOTH_STARTED = threading.Barrier(2, timeout=60)


@Slow.register
class Meet(Layer):
    def __call__(self, parameters: Parameters) -> None:
        BOTH_STARTED.wait()  # both executions are inside the same layer at once
        self.value = parameters.count * 2


@Slow.register
class After(Layer):
    def __call__(self, meet: Meet) -> None:
        self.value = meet.value + 1


def test_two_executions_computing_the_same_layer_at_once_both_succeed(tmp_path: Path) -> None:
    datastore = datastores.Local(str(tmp_path))
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        flow = Slow(datastore=datastore, executor=executors.Thread())
        results[name] = flow(execution=name, count=3, reuse=True)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert {name: results[name].layer(After).value for name in ("one", "two")} == {"one": 7, "two": 7}
    flow = Slow(datastore=datastore, executor=executors.Thread())
    third = flow(count=3, reuse=True)
    assert third.store.layer_status("Meet").reused in ("one", "two")  # type: ignore[union-attr]


def test_new_foreach_items_run_only_their_splits_and_the_join(tmp_path: Path) -> None:
    flow = Shared(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    flow(count=100, reuse=True)
    RAN.clear()
    grown = flow(count=103, reuse=True)
    assert RAN.count("Items") == 1 and RAN.count("Square") == 3 and RAN.count("Total") == 1
    assert grown.layer(Total).total == sum(i * i for i in range(103)) + 8192
    assert list(grown.layer(Square).value) == [i * i for i in range(103)]
    why = grown.store.layer_status("Square").why  # type: ignore[union-attr]
    assert why is not None and why.endswith("; 100 of 103 splits reused")
    RAN.clear()
    again = flow(count=103, reuse=True)  # the reused splits are indexed under the new execution
    assert RAN == []
    assert again.store.layer_status("Square").reused == grown.id  # type: ignore[union-attr]


def test_a_layer_whose_inputs_came_out_the_same_is_reused(tmp_path: Path) -> None:
    flow = Shared(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    first = flow(count=10, reuse=True)
    RAN.clear()
    again = flow(count=10, reuse=True, offset=0)  # a parameter no layer uses: Items runs again
    assert RAN == ["Items"]
    assert again.store.layer_status("Square").reused == first.id  # type: ignore[union-attr]


class ByDefault(Flow):
    reuse = True


@ByDefault.register
class Once(Layer):
    def __call__(self, parameters: Parameters) -> None:
        RAN.append("Once")
        self.value = parameters.count


def test_a_flow_can_reuse_by_default_and_a_run_can_say_no(tmp_path: Path) -> None:
    flow = ByDefault(datastore=datastores.Local(str(tmp_path)), executor=executors.Thread())
    first = flow(count=1)
    RAN.clear()
    second = flow(count=1)
    assert RAN == [] and second.store.layer_status("Once").reused == first.id  # type: ignore[union-attr]
    third = flow(count=1, reuse=False)
    assert RAN == ["Once"] and third.store.layer_status("Once").why is None  # type: ignore[union-attr]


def test_bad_reuse_options_are_refused_at_registration() -> None:
    from laminar.errors import ConfigurationError

    class Bad(Flow): ...

    with pytest.raises(ConfigurationError, match=r"register\(reuse=\.\.\.\) takes True or False, got 'yes'"):
        Bad.register(reuse="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"register\(inputs=\.\.\.\) takes a list of file paths"):
        Bad.register(inputs="data.csv")
    assert Bad.registry == {} or set(Bad.registry) == {"Parameters"}
