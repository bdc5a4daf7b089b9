"""Untrusted stores: nothing is unpickled; safe protocols; unknown and ``__main__`` protocols.

A crafted pickle (one whose unpickling creates a marker file) is planted the ways a hostile store
could: as a stored artifact, inline in a split batch, under a forged protocol name, with every hash
updated to match. Read untrusted (the option, ``LAMINAR_TRUST=none``, in a Process worker), no code
runs and the marker stays absent; read trusted, the same planting does run code, which shows each
test could fail.
"""

from __future__ import annotations

import base64
import enum
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stored_splits
from laminar import Flow, Layer
from laminar._serialization import hashing
from laminar._storage import layout
from laminar.configurations import datastores, executors, serde
from laminar.errors import (
    ConfigurationError,
    IntegrityError,
    SerializationError,
    UnknownProtocol,
    UntrustedArtifact,
)

ROOT = Path(__file__).resolve().parent.parent


class Marker:
    """Unpickling this creates the file ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


class Hostile(Flow): ...


@Hostile.register
class Source(Layer):
    def __call__(self) -> None:
        self.small = "small"  # inline
        self.large = "x" * 5000  # stored under artifacts/


def run(root: Path) -> None:
    Hostile(datastore=datastores.Local(root), executor=executors.Thread())(execution="x")


def stored_source(root: Path) -> stored_splits.Stored:
    """Where Source's one split's record is stored (its layer record holds it)."""
    return stored_splits.holding(root, "Hostile", "x", "Source")


def plant(root: Path, name: str, data: bytes, *, protocol: str = "cloudpickle", inline: bool) -> str:
    """Make artifact ``name`` of Source the bytes ``data`` with every hash and checksum consistent."""
    digest = hashing.hexdigest(data)
    if not inline:
        path = root / layout.artifact(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    entry: dict[str, Any] = {
        "hexdigest": digest,
        "codec": "none",
        "protocol": protocol,
        "size": len(data),
        "hash": "blake3",
    }
    if inline:
        entry["inline"] = base64.b64encode(data).decode()

    def replace(split: dict[str, Any]) -> None:
        split["archives"][name]["artifacts"] = [entry]

    stored_source(root).rewrite_split(replace)
    return digest


def read(root: Path, name: str, *, trust: str = "all") -> Any:
    datastore = datastores.Local(root)
    datastore.trust = trust
    return getattr(
        Hostile(datastore=datastore, executor=executors.Thread()).execution("x").layer(Source), name
    )


PLANTINGS = {
    "stored": ("large", False),
    "inline": ("small", True),
}


@pytest.mark.parametrize("planting", sorted(PLANTINGS))
def test_a_planted_pickle_runs_no_code_when_read_untrusted(tmp_path: Path, planting: str) -> None:
    root, marker = tmp_path / "store", tmp_path / "ran"
    run(root)
    name, inline = PLANTINGS[planting]
    digest = plant(root, name, pickle.dumps(Marker(marker)), inline=inline)

    with pytest.raises(UntrustedArtifact) as caught:
        read(root, name, trust="none")
    assert not marker.exists()
    message = str(caught.value)
    assert (
        f"refusing to read artifact {name!r} of layer Source (split 0) in execution x of flow Hostile"
        in message
    )
    assert f"blake3 {digest}" in message
    where = (
        f"{stored_source(root).path.as_uri()} (kept inline)"
        if inline
        else (root / layout.artifact(digest)).as_uri()
    )
    assert where in message
    assert "protocol 'cloudpickle', which is not marked safe and can run code when read" in message
    assert 'opened untrusted (trust="none")' in message and "datastore.use_safe_protocols()" in message

    read(root, name)  # trusted, the very same store runs the planted code: the test can fail
    assert marker.exists()


def test_the_environment_variable_opens_every_datastore_untrusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, marker = tmp_path / "store", tmp_path / "ran"
    run(root)
    plant(root, "large", pickle.dumps(Marker(marker)), inline=False)
    monkeypatch.setenv("LAMINAR_TRUST", "none")
    with pytest.raises(UntrustedArtifact, match="opened untrusted \\(LAMINAR_TRUST=none\\)"):
        read(root, "large")  # trust="all" on the object does not override the environment
    assert not marker.exists()
    assert datastores.Local(root).trust == "none"
    monkeypatch.setenv("LAMINAR_TRUST", "nobody")
    with pytest.raises(ConfigurationError, match="LAMINAR_TRUST must be one of all, none, not 'nobody'"):
        read(root, "large")
    assert not marker.exists()


def test_trust_takes_only_known_levels(tmp_path: Path) -> None:
    datastore = datastores.Local(tmp_path)
    assert datastore.trust == "all" and datastore.trusted
    with pytest.raises(ValueError, match="trust must be one of 'all', 'none', not 'some'"):
        datastore.trust = "some"
    assert datastore.untrusted() is datastore and datastore.trust == "none" and not datastore.trusted


@pytest.mark.parametrize("forged", ["laminar.json", "laminar.str", "laminar.npy", "laminar.bytes"])
@pytest.mark.parametrize("planting", sorted(PLANTINGS))
def test_a_pickle_under_a_forged_safe_protocol_name_runs_no_code(
    tmp_path: Path, forged: str, planting: str
) -> None:
    root, marker = tmp_path / "store", tmp_path / "ran"
    run(root)
    name, inline = PLANTINGS[planting]
    planted = pickle.dumps(Marker(marker))
    plant(root, name, planted, protocol=forged, inline=inline)
    if forged == "laminar.bytes":  # bytes are bytes: given back, never unpickled
        assert read(root, name, trust="none") == planted
    elif forged == "laminar.str":
        with pytest.raises(
            IntegrityError, match=f"artifact {name!r} .* is corrupt: protocol laminar.str cannot"
        ):
            read(root, name, trust="none")
    else:
        with pytest.raises(
            IntegrityError, match=f"artifact {name!r} .* is corrupt: protocol {forged} cannot read it"
        ):
            read(root, name, trust="none")
    assert not marker.exists()


def test_an_unknown_protocol_is_an_error_never_a_fallback_to_pickle(tmp_path: Path) -> None:
    root, marker = tmp_path / "store", tmp_path / "ran"
    run(root)
    plant(root, "large", pickle.dumps(Marker(marker)), protocol="evil.Protocol", inline=False)
    with pytest.raises(UnknownProtocol) as caught:
        read(root, "large")  # trusted, even: no guessing
    assert not marker.exists()
    message = str(caught.value)
    assert "cannot read artifact 'large' of layer Source (split 0) in execution x of flow Hostile" in message
    assert "no serialization protocol named 'evil.Protocol' is registered in this process" in message
    assert "@datastore.protocol(type, ...)" in message
    assert isinstance(caught.value, LookupError)


class Unsafe(serde.Protocol[Any]):
    """A user's protocol, not marked safe: refused untrusted like cloudpickle."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class Vouched(Unsafe):
    safe = True


