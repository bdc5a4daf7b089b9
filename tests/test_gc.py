"""``laminar gc`` and ``laminar._storage.gc``: old executions and unreferenced blobs go, shared blobs and
everything a running execution may use stay. Real runs on a local ``file://`` datastore."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from laminar import Flow, Layer, Parameters
from laminar._cli.main import cli
from laminar._storage import gc, layout
from laminar._storage.lease import Lease
from laminar.configurations import datastores, executors

SIZE = 64 * 1024  # well above the inline limit: each value is a blob under artifacts/


def noise(seed: int) -> bytes:
    """Incompressible bytes, the same for the same seed (so two executions share the blob)."""
    return random.Random(seed).randbytes(SIZE)


class Shared(Flow): ...


@Shared.register
class Make(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.common = noise(0)  # the same in every execution
        self.own = noise(parameters.seed)  # different in each


def blob_keys(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in (root / "artifacts").rglob("*") if path.is_file()}


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def key_of(flow: Flow, execution: str, layer: str, name: str) -> str:
    """The key of the blob holding artifact ``name`` of ``layer``, from its split record."""
    archive = flow.configuration.store(flow.name, execution).archive(layer, 0, name)
    assert archive is not None and archive.artifacts[0].inline is None
    return layout.artifact(archive.artifacts[0].hexdigest)


@pytest.fixture
def two_executions(tmp_path: Path) -> tuple[Path, Shared]:
    root = tmp_path / "store"
    flow = Shared(datastore=datastores.Local(root), executor=executors.Thread())
    flow(execution="old", seed=1)
    flow(execution="new", seed=2)
    return root, flow


def laminar(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_deleting_one_execution_keeps_every_blob_the_other_uses(two_executions: tuple[Path, Shared]) -> None:
    root, flow = two_executions
    assert len(blob_keys(root)) == 3  # common once, own twice
    common, new_own = key_of(flow, "new", "Make", "common"), key_of(flow, "new", "Make", "own")
    old_own = key_of(flow, "old", "Make", "own")
    assert key_of(flow, "old", "Make", "common") == common

    freed = (root / old_own).stat().st_size
    assert freed > SIZE

    result = laminar("gc", root.as_uri(), "--keep-last", "1")
    assert result.exit_code == 0, result.output
    assert "deleted execution old of flow Shared" in result.stdout
    assert f"deleted 1 execution(s) and 1 blob(s): freed 64.0 KiB ({freed} bytes)" in result.stdout
    assert "kept 1 execution(s); 2 reference(s) to 2 blob(s)" in result.stdout

    assert blob_keys(root) == {common, new_own}
    assert old_own not in blob_keys(root)
    assert [e.id for e in flow.configuration.datastore.list_executions(flow=flow)] == ["new"]
    assert not (root / "flows" / "Shared" / "executions" / "old").exists()  # its logs, leases, records
    # the survivor reads back whole, and checks its hashes doing so
    reread = Shared(datastore=datastores.Local(root), executor=executors.Thread()).execution("new")
    assert reread.layer(Make).common == noise(0)
    assert reread.layer(Make).own == noise(2)
    assert reread.status == "succeeded"


def test_the_dedup_figures_count_shared_blobs_once(two_executions: tuple[Path, Shared]) -> None:
    root, _ = two_executions
    result = laminar("gc", root.as_uri(), "--dry-run", "--json")
    figures = json.loads(result.stdout)
    blob = max((root / key).stat().st_size for key in blob_keys(root))  # each holds SIZE bytes, pickled
    assert figures["references"] == 4 and figures["blobs"] == 3
    assert figures["referenced_bytes"] == 4 * blob and figures["stored_bytes"] == 3 * blob
    assert figures["dedup_saved_bytes"] == blob
    assert figures["deleted_blobs"] == 0 and figures["freed_bytes"] == 0


def test_dry_run_deletes_nothing(two_executions: tuple[Path, Shared]) -> None:
    root, _ = two_executions
    before = every_file(root)
    result = laminar("gc", root.as_uri(), "--keep-last", "0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would delete 2 execution(s) and 3 blob(s): would free 192.0 KiB" in result.stdout
    assert every_file(root) == before


def test_nothing_is_deleted_while_an_execution_holds_a_live_lease(
    two_executions: tuple[Path, Shared],
) -> None:
    root, _ = two_executions
    (root / "artifacts" / "ab").mkdir(parents=True, exist_ok=True)
    (root / "artifacts" / "ab" / ("ab" + "0" * 62)).write_bytes(b"orphan")  # garbage, but not now
    lease = Lease(datastores.Local(root), "Shared", "new")
    lease.acquire()
    try:
        before = every_file(root)
        result = CliRunner().invoke(cli, ["gc", root.as_uri(), "--keep-last", "0"])
        assert result.exit_code == 1
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1
        assert "execution new of flow Shared is running" in line
        assert "gc deletes nothing while an execution in the datastore holds a live lease" in line
        assert every_file(root) == before
        with pytest.raises(Exception, match="is running"):
            gc.collect(datastores.Local(root))
        assert every_file(root) == before
    finally:
        lease.release()
    result = laminar("gc", root.as_uri())
    assert result.exit_code == 0, result.output
    assert "deleted 0 execution(s) and 1 blob(s): freed 6 B" in result.stdout


def test_unreferenced_blobs_go_without_deleting_executions(two_executions: tuple[Path, Shared]) -> None:
    root, flow = two_executions
    orphan = root / layout.artifact("cd" + "1" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x" * 1000)
    result = gc.collect(datastores.Local(root))
    assert [b for b in result.deleted_blobs] == ["cd" + "1" * 62]
    assert result.freed_bytes == 1000 and not result.deleted_executions
    assert not orphan.exists()
    assert len(flow.configuration.datastore.list_executions(flow=flow)) == 2


def test_older_than(two_executions: tuple[Path, Shared]) -> None:
    root, _ = two_executions
    assert gc.collect(datastores.Local(root), older_than=3600).deleted_executions == []
    result = gc.collect(datastores.Local(root), older_than=0)
    assert sorted(e.id for e in result.deleted_executions) == ["new", "old"]
    assert blob_keys(root) == set()
    assert not (root / "flows" / "Shared" / "executions").exists()


def test_ages_and_bad_input(tmp_path: Path) -> None:
    assert gc.parse_age("90s") == 90 and gc.parse_age("2h") == 7200 and gc.parse_age("7d") == 604800
    assert gc.parse_age("1.5m") == 90 and gc.parse_age("30") == 30
    result = CliRunner().invoke(cli, ["gc", str(tmp_path), "--older-than", "soon"])
    assert result.exit_code == 2 and "'soon' is not an age" in result.stderr
    result = CliRunner().invoke(cli, ["gc", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "neither a datastore URL" in result.stderr


def test_gc_across_flows_keeps_a_blob_another_flow_shares(tmp_path: Path) -> None:
    """Blobs are shared by all flows of a store: deleting one flow's executions keeps another's."""
    root = tmp_path / "store"
    script = tmp_path / "other.py"
    script.write_text(
        textwrap.dedent(
            """
            import random
            from laminar import Flow, Layer

            class Other(Flow): ...

            @Other.register
            class Keep(Layer):
                def __call__(self) -> None:
                    self.common = random.Random(0).randbytes(64 * 1024)
            """
        )
    )
    flow = Shared(datastore=datastores.Local(root), executor=executors.Thread())
    flow(execution="mine", seed=5)
    result = CliRunner().invoke(
        cli,
        ["run", str(script), "--datastore", root.as_uri(), "--executor", "thread", "--execution", "theirs"],
    )
    assert result.exit_code == 0, result.output
    common = key_of(flow, "mine", "Make", "common")
    # keep-last counts per flow: each flow keeps its one execution
    collected = gc.collect(datastores.Local(root), keep_last=1)
    assert not collected.deleted_executions
    gc.delete_execution(datastores.Local(root), "Shared", "mine")
    collected = gc.collect(datastores.Local(root))
    assert blob_keys(root) == {common}  # Other still uses it
    assert len(collected.deleted_blobs) == 1  # Shared's own value


@pytest.mark.s3
def test_gc_on_an_object_store(s3_location: str) -> None:
    """The same on S3 (moto's server): deletes go through the datastore's own ``delete``."""
    flow = Shared(datastore=s3_location, executor=executors.Thread())
    flow(execution="old", seed=1)
    flow(execution="new", seed=2)
    datastore = flow.configuration.datastore
    assert len(gc.blobs(datastore)) == 3
    result = laminar("gc", s3_location, "--keep-last", "1")
    assert result.exit_code == 0, result.output
    assert "deleted 1 execution(s) and 1 blob(s)" in result.stdout
    assert len(gc.blobs(datastore)) == 2
    assert datastore.list_prefix(layout.executions("Shared")) == ["new"]
    reread = Shared(datastore=s3_location, executor=executors.Thread()).execution("new")
    assert reread.layer(Make).common == noise(0) and reread.layer(Make).own == noise(2)
