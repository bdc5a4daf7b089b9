"""Artifacts and their serialization: content addressing (one stored blob per distinct value), small
values kept inline in their archive, the codec chosen per value, user protocols for exact types,
values that cannot be stored or named, and corruption (or another storage layout) detected on read.

Some tests look at the stored form itself (the archive of an artifact, the key of its blob); those
reach into ``laminar._storage`` and say so.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stored_splits
from helpers import Batched, Double, Sum, files, unpack_records
from laminar import Flow, Layer, Parameters

# Internal on purpose: these tests check the stored form (where a blob lives, how it is named, what an
# archive records), which no public API shows.
from laminar._runtime.context import store_for
from laminar._serialization import hashing, threads
from laminar._storage import layout, loading, records, staging
from laminar._storage.records import Artifact
from laminar.configurations import datastores, executors, serde
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import DatastoreError, IntegrityError, InvalidName, SerializationError


class Values(Flow): ...


@Values.register
class Store(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.first = parameters.value
        self.second = parameters.value  # the same value again: stored once
        self.text = "abc" * 100_000
        self.noise = os.urandom(getattr(type(self), "noise_size", 1 << 20))


def stored_archive(flow: Flow, execution: Any, layer: str, name: str, index: int = 0) -> Any:
    """The archive of ``name`` in split ``index`` of ``layer``, as stored."""
    archive = store_for(flow.execution(execution.id)).archive(layer, index, name)
    assert archive is not None
    return archive


# ---- content addressing, inline values, codecs -----------------------------------------------------


def test_artifacts_are_content_addressed_and_record_their_codec(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value={"a": list(range(5000))})
    parsed = {
        name: stored_archive(flow, execution, "Store", name).artifacts[0]
        for name in ("first", "second", "text", "noise")
    }
    assert parsed["first"].hexdigest == parsed["second"].hexdigest
    # Parameters.value and Store.first/second are one stored artifact.
    stored = [f for f in files(tmp_path) if f.startswith("artifacts/")]
    assert stored.count(f"artifacts/{parsed['first'].hexdigest[:2]}/{parsed['first'].hexdigest}") == 1
    assert parsed["text"].codec == "zstd" and parsed["noise"].codec == "none"
    text = parsed["text"]  # zstd keeps it small enough to travel inline
    assert (
        len(text.inline) if text.inline else os.path.getsize(tmp_path / layout.artifact(text.hexdigest))
    ) < 300_000 // 10
    assert execution.layer(Store).text == "abc" * 100_000
    assert execution.layer(Store).first == {"a": list(range(5000))}


def test_small_values_are_kept_inside_their_archive(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value=[1, 2, 3])
    small = stored_archive(flow, execution, "Store", "first").artifacts[0]
    large = stored_archive(flow, execution, "Store", "noise").artifacts[0]
    assert small.inline is not None and len(small.inline) == small.size <= staging.INLINE_LIMIT
    assert small.hexdigest == hashing.hexdigest(small.inline)  # named by its content all the same
    assert not (tmp_path / layout.artifact(small.hexdigest)).exists()
    assert large.inline is None and (tmp_path / layout.artifact(large.hexdigest)).exists()
    assert flow.execution(execution.id).layer(Store).first == [1, 2, 3]


@pytest.mark.parametrize(
    "value", [0, -1, 2**70, 10**300, 3.5, float("inf"), True, None, 1j, "", "abc", "é" * 100, b"x" * 256]
)
def test_numbers_and_short_strings_take_a_shortcut_to_the_same_artifact(
    tmp_path: Path, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shortcut is internal (staging._stage_scalar): staged with and without it, a value must
    # become the same artifact.
    datastore = datastores.Local(tmp_path)
    quick = staging.stage(value, datastore=datastore, protocol=serde.Pickle())
    monkeypatch.setattr(staging, "_stage_scalar", lambda value, protocol: None)
    streamed = staging.stage(value, datastore=datastore, protocol=serde.Pickle())
    assert quick.artifact == streamed.artifact and quick.artifact.inline is not None


# ---- protocols -----------------------------------------------------------------------------------


def test_user_protocol_for_exact_types(tmp_path: Path) -> None:
    datastore = datastores.Local(tmp_path)

    @datastore.protocol(list, dict)
    class Json(serde.Protocol[Any]):
        def dumps(self, value: Any) -> bytes:
            return json.dumps(value).encode()

        def loads(self, data: bytes) -> Any:
            return json.loads(data)

    class Serde(Flow): ...

    class Sub(list):  # type: ignore[type-arg]
        pass

    @Serde.register
    class S(Layer):
        def __call__(self) -> None:
            self.listed = [1, 2]
            self.mapped = {"k": "v"}
            self.sub = Sub([3])  # a subclass is not an exact match: cloudpickle

    execution = Serde(datastore=datastore, executor=executors.Thread())()

    def artifact(name: str) -> Any:
        return stored_archive(execution.flow, execution, "S", name).artifacts[0]

    assert artifact("listed").protocol.endswith("Json") and artifact("mapped").protocol.endswith("Json")
    assert artifact("sub").protocol == "cloudpickle"
    assert artifact("listed").inline == b"[1, 2]"  # small enough to be kept in the archive
    layer = execution.layer(S)
    assert (layer.listed, layer.mapped, list(layer.sub)) == ([1, 2], {"k": "v"}, [3])


# ---- values that cannot be stored --------------------------------------------------------------------


def test_unserializable_artifact_names_layer_and_attribute_and_writes_nothing(tmp_path: Path) -> None:
    class Unpicklable(Flow): ...

    @Unpicklable.register
    class U(Layer):
        def __call__(self) -> None:
            self.fine = "a value that alone would be stored"
            self.lock = threading.Lock()

    flow = Unpicklable(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(SerializationError, match=r"artifact 'lock' of layer U cannot be serialized"):
        flow(execution="x")
    assert not [
        f for f in files(tmp_path) if "/U/" in f and not f.endswith("/U/status.json")
    ]  # but its run record
    assert not flow.execution("x").layer(U).state.finished
    with pytest.raises(AttributeError, match="has not finished"):
        flow.execution("x").layer(U).fine  # noqa: B018


class Refused:
    """A value whose serialization fails, saying which one it is."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> Any:
        raise TypeError(f"{self.label} refuses to be pickled")