@pytest.mark.parametrize(("protocol", "refused"), [(Unsafe, True), (Vouched, False)])
def test_only_protocols_marked_safe_are_read_untrusted(tmp_path: Path, protocol: type, refused: bool) -> None:
    class Mine(Flow): ...

    @Mine.register
    class Tuples(Layer):
        def __call__(self) -> None:
            self.value = (1, 2)

    writer = datastores.Local(tmp_path)
    writer.protocol(tuple)(protocol)
    Mine(datastore=writer, executor=executors.Thread())(execution="m")
    reader = datastores.Local(tmp_path).untrusted()
    reader.protocol(tuple)(protocol)
    layer = Mine(datastore=reader, executor=executors.Thread()).execution("m").layer(Tuples)
    if refused:
        with pytest.raises(
            UntrustedArtifact, match=f"protocol '{protocol.__module__}.Unsafe', which is not marked safe"
        ):
            layer.value  # noqa: B018
    else:
        assert layer.value == [1, 2]


# ---- safe protocols -----------------------------------------------------------------------------------


class Safe(Flow): ...


VALUES: dict[str, Any] = {
    "plain": {
        "name": "ada",
        "scores": [1, 2.5, -0.0, None, True, False],
        "nested": {"deep": [[]]},
        "n": 10**30,
    },
    "big_plain": {"rows": [{"i": i, "s": str(i)} for i in range(500)]},
    "text": "héllo, wörld " * 200,
    "short_text": "hi",
    "raw": bytes(range(256)) * 20,
    "number": 42,
    "flag": False,
    "nothing": None,
    "real": 2.5,
    "listed": [1, "two", 3.0],
}


@Safe.register
class Produce(Layer):
    def __call__(self) -> None:
        for name, value in VALUES.items():
            setattr(self, name, value)
        self.array = np.arange(12, dtype=np.int32).reshape(3, 4)
        self.big_array = np.random.default_rng(0).random(1_200_000)  # 9.6 MB: streamed both ways
        self.fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))


@Safe.register
class Consume(Layer):
    def __call__(self, produce: Produce) -> None:
        self.total = int(produce.array.sum()) + len(produce.text) + produce.number


