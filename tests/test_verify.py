"""``laminar verify FILE EXECUTION``: every value an execution's records point to is checked against its
address; damage and loss are named; ``--repair`` marks the damaged layers (and those that depend on
them) not finished, moving what it takes away aside, and ``laminar resume`` computes exactly those
again, after which the values read back and verify says the execution is intact.

Run through click's CliRunner (as tests/test_cli.py does) against a flow file, on a local datastore
and on the S3, GCS and Azure emulators. Which layers ran is counted by the flow itself, in a file.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import compressed_otherwise, datastore_at, files
from laminar import Flow, Layer, Parameters
from laminar._cli.main import cli
from laminar._serialization.registry import Protocols
from laminar._storage import layout, verification
from laminar._storage.store import ExecutionStore
from laminar.configurations import datastores, executors

FLOW = textwrap.dedent(
    """
    import os
    import random

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter


    def ran(name):
        with open(os.environ["CHAIN_RAN"], "a") as file:
            file.write(name + "\\n")


    class Chain(Flow): ...


    @Chain.register
    class Start(Layer):
        def __call__(self, parameters: Parameters) -> None:
            ran("Start")
            self.shard(item=list(range(parameters.n)))


    @Chain.register(foreach=ForEach(parameters=[Parameter(layer=Start, attribute="item")]))
    class Big(Layer):
        def __call__(self, start: Start) -> None:
            ran(f"Big {start.item}")
            self.blob = random.Random(start.item).randbytes(5000)  # stored under artifacts/


    @Chain.register
    class Side(Layer):
        def __call__(self, start: Start) -> None:
            ran("Side")
            self.count = len(list(start.item))


    @Chain.register
    class Total(Layer):
        def __call__(self, big: Big) -> None:
            ran("Total")
            self.total = sum(len(blob) for blob in big.blob)
    """
)

BACKENDS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("gcs", marks=pytest.mark.gcs),
    pytest.param("azure", marks=pytest.mark.azure),
]


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "chain_flow.py"
    path.write_text(FLOW)
    return path


@pytest.fixture
def ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the flow's layers append their names to as they run."""
    path = tmp_path / "ran.txt"
    monkeypatch.setenv("CHAIN_RAN", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def laminar(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def ran_since(path: Path) -> list[str]:
    """What ran since the last call (the file is emptied)."""
    found = sorted(path.read_text().splitlines()) if path.exists() else []
    path.write_text("")
    return found


def run(flow_file: Path, url: str, ran: Path, execution: str = "e1") -> None:
    result = laminar("run", flow_file, "--datastore", url, "--param", "n=3", "--execution", execution)
    assert result.exit_code == 0, result.output
    assert ran_since(ran) == ["Big 0", "Big 1", "Big 2", "Side", "Start", "Total"]


def blob_keys(datastore: Any, execution: str = "e1") -> dict[int, str]:
    """The key of the stored value ``blob`` of each split of layer Big."""
    prefix = layout.splits("Chain", execution, "Big")
    found = {}
    for name in datastore.list_prefix(prefix):
        payload = json.loads(datastore.read_bytes(prefix + name))
        for index, split in payload["splits"].items():
            (artifact,) = split["archives"]["blob"]["artifacts"]
            assert "inline" not in artifact  # the guard: these are stored values, under artifacts/
            found[int(index)] = layout.artifact(artifact["hexdigest"])
    return found


def batch_mates(datastore: Any, splits: set[int], execution: str = "e1") -> list[int]:
    """The splits of layer Big committed in one batch with any of ``splits``: a repair runs those
    again (their batch is moved aside), and keeps the others. Batch boundaries follow timing."""
    prefix = layout.splits("Chain", execution, "Big")
    mates: set[int] = set()
    for name in datastore.list_prefix(prefix):
        indices = {int(i) for i in json.loads(datastore.read_bytes(prefix + name))["splits"]}
        if indices & splits:
            mates |= indices
    return sorted(mates)


def flip(datastore: Any, key: str) -> None:
    data = bytearray(datastore.read_bytes(key))
    data[len(data) // 2] ^= 0x01
    datastore.write_bytes(key, bytes(data))


def verify(flow_file: Path, url: str, *extra: str, execution: str = "e1") -> Result:
    return laminar("verify", flow_file, execution, "--datastore", url, *extra)


@pytest.fixture
def location(request: pytest.FixtureRequest, store: str) -> Iterator[str]:
    backend = request.param
    yield store if backend == "local" else request.getfixturevalue(f"{backend}_location")


@pytest.mark.parametrize("location", BACKENDS, indirect=True)
def test_a_damaged_and_a_missing_value_are_named_and_repair_then_resume_recomputes_their_layer_and_dependents(
    flow_file: Path, location: str, ran: Path, tmp_path: Path
) -> None:
    run(flow_file, location, ran)
    datastore = datastore_at(location)
    keys = blob_keys(datastore)
    rerun = [f"Big {index}" for index in batch_mates(datastore, {1, 2})]  # Big 1 and 2 at least
    flip(datastore, keys[1])
    datastore.delete(keys[2])

    found = verify(flow_file, location)
    assert found.exit_code == 1, found.output
    assert "2 problem(s) among" in found.output, found.output
    reported = json.loads(verify(flow_file, location, "--json").output)
    assert reported["intact"] is False
    assert [(f["layer"], f["problem"], f["what"]) for f in reported["findings"]] == [
        ("Big", "damaged", "artifact 'blob' (split 1)"),
        ("Big", "missing", "artifact 'blob' (split 2)"),
    ]
    assert reported["findings"][0]["url"] == f"{datastore.url}/{keys[1]}"
    assert "its bytes hash to" in reported["findings"][0]["reason"]
    assert reported["findings"][1]["url"] == f"{datastore.url}/{keys[2]}"

    repaired = verify(flow_file, location, "--repair")
    assert repaired.exit_code == 1, repaired.output
    assert "marked not finished: Big, Total (depends on a damaged layer)" in repaired.output, repaired.output
    assert f"laminar resume {flow_file} e1" in repaired.output
    assert ran_since(ran) == []  # verify ran nothing
    between = verify(flow_file, location)  # what is left is whole; the marked layers are not finished
    assert between.exit_code == 0, between.output
    assert (
        "is intact" in between.output
        and "not finished (a resume computes them): Big, Total" in between.output
    )

    resumed = laminar("resume", flow_file, "e1", "--datastore", location)
    assert resumed.exit_code == 0, resumed.output
    assert ran_since(ran) == [*rerun, "Total"]  # not Start, not Side, nor a split of an intact batch

    for index in (1, 2):
        out = tmp_path / f"blob{index}"
        got = laminar(
            "get",
            flow_file,
            "e1",
            "Big",
            "blob",
            "--index",
            str(index),
            "--output",
            out,
            "--datastore",
            location,
        )
        assert got.exit_code == 0, got.output
        assert out.read_bytes() == random.Random(index).randbytes(5000)
    again = verify(flow_file, location)
    assert again.exit_code == 0, again.output
    assert "is intact" in again.output


def test_an_intact_execution_is_said_to_be_intact_with_exit_status_0(
    flow_file: Path, store: str, ran: Path
) -> None:
    run(flow_file, store, ran)
    result = verify(flow_file, store)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("execution e1 of flow Chain is intact: ")
    assert "3 stored" in result.output  # the three blobs were read
    reported = json.loads(verify(flow_file, store, "--json").output)
    assert reported["intact"] is True and reported["findings"] == [] and reported["repair"] is None
    assert reported["blobs"] == 3 and reported["bytes"] >= 3 * 5000
    assert reported["layers"] == ["Parameters", "Start", "Big", "Side", "Total"]
    assert reported["unfinished"] == []
    repaired = verify(flow_file, store, "--repair")  # nothing to repair: nothing moved
    assert repaired.exit_code == 0 and "is intact" in repaired.output
    assert not list((Path(store.removeprefix("file://")) / layout.execution("Chain", "e1")).glob("repaired"))


def test_verify_writes_nothing_and_repair_moves_aside_what_it_takes_away(
    flow_file: Path, store: str, ran: Path
) -> None:
    run(flow_file, store, ran)
    root = Path(store.removeprefix("file://"))
    datastore = datastore_at(store)
    keys = blob_keys(datastore)
    flip(datastore, keys[0])
    before = {name: (root / name).read_bytes() for name in files(root)}

    assert verify(flow_file, store).exit_code == 1
    assert {name: (root / name).read_bytes() for name in files(root)} == before

    repaired = json.loads(verify(flow_file, store, "--repair", "--json").output)["repair"]
    assert repaired["marked"] == ["Big", "Total"] and repaired["dependents"] == ["Total"]
    execution = layout.execution("Chain", "e1")
    (folder,) = (root / execution / "repaired").iterdir()
    assert repaired["folder"] == f"{datastore.url}/{execution}repaired/{folder.name}/"
    batches = [layout.splits("Chain", "e1", "Big"), layout.splits("Chain", "e1", "Total")]
    expected = {
        keys[0],
        layout.record("Chain", "e1", "Big"),
        layout.layer_status("Chain", "e1", "Big"),
        layout.record("Chain", "e1", "Total"),
        layout.layer_status("Chain", "e1", "Total"),
        *(key for key in before if key.startswith(tuple(batches))),
    }
    assert set(repaired["moved"]) == expected
    for key in repaired["moved"]:  # each is kept, byte for byte, under the repair's folder
        assert not (root / key).exists()
        aside = folder / key.removeprefix(execution)
        assert aside.read_bytes() == before[key], key
    after = {name: (root / name).read_bytes() for name in files(root)}
    assert {key for key in before if key not in after} == set(repaired["moved"])  # nothing else went


@pytest.mark.parametrize(
    ("layer", "runs_again"),
    [
        ("Big", []),  # its splits' results were whole, in batches: only the record is written again
        ("Side", ["Side"]),  # a layer of one split: its record held the split's result, so it runs again
    ],
)
def test_a_damaged_layer_record_is_written_again(
    flow_file: Path, store: str, ran: Path, layer: str, runs_again: list[str]
) -> None:
    run(flow_file, store, ran)
    record = Path(store.removeprefix("file://")) / layout.record("Chain", "e1", layer)
    record.write_bytes(record.read_bytes().replace(b'"splits":', b'"splits":1'))

    found = json.loads(verify(flow_file, store, "--json").output)["findings"]
    assert [(f["layer"], f["problem"], f["what"]) for f in found] == [(layer, "damaged", "its record")]
    assert "do not match its checksum" in found[0]["reason"]
    repaired = verify(flow_file, store, "--repair")
    assert f"marked not finished: {layer}\n" in repaired.output, repaired.output
    assert laminar("resume", flow_file, "e1", "--datastore", store).exit_code == 0
    assert ran_since(ran) == runs_again
    final = verify(flow_file, store)
    assert final.exit_code == 0, final.output


@pytest.mark.parametrize("held", [True, False], ids=["in-its-record", "in-a-batch-as-before-2026.12.5"])
def test_repair_refuses_damaged_parameters_and_moves_nothing(
    flow_file: Path, store: str, ran: Path, held: bool
) -> None:
    run(flow_file, store, ran)
    root = Path(store.removeprefix("file://"))
    if held:  # the Parameters layer's record holds its one split
        damaged = root / layout.record("Chain", "e1", "Parameters")
    else:  # as earlier releases wrote it: the split in a batch of its own
        execution = ExecutionStore(datastore_at(store), "Chain", "e1", Protocols())
        record = execution.record("Parameters")
        assert record is not None and set(record.held) == {0}
        batch = execution.write_splits("Parameters", dict(record.held))
        execution.write_record(
            execution.layer_record("Parameters", 1, batches={batch: ((0, 0),)}, artifacts=record.artifacts)
        )
        (damaged,) = (root / layout.splits("Chain", "e1", "Parameters")).iterdir()
    damaged.write_bytes(damaged.read_bytes()[:-5])
    before = files(root)
    result = verify(flow_file, store, "--repair")
    assert result.exit_code == 1
    assert (
        "Parameters" in result.output and ("its record" if held else "split batch 0-0.json") in result.output
    )
    assert "its status" not in result.output  # it has no status record: none is damaged
    assert (
        "Error: IntegrityError: the parameters of execution e1 of flow Chain are damaged, and cannot be "
        "computed again; run the flow again with its parameters"
    ) in result.output
    assert files(root) == before


def test_repair_refuses_while_the_execution_runs_and_moves_nothing(
    flow_file: Path, store: str, ran: Path
) -> None:
    run(flow_file, store, ran)
    root = Path(store.removeprefix("file://"))
    datastore = datastore_at(store)
    flip(datastore, blob_keys(datastore)[0])
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        leases = root / layout.leases("Chain", "e1")
        generation = max(layout.parse_lease(name.name) or 0 for name in leases.iterdir()) + 1
        now = time.time()
        live = {"generation": generation, "host": os.uname().nodename, "pid": holder.pid, "since": now}
        live |= {"heartbeat": now, "ttl": 600.0, "released": False, "token": "another"}
        (root / layout.lease("Chain", "e1", generation)).write_text(json.dumps({"layout": 2, **live}))
        before = files(root)
        result = verify(flow_file, store, "--repair")
        assert result.exit_code == 1
        assert (
            f"Error: LeaseHeld: execution e1 of flow Chain is running (pid {holder.pid} on" in result.output
        )
        assert "repair it once that run has ended" in result.output
        assert files(root) == before
    finally:
        holder.kill()
        holder.wait()


# ---- the check itself, on values read as streams and stored compressed --------------------------

BIG = 9 << 20  # above staging.IN_MEMORY_LIMIT: read as a stream
REPEATED = " ".join(str(i) for i in range(1_300_000)).encode()  # zstd on a store that compresses


class Values(Flow): ...


@Values.register
class Stored(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.noise = random.Random(1).randbytes(BIG)
        self.repeated = REPEATED


def stored_values(root: Path) -> tuple[Any, dict[str, str]]:
    datastore = datastores.Local(root)
    datastore.worth_compressing = 0.85  # compress what shrinks, as an object store would
    flow = Values(datastore=datastore, executor=executors.Thread())
    flow(execution="v")
    store = flow.configuration.store("Values", "v")
    (record,) = store.finished_splits("Stored").values()
    archives = {name: archive.artifacts[0] for name, archive in record.archives.items()}
    assert archives["repeated"].codec == "zstd" and archives["noise"].codec == "none"
    return flow, {name: layout.artifact(artifact.hexdigest) for name, artifact in archives.items()}


def checked(flow: Any, datastore: Any = None) -> verification.Verification:
    store = flow.configuration.store("Values", "v")
    if datastore is not None:
        store = type(store)(datastore, "Values", "v", store.protocols)
    return verification.verify(store, list(flow.plan.order))


def test_large_and_compressed_values_are_streamed_through_their_hash(tmp_path: Path) -> None:
    flow, keys = stored_values(tmp_path)
    progress: list[tuple[int, int, int]] = []
    store = flow.configuration.store("Values", "v")
    result = verification.verify(store, list(flow.plan.order), progress=lambda *seen: progress.append(seen))
    assert result.intact and result.blobs == 2
    assert (
        result.bytes
        == (tmp_path / keys["noise"]).stat().st_size + (tmp_path / keys["repeated"]).stat().st_size
    )
    assert progress[-1] == (2, 2, result.bytes)  # each blob reported as it was checked

    data = bytearray((tmp_path / keys["noise"]).read_bytes())
    data[BIG // 2] ^= 0x01
    (tmp_path / keys["noise"]).write_bytes(bytes(data))
    compressed = tmp_path / keys["repeated"]
    compressed.write_bytes(compressed.read_bytes()[:-100])  # a truncated zstd stream
    found = checked(flow)
    assert [(f.what, f.problem) for f in found.findings] == [
        ("artifact 'noise' (split 0)", "damaged"),
        ("artifact 'repeated' (split 0)", "damaged"),
    ]


def test_a_value_read_accepts_another_encoding_of_passes_and_only_where_a_read_accepts_it(
    tmp_path: Path,
) -> None:
    """Verify passes what reading the value passes: a zstd stream an earlier zstandard wrote for the
    same value, in a trusted store; an untrusted one decompresses nothing a record does not name."""
    flow, keys = stored_values(tmp_path)
    blob = tmp_path / keys["repeated"]
    blob.write_bytes(compressed_otherwise(blob.read_bytes()))
    assert checked(flow).intact
    assert flow.execution("v").layer(Stored).repeated == REPEATED
    untrusted = checked(flow, datastores.Local(tmp_path).untrusted())
    assert [(f.what, f.problem) for f in untrusted.findings] == [("artifact 'repeated' (split 0)", "damaged")]


def test_an_execution_that_does_not_exist_is_named_and_nothing_is_written(
    flow_file: Path, store: str, ran: Path
) -> None:
    run(flow_file, store, ran)
    root = Path(store.removeprefix("file://"))
    before = files(root)
    result = verify(flow_file, store, "--repair", execution="nope")
    assert result.exit_code == 1
    assert "execution nope of flow Chain does not exist" in result.output, result.output
    assert files(root) == before