def large(seed: int, mib: int = 2) -> Any:
    return np.random.default_rng(seed).integers(0, 1 << 62, (mib << 20) // 8)


def cut(tmp_path: Path, parts: list[Any], **others: Any) -> Any:
    """Run a flow of one layer, ``Cut``, that shards ``parts`` as ``part`` (and assigns ``others``
    after it), on Thread and a Local datastore in ``tmp_path``: its execution."""

    class Shards(Flow): ...

    @Shards.register
    class Cut(Layer):
        def __call__(self) -> None:
            self.shard(part=parts)
            for name, value in others.items():
                setattr(self, name, value)

    return Shards(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="x")


def staging_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Where each value is staged: (thread name, value), in the order staging began."""
    staged_on: list[tuple[str, Any]] = []
    stage = staging.stage

    def noting_the_thread(value: Any, **options: Any) -> staging.StagedArtifact:
        staged_on.append((threading.current_thread().name, value))
        return stage(value, **options)

    monkeypatch.setattr(staging, "stage", noting_the_thread)
    return staged_on


def test_a_splits_large_shards_are_staged_several_at_once_and_read_back_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = staging_threads(monkeypatch)
    execution = cut(tmp_path, [large(seed) for seed in range(6)], label="small, and staged first")
    parts = list(execution.layer("Cut").part)
    assert all(np.array_equal(part, large(seed)) for seed, part in enumerate(parts))
    staged_on = [name for name, _ in staged]
    assert len(staged_on) == 7 and staged_on[0] == staged_on[1]  # the small value, the first shard
    assert any(name.startswith("laminar-stage") for name in staged_on[2:])  # then the rest at once


def test_a_large_first_shard_is_staged_while_the_second_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other cores do not wait for the first shard to be staged alone: the second is staged on
    the staging pool meanwhile (then the rest at once), and all read back in order."""
    staged_on = staging_threads(monkeypatch)
    parts = list(cut(tmp_path, [large(seed) for seed in range(5)]).layer("Cut").part)
    assert all(np.array_equal(part, large(seed)) for seed, part in enumerate(parts))
    assert len(staged_on) == 5
    where = [
        next(name for name, value in staged_on if np.array_equal(value, large(seed))) for seed in range(5)
    ]
    assert not where[0].startswith("laminar-stage")  # the first on the split's thread
    assert where[1].startswith("laminar-stage")  # the second on the pool, at the same time


def test_small_values_after_a_guess_are_staged_one_by_one_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values that are not numbers or short strings get the second staged ahead; when both turn out
    small, the rest are staged one after the other on the split's own thread, as before."""
    staged_on = staging_threads(monkeypatch)
    execution = cut(tmp_path, [{"n": i} for i in range(6)])
    assert [part["n"] for part in execution.layer("Cut").part] == list(range(6))
    threads_of = {value["n"]: name for name, value in staged_on}
    here = {threads_of[n] for n in (0, 2, 3, 4, 5)}  # the second: wherever it was staged first
    assert len(here) == 1 and not next(iter(here)).startswith("laminar-stage")


def test_a_second_value_no_thread_took_up_is_staged_here() -> None:
    """While the staging pool is busy (other splits' values), the second value waits for no thread:
    once the first is staged, the second is taken back and staged here, and the rest in order."""
    pool = threads.staging_pool()
    gate = threading.Event()
    busy = [pool.submit(gate.wait, 30) for _ in range(pool._max_workers)]  # (not forever, if it waited)
    on: list[tuple[int, str]] = []

    def stage_one(position: int) -> staging.StagedArtifact:
        on.append((position, threading.current_thread().name))
        return staging.StagedArtifact(Artifact(f"{position:064x}", "none", "test", 10))

    try:
        staged = staging.stage_in_order(4, stage_one, second_ahead=True)
    finally:
        gate.set()
    for each in busy:
        each.result()
    assert [item.artifact.hexdigest for item in staged] == [f"{position:064x}" for position in range(4)]
    assert on == [(position, threading.current_thread().name) for position in range(4)]


@pytest.mark.parametrize(
    ("refused", "named"),
    [((0,), 0), ((1,), 1), ((0, 1), 0), ((1, 5), 1), ((4, 6), 4), ((3, 6), 3)],
    ids=["first", "second", "first-and-second", "second-and-later", "later", "one-per-run"],
)
def test_a_shard_staged_ahead_that_fails_fails_in_order_and_leaves_nothing(
    tmp_path: Path, refused: tuple[int, ...], named: int
) -> None:
    """Shards staged several at once (the first two together, the second on the pool; then one run
    of them a core) fail as staged in order: whichever fail, the first failure in order is named, and
    nothing staged is left behind, the others' files included."""
    parts: list[Any] = [large(seed, mib=9) for seed in range(8)]  # staged through staging files
    for position in refused:
        parts[position] = Refused(f"shard {position}")
    with pytest.raises(
        SerializationError, match=r"artifact 'part' of layer Cut cannot be serialized"
    ) as caught:
        cut(tmp_path, parts)
    assert f"shard {named} refuses" in str(caught.value)
    assert all(f"shard {other} " not in str(caught.value) for other in refused if other != named)
    assert not [f for f in files(tmp_path) if "/Cut/" in f and not f.endswith("/Cut/status.json")]
    assert not [f for f in files(tmp_path) if f.startswith(("artifacts/", ".staging/"))]


class Fanned(Flow): ...


@Fanned.register
class Seeds(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(seed=[(seed, parameters.mib) for seed in parameters.seeds])


@Fanned.register(foreach=ForEach(parameters=[Parameter(layer=Seeds, attribute="seed")]))
class Make(Layer):
    def __call__(self, seeds: Seeds) -> None:
        seed, mib = seeds.seed
        self.value = large(seed, mib=mib) if mib else seed


@Fanned.register
class Gather(Layer):
    def __call__(self, make: Make) -> None:
        self.count = len(list(make.value))


def reads_noted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every value read back from now on: the thread that read it, and its stored size."""
    noted: list[tuple[str, int]] = []
    load = loading.load

    def noting(datastore: Any, artifact: records.Artifact, **options: Any) -> Any:
        noted.append((threading.current_thread().name, artifact.size))
        return load(datastore, artifact, **options)

    monkeypatch.setattr(loading, "load", noting)
    return noted


def test_large_values_read_together_are_read_several_at_once_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local disk reads one key at a time (``max_workers`` 1), yet a join over large values reads
    them on several threads at once; every value comes back in its place."""
    flow = Fanned(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(seeds=list(range(6)), mib=2)
    noted = reads_noted(monkeypatch)
    values = list(execution.layer(Make).value)
    assert all(np.array_equal(value, large(seed)) for seed, value in enumerate(values))
    assert len(noted) == 6 and all(size >= loading.READ_AT_ONCE for _, size in noted)
    assert any(name.startswith("laminar-stage") for name, _ in noted)  # several at once
    assert execution.layer(Gather).count == 6


def test_small_values_read_together_are_read_on_the_reading_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing a small value's read to another thread costs more than the read: they stay here."""
    flow = Fanned(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(seeds=[os.urandom(64 << 10) for _ in range(6)], mib=0)
    noted = reads_noted(monkeypatch)
    assert len(list(execution.layer(Make).value)) == 6
    assert [name for name, _ in noted] == [threading.current_thread().name] * 6


def test_of_large_values_read_several_at_once_the_first_damaged_in_order_is_named(
    tmp_path: Path,
) -> None:
    """Values read several at once fail as read in order: the first damaged one is named, whichever
    thread came to its damage first."""
    flow = Fanned(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(seeds=list(range(6)), mib=2, execution="x")
    store = store_for(flow.execution(execution.id))
    keys = [store.archive("Make", index, "value").artifacts[0] for index in range(6)]
    for index in (3, 5):  # read in windows of 1, 2 and 3: one in each of the last window's two runs
        (tmp_path / layout.artifact(keys[index].hexdigest)).write_bytes(b"damaged")
    with pytest.raises(IntegrityError) as caught:
        list(flow.execution("x").layer(Make).value)
    assert layout.artifact(keys[3].hexdigest) in str(caught.value)
    assert layout.artifact(keys[5].hexdigest) not in str(caught.value)


def test_bad_artifact_name_is_refused(tmp_path: Path) -> None:
    class Names(Flow): ...

    @Names.register
    class N(Layer):
        def __call__(self) -> None:
            setattr(self, "bad/name", 1)

    with pytest.raises(InvalidName):
        Names(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert not [
        f for f in files(tmp_path) if "/N/" in f and not f.endswith("/N/status.json")
    ]  # but its run record


# ---- what is read back is checked --------------------------------------------------------------------


def test_a_corrupt_inline_value_is_detected_on_read(tmp_path: Path) -> None:
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value="tiny")
    (stored,) = stored_splits.of_layer(tmp_path, "Values", execution.id, "Store")

    def tamper(split: dict[str, Any]) -> None:  # resealed: only the inline value is wrong
        split["archives"]["first"]["artifacts"][0]["inline"] = base64.b64encode(pickle.dumps("tamp")).decode()

    stored.rewrite_split(tamper)

    with pytest.raises(DatastoreError, match="is corrupt"):
        Values(datastore=datastores.Local(tmp_path)).execution(execution.id).layer(Store).first  # noqa: B018


@pytest.mark.parametrize("size", [1 << 20, 9 << 20], ids=["small", "streamed"])
def test_a_corrupt_artifact_is_detected_on_read(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "noise_size", size, raising=False)
    flow = Values(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    execution = flow(value=[1, 2, 3])

    artifact = stored_archive(flow, execution, "Store", "noise").artifacts[0]
    path = tmp_path / layout.artifact(artifact.hexdigest)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(DatastoreError, match="is corrupt"):
        flow.execution(execution.id).layer(Store).noise  # noqa: B018


def test_records_of_another_storage_layout_are_refused_with_a_message(tmp_path: Path) -> None:
    flow = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow(execution="old", n=3)
    unpack_records(tmp_path)  # each layer's record a file of its own (not a line of a record pack)
    record = tmp_path / layout.record("Batched", "old", "Sum")
    record.write_text('{"flow": "Batched", "layer": "Sum", "splits": 1}')  # as layout 1 wrote it
    with pytest.raises(
        DatastoreError,
        match="written in Laminar storage layout 1, and this Laminar reads layouts 2, 3, 4 and 5",
    ):
        Batched(datastore=datastores.Local(tmp_path)).execution("old").layer(Sum).total  # noqa: B018


def test_split_batches_are_layout_3_which_a_layout_2_reader_refuses_instead_of_calling_them_corrupt(
    tmp_path: Path,
) -> None:
    # Their artifacts are addressed by BLAKE3, which code of layout 2 does not know: it must refuse
    # the batch (as it refuses any layout but its own) rather than report the artifacts corrupt.
    flow = Batched(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    flow(execution="new", n=3)
    (batch,) = (tmp_path / layout.splits("Batched", "new", "Double")).iterdir()
    document = json.loads(batch.read_bytes())
    assert document["layout"] == 3
    document.pop("sha256")
    batch.write_bytes(records.seal({**document, "layout": 6}))  # a layout this reader does not know
    with pytest.raises(
        DatastoreError,
        match="written in Laminar storage layout 6, and this Laminar reads layouts 2, 3, 4 and 5",
    ):
        list(Batched(datastore=datastores.Local(tmp_path)).execution("new").layer(Double).value)


def test_a_protocol_registered_between_runs_is_used_by_the_next_run(tmp_path: Path) -> None:
    """The protocols a store consults are reused across splits, never past a new registration."""
    from laminar.configurations import serde

    class Tagged:
        def __init__(self, text: str) -> None:
            self.text = text

    class Between(Flow): ...

    @Between.register
    class Make(Layer):
        def __call__(self) -> None:
            self.value = Tagged("hello")

    datastore = datastores.Local(tmp_path)
    flow = Between(datastore=datastore, executor=executors.Thread())
    first = flow()
    assert first.layer(Make).value.text == "hello"  # cloudpickle, the fallback

    @datastore.protocol(Tagged)
    class TaggedText(serde.Protocol[Tagged]):
        name = "tagged-text"

        def write(self, value: Tagged, file: Any) -> None:
            file.write(value.text.encode())

        def read(self, file: Any) -> Tagged:
            return Tagged(file.read().decode() + " (by protocol)")

    second = flow()
    assert second.layer(Make).value.text == "hello (by protocol)"