def stored_entry(root: Path, execution: str, name: str) -> dict[str, Any]:
    return stored_splits.holding(root, "Safe", execution, "Produce").artifact(name)


def stored_bytes(root: Path, execution: str, name: str) -> bytes:
    entry = stored_entry(root, execution, name)
    if "inline" in entry:
        return base64.b64decode(entry["inline"])
    return (root / layout.artifact(entry["hexdigest"])).read_bytes()


@pytest.mark.parametrize("executor", [executors.Thread, executors.Process])
def test_safe_protocols_round_trip_untrusted_and_other_tools_read_them(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    datastore = datastores.Local(tmp_path).use_safe_protocols()
    datastore.trust = "none"  # the flow itself runs untrusted: Consume reads Produce's arrays in a worker
    execution = Safe(datastore=datastore, executor=executor())(execution="s")
    reader = Safe(datastore=datastores.Local(tmp_path).untrusted(), executor=executors.Thread()).execution(
        "s"
    )
    produce = reader.layer(Produce)
    for name, value in VALUES.items():
        got = getattr(produce, name)
        assert got == value and type(got) is type(value), name
    np.testing.assert_array_equal(produce.array, np.arange(12, dtype=np.int32).reshape(3, 4))
    np.testing.assert_array_equal(produce.big_array, np.random.default_rng(0).random(1_200_000))
    assert produce.fortran.flags.f_contiguous and produce.fortran.tolist() == [
        [0.0, 1.0, 2.0],
        [3.0, 4.0, 5.0],
    ]
    assert reader.layer(Consume).total == 66 + len(VALUES["text"]) + 42
    assert execution.id == "s"

    protocols = {name: stored_entry(tmp_path, "s", name)["protocol"] for name in [*VALUES, "array"]}
    assert protocols["plain"] == protocols["number"] == protocols["nothing"] == "laminar.json"
    assert (protocols["text"], protocols["raw"], protocols["array"]) == (
        "laminar.str",
        "laminar.bytes",
        "laminar.npy",
    )
    for name in ["plain", "big_plain", "number", "flag", "nothing", "real", "listed"]:
        assert json.loads(stored_bytes(tmp_path, "s", name)) == VALUES[name]
    assert stored_bytes(tmp_path, "s", "text").decode("utf-8") == VALUES["text"]
    assert stored_bytes(tmp_path, "s", "raw") == VALUES["raw"]
    for name in ["array", "big_array"]:
        entry = stored_entry(tmp_path, "s", name)
        assert entry["codec"] == "none"
        path = tmp_path / "npy" / f"{name}.npy"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(stored_bytes(tmp_path, "s", name))
        np.testing.assert_array_equal(np.load(path, allow_pickle=False), getattr(produce, name))


class Level(enum.IntEnum):
    HIGH = 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"point": (1, 2)},
            r"laminar.json cannot store value\['point'\]: a tuple would not read back as one",
        ),
        ({1: "one"}, "laminar.json cannot store value: key 1 is a int, and JSON keys read back as str"),
        ([float("nan")], r"laminar.json cannot store value\[0\]: nan is not a JSON number"),
        ({"level": Level.HIGH}, r"laminar.json cannot store value\['level'\]: a Level would not read back"),
        ([{"s": {1, 2}}], r"laminar.json cannot store value\[0\]\['s'\]: a set would not read back"),
        (np.array([object()]), "laminar.npy cannot store an array of dtype object: it holds Python objects"),
        ("\ud800", "laminar.str cannot store this str"),
    ],
    ids=["tuple", "int key", "nan", "int subclass", "set", "object array", "surrogate"],
)
def test_safe_protocols_refuse_at_write_time_what_would_not_read_back(
    tmp_path: Path, value: Any, message: str
) -> None:
    class Refused(Flow): ...

    @Refused.register
    class Write(Layer):
        def __call__(self) -> None:
            self.value = value

    flow = Refused(datastore=datastores.Local(tmp_path).use_safe_protocols(), executor=executors.Thread())
    with pytest.raises(SerializationError, match=message) as caught:
        flow(execution="r")
    assert "Write" in str(caught.value) and "value" in str(caught.value)


def test_safe_protocols_are_readable_without_registering_them(tmp_path: Path) -> None:
    Safe(datastore=datastores.Local(tmp_path).use_safe_protocols(), executor=executors.Thread())(
        execution="s"
    )
    plain = datastores.Local(tmp_path).untrusted()  # nothing registered on this object
    produce = Safe(datastore=plain, executor=executors.Thread()).execution("s").layer(Produce)
    assert produce.plain == VALUES["plain"] and produce.text == VALUES["text"]


