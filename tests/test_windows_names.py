"""Names that a Windows client or an SMB share cannot keep apart are refused, whatever they name.

Windows reserves device names in every directory (``CON``, ``con.txt``, ``COM1`` ...) and strips a
trailing ``.`` or space, so ``name.`` and ``name`` would share one directory. A store may live on such
a share, so each kind of name that becomes part of a key is refused before anything is stored.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import files
from laminar import Flow, Layer
from laminar.configurations import datastores, executors
from laminar.errors import InvalidName

DEVICES = ["CON", "con", "Con.txt", "PRN.log", "aux", "NUL.tar.gz", "nul.", "COM1", "com9.json", "LPT1"]
DEVICES += ["lpt9"] + [f"COM{n}" for n in range(2, 9)] + [f"LPT{n}.x" for n in range(2, 9)]
TRAILING = ["name.", "name..", "v1.2.", "name ", "name. ", "CON "]
REFUSED = DEVICES + TRAILING
#: Close to a refused name, and kept apart by every file system: still accepted.
ACCEPTED = ["value", "CONSOLE", "con_txt", "COM0", "LPT10", "a.b", "prnlog", "x.nul", "COM1x"]


def message(what: str, name: str) -> str:
    """The one InvalidName message for every name Windows cannot keep apart, as a regex."""
    return (
        re.escape(f"{what} {name!r} cannot be used as a storage name: Windows and SMB shares cannot keep it ")
        + r"apart from other names \(they reserve CON, PRN, AUX, NUL, COM1-9 and LPT1-9, with any extension, "
        + r"for devices, and strip a trailing '\.' or space\); choose another name"
    )


def flow_class(name: str = "Names") -> type[Flow]:
    return type(name, (Flow,), {})


@pytest.mark.parametrize("name", REFUSED)
def test_an_execution_id_is_refused(tmp_path: Path, name: str) -> None:
    flow = flow_class()(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(InvalidName, match=message("execution id", name)):
        flow(execution=name)
    with pytest.raises(InvalidName, match=message("execution id", name)):
        flow.execution(name)  # reading it too
    assert files(tmp_path) == []


@pytest.mark.parametrize("name", REFUSED)
def test_a_flow_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidName, match=message("flow name", name)):
        flow_class(name)


@pytest.mark.parametrize("name", REFUSED)
def test_a_layer_name_is_refused(name: str) -> None:
    flow = flow_class()
    with pytest.raises(InvalidName, match=message("layer name", name)):
        flow.register(type(name, (Layer,), {}))
    assert set(flow.registry) == {"Parameters"}


@pytest.mark.parametrize("name", REFUSED)
def test_a_parameter_name_is_refused(tmp_path: Path, name: str) -> None:
    flow = flow_class()(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(InvalidName, match=message("parameter name", name)):
        flow(execution="e", **{name: 1})
    assert files(tmp_path) == []


def run_assigning(tmp_path: Path, name: str, *, shard: bool) -> Path:
    """Run a flow whose one layer assigns (or shards) artifact ``name`` (refused); its layer's folder."""
    flow = flow_class()

    @flow.register
    class Assigns(Layer):
        def __call__(self) -> None:
            self.kept = 1
            if shard:
                self.shard(**{name: [1, 2]})
            else:
                setattr(self, name, 1)

    with pytest.raises(InvalidName, match=message("artifact name", name)):
        flow(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="e")
    return tmp_path / "flows" / "Names" / "executions" / "e" / "layers" / "Assigns"


@pytest.mark.parametrize("shard", [False, True], ids=["assigned", "sharded"])
@pytest.mark.parametrize("name", ["CON", "prn.log", "Lpt3", "name.", "name "])
def test_an_artifact_or_shard_name_is_refused_and_the_split_stores_nothing(
    tmp_path: Path, name: str, shard: bool
) -> None:
    layer = run_assigning(tmp_path, name, shard=shard)
    assert not (layer / "record.json").exists()
    assert not (layer / "splits").exists()  # not even the artifact assigned before it
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_windows_keeps_apart_are_accepted(tmp_path: Path, name: str) -> None:
    flow = flow_class()

    @flow.register
    class Assigns(Layer):
        def __call__(self) -> None:
            setattr(self, name, 1)

    execution = flow(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution=name)
    assert getattr(execution.layer(Assigns), name) == 1
    assert flow_class(name).__name__ == name