# ---- untrusted in a Process worker ----------------------------------------------------------------------


class Shipped(Flow): ...


@Shipped.register
class Plants(Layer):
    def __call__(self) -> None:
        self.value = Marker(Path(self.marker_path()))

    @staticmethod
    def marker_path() -> str:
        import os

        return os.environ["TRUST_TEST_MARKER"]


@Shipped.register
class Reads(Layer):
    def __call__(self, plants: Plants) -> None:
        self.seen = type(plants.value).__name__  # unpickling Plants.value would create the marker


@pytest.mark.parametrize("how", ["option", "environment", "trusted"])
def test_a_process_worker_reading_untrusted_runs_no_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("TRUST_TEST_MARKER", str(marker))
    datastore = datastores.Local(tmp_path / "store")
    if how == "option":
        datastore.trust = "none"
    elif how == "environment":
        monkeypatch.setenv("LAMINAR_TRUST", "none")
    flow = Shipped(datastore=datastore, executor=executors.Process())
    if how == "trusted":
        flow(execution="p")
        assert marker.exists()  # unpickled in the worker: the planted value does run code
        return
    with pytest.raises(UntrustedArtifact) as caught:
        flow(execution="p")
    assert not marker.exists()
    message = str(caught.value)
    assert (
        "refusing to read artifact 'value' of layer Plants (split 0) in execution p of flow Shipped"
        in message
    )
    source = 'trust="none"' if how == "option" else "LAMINAR_TRUST=none"
    assert "protocol 'cloudpickle'" in message and f"opened untrusted ({source})" in message


# ---- protocols defined in __main__ --------------------------------------------------------------------------

SCRIPT = """
import sys
from laminar import Flow, Layer
from laminar.configurations import datastores, executors, serde

datastore = datastores.Local(sys.argv[1] if len(sys.argv) > 1 else "store")


@datastore.protocol(tuple)
class Pairs(serde.Protocol):
    def dumps(self, value):
        return ",".join(map(str, value)).encode()

    def loads(self, data):
        return tuple(int(part) for part in data.decode().split(","))


class Script(Flow): ...


@Script.register
class Make(Layer):
    def __call__(self):
        self.pair = (1, 2)


@Script.register
class Use(Layer):
    def __call__(self, make: Make):
        self.total = sum(make.pair)  # read back in a worker process


if flow := Script(datastore=datastore, executor=executors.Process()):
    flow(execution="main")
"""


def test_a_protocol_defined_in_main_is_recorded_under_the_scripts_importable_name(tmp_path: Path) -> None:
    (tmp_path / "pairs_script.py").write_text(SCRIPT)
    store = tmp_path / "store"
    environment = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    ran = subprocess.run(
        [sys.executable, "pairs_script.py", str(store)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert ran.returncode == 0, ran.stderr
    pair = stored_splits.holding(store, "Script", "main", "Make").artifact("pair")
    assert pair["protocol"] == "pairs_script.Pairs"
    # another program imports the script by that name and reads the value back
    reading = "from pairs_script import Make, Use, flow\nprint(flow.execution('main').layer(Make).pair, flow.execution('main').layer(Use).total)"
    read = subprocess.run(
        [sys.executable, "-c", reading, str(store)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "(1, 2) 3"


def test_a_protocol_in_main_without_an_importable_name_is_refused_at_write_time(tmp_path: Path) -> None:
    code = SCRIPT.replace("executors.Process()", "executors.Thread()")
    ran = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")], cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode != 0
    assert "SerializationError" in ran.stderr
    assert "protocol Pairs is defined in __main__ with no importable name" in ran.stderr
    assert "move it into an importable module" in ran.stderr
    assert not (tmp_path / "store" / layout.record("Script", "main", "Make")).exists()


def test_no_protocol_lookup_falls_back(tmp_path: Path) -> None:
    """The registry itself: a name nothing registered raises, whatever the fallback for ``object`` is."""
    from laminar._serialization.protocols import Pickle
    from laminar._serialization.registry import ProtocolRegistry, Protocols

    registry = ProtocolRegistry()
    registry.add([object], Pickle())
    protocols = Protocols(registry)
    assert protocols.by_name("cloudpickle") is protocols.fallback
    assert protocols.by_name("laminar.json").name == "laminar.json"
    with pytest.raises(LookupError, match=r"no serialization protocol named 'x.Y'"):
        protocols.by_name("x.Y")
