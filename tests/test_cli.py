"""The ``laminar`` command against real executions in a local ``file://`` datastore.

Every command is run through click's CliRunner (in this process, as the console script would run
it) against flows written to files in the test's temporary directory; one test runs the installed
``.venv/bin/laminar`` entry point as a real subprocess. Logs are read back from the Thread, process
and Dask executors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from laminar._cli.main import cli

FLOW = textwrap.dedent(
    """
    import logging
    import os

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter, Retry


    class Numbers(Flow): ...


    @Numbers.register
    class Source(Layer):
        def __call__(self, parameters: Parameters) -> None:
            print(f"source saw n={parameters.n}")
            self.shard(item=list(range(parameters.n)))
            self.blob = b"raw bytes \\x00\\x01"
            self.text = "hello"


    @Numbers.register(foreach=ForEach(parameters=[Parameter(layer=Source, attribute="item")]))
    class Square(Layer):
        def __call__(self, source: Source) -> None:
            print(f"squaring {source.item} in pid {os.getpid()}")
            logging.getLogger("numbers").warning("logged %s", source.item)
            self.value = source.item**2


    @Numbers.register(retry=Retry(attempts=2, delay=0))
    class Total(Layer):
        def __call__(self, square: Square, parameters: Parameters) -> None:
            if os.environ.get("NUMBERS_FAIL") and not os.path.exists(os.environ["NUMBERS_FAIL"]):
                raise ValueError(f"total refused on attempt {self.attempt}")
            self.total = sum(square.value)


    if __name__ == "__main__":
        raise SystemExit("the __main__ part ran, and must not under `laminar`")
    """
)


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "numbers_flow.py"
    path.write_text(FLOW)
    return path


@pytest.fixture
def store(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def laminar(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], env=env, catch_exceptions=False)


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = laminar(*args, env=env)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def fails(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail: non-zero exit, one line on stderr, no traceback; the line.

    A run's progress lines (``laminar: ...``, the progress plugin's, on stderr) are not errors.
    """
    result = laminar(*args, env=env)
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("laminar: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def run(flow_file: Path, store: str, *extra: str, env: dict[str, str] | None = None) -> str:
    return ok("run", flow_file, "--datastore", store, "--executor", "thread", *extra, env=env)


# ---- run, executions, show ----------------------------------------------------------------------


def test_run_then_executions_newest_first_and_show(flow_file: Path, store: str) -> None:
    out = run(flow_file, store, "--param", "n=3", "--execution", "first")
    assert "execution first of flow Numbers succeeded" in out
    run(flow_file, store, "--param", "n=4", "--execution", "second")

    listed = ok("executions", flow_file, "--datastore", store)
    assert listed.index("second") < listed.index("first")  # newest first
    assert listed.count("succeeded") == 2
    rows = json.loads(ok("executions", flow_file, "--datastore", store, "--json"))
    assert [row["id"] for row in rows] == ["second", "first"]
    assert all(row["status"] == "succeeded" and row["duration"] >= 0 and row["started"] for row in rows)

    shown = ok("show", flow_file, "first", "--datastore", store)
    assert "execution first of flow Numbers: succeeded" in shown
    assert "parameters: n=3" in shown
    for layer in ("Source", "Square", "Total"):
        assert layer in shown
    document = json.loads(ok("show", flow_file, "first", "--datastore", store, "--json"))
    assert document["status"] == "succeeded" and document["parameters"] == {"n": 3}
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert list(layers) == ["Source", "Square", "Total"]  # plan order, without Parameters
    assert layers["Square"]["status"] == "finished" and layers["Square"]["splits"] == 3
    assert sorted(layers["Square"]["attempts"]) == ["0", "1", "2"]


def test_a_failing_run_is_one_line_naming_the_execution_and_show_tells_the_attempts(
    flow_file: Path, store: str, tmp_path: Path
) -> None:
    env = {"NUMBERS_FAIL": str(tmp_path / "fixed")}
    line = fails(
        "run", flow_file, "--datastore", store, "--executor", "thread", "--param", "n=2",
        "--execution", "broken", env=env,
    )  # fmt: skip
    assert "execution broken of flow Numbers failed" in line
    assert "ValueError (its message is above)" in line  # on the progress line of the failed attempt
    assert f"laminar resume {flow_file} broken" in line

    shown = ok("show", flow_file, "broken", "--datastore", store)
    assert "execution broken of flow Numbers: failed" in shown
    assert "Total split 0 attempt 0: ValueError: total refused on attempt 0" in shown
    assert "Total split 0 attempt 1: ValueError: total refused on attempt 1" in shown
    layers = {
        layer["name"]: layer
        for layer in json.loads(ok("show", flow_file, "broken", "--datastore", store, "--json"))["layers"]
    }
    assert layers["Total"]["status"] == "failed"
    attempts = layers["Total"]["attempts"]["0"]
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert all("ValueError" in a["error"]["traceback"] for a in attempts)

    # --debug shows the traceback instead of one line
    result = CliRunner().invoke(
        cli, ["--debug", "run", str(flow_file), "--datastore", store, "--executor", "thread", "--param", "n=2"],
        env=env,
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError)

    # resume once the cause is fixed: Source and Square are not run again
    (tmp_path / "fixed").touch()
    out = ok("resume", flow_file, "broken", "--datastore", store, "--executor", "thread", env=env)
    assert "execution broken of flow Numbers succeeded" in out
    assert "source saw" not in out
    assert ok("get", flow_file, "broken", "Total", "total", "--datastore", store).strip() == "1"


# ---- artifacts, get -----------------------------------------------------------------------------


def test_artifacts_and_get(flow_file: Path, store: str, tmp_path: Path) -> None:
    run(flow_file, store, "--param", "n=3", "--execution", "e")
    listed = ok("artifacts", flow_file, "e", "Source", "--datastore", store)
    for name in ("blob", "item", "text"):
        assert name in listed
    rows = {
        row["name"]: row
        for row in json.loads(ok("artifacts", flow_file, "e", "Square", "--datastore", store, "--json"))
    }
    assert rows["value"]["splits"] == 3 and rows["value"]["items"] == 3 and rows["value"]["size"] > 0
    assert rows["value"]["hexdigest"] is None  # three items: no one address
    rows = {
        row["name"]: row
        for row in json.loads(ok("artifacts", flow_file, "e", "Source", "--datastore", store, "--json"))
    }
    assert rows["text"]["hash"] == "blake3" and len(rows["text"]["hexdigest"]) == 64

    assert ok("get", flow_file, "e", "Square", "value", "--datastore", store).strip() == "[0, 1, 4]"
    assert ok("get", flow_file, "e", "Square", "value", "--index", "2", "--datastore", store).strip() == "4"
    assert ok("get", flow_file, "e", "Source", "text", "--datastore", store).strip() == "'hello'"
    assert ok("get", flow_file, "e", "Parameters", "n", "--datastore", store).strip() == "3"
    out = tmp_path / "blob.bin"
    ok("get", flow_file, "e", "Source", "blob", "--output", out, "--datastore", store)
    assert out.read_bytes() == b"raw bytes \x00\x01"
    line = fails("get", flow_file, "e", "Square", "value", "--output", tmp_path / "x", "--datastore", store)
    assert "not bytes or str" in line


def test_unknown_execution_layer_and_artifact_say_what_exists(flow_file: Path, store: str) -> None:
    run(flow_file, store, "--param", "n=1", "--execution", "e")
    line = fails("show", flow_file, "nope", "--datastore", store)
    assert "execution nope of flow Numbers does not exist" in line
    assert "nope" in fails("logs", flow_file, "nope", "--datastore", store)
    assert "nope" in fails("report", flow_file, "nope", "--datastore", store)
    line = fails("artifacts", flow_file, "e", "Sqare", "--datastore", store)
    assert "flow Numbers has no layer 'Sqare'" in line and "Square" in line
    line = fails("get", flow_file, "e", "Source", "itme", "--datastore", store)
    assert "layer Source of execution e has no artifact 'itme'; it stored: blob, item, text" in line
    line = fails("get", flow_file, "e", "Square", "value", "--index", "7", "--datastore", store)
    assert "no item 7" in line


# ---- logs on three executors --------------------------------------------------------------------


def test_logs_on_the_thread_executor(flow_file: Path, store: str) -> None:
    run(flow_file, store, "--param", "n=2", "--execution", "e")
    everything = ok("logs", flow_file, "e", "--datastore", store)
    assert "source saw n=2" in everything
    assert "==> Square split 1 <==" in everything and "squaring 1" in everything and "logged 1" in everything
    one = ok("logs", flow_file, "e", "Square", "--index", "1", "--datastore", store)
    assert "squaring 1" in one and "squaring 0" not in one and "logged 1" in one
    assert ok("logs", flow_file, "e", "Source", "--datastore", store).startswith("source saw n=2")
    line = fails("logs", flow_file, "e", "Square", "--index", "5", "--datastore", store)
    assert "0 to 1" in line  # the valid range
    line = fails("logs", flow_file, "e", "Square", "--index", "0", "--attempt", "3", "--datastore", store)
    assert "no attempt 3" in line


def test_logs_on_the_process_executor(flow_file: Path, store: str) -> None:
    ok("run", flow_file, "--datastore", store, "--executor", "process", "--param", "n=2", "--execution", "p")
    out = ok("logs", flow_file, "p", "Square", "--index", "0", "--datastore", store)
    assert "squaring 0 in pid" in out and "logged 0" in out
    assert int(out.split("in pid ", 1)[1].split()[0]) != os.getpid()  # it ran in a worker process
    assert ok("get", flow_file, "p", "Total", "total", "--datastore", store).strip() == "1"


@pytest.mark.dask
def test_logs_on_the_dask_executor(flow_file: Path, store: str, address: str) -> None:
    executor = "dask://" + address.removeprefix("tcp://")
    ok("run", flow_file, "--datastore", store, "--executor", executor, "--param", "n=3", "--execution", "d")
    out = ok("logs", flow_file, "d", "Square", "--datastore", store)
    for item in range(3):
        assert f"squaring {item} in pid" in out and f"logged {item}" in out
    assert ok("get", flow_file, "d", "Total", "total", "--datastore", store).strip() == "5"


# ---- graph, plugins, diff -----------------------------------------------------------------------


def test_graph_in_three_formats(flow_file: Path) -> None:
    assert ok("graph", flow_file).splitlines() == [
        "Source",
        "Square [foreach]  <- Source",
        "Total  <- Square",
    ]
    mermaid = ok("graph", flow_file, "--format", "mermaid")
    assert (
        mermaid.startswith("flowchart LR")
        and "Source --> Square" in mermaid
        and "Square --> Total" in mermaid
    )
    dot = ok("graph", flow_file, "--format", "dot")
    assert dot.startswith('digraph "Numbers" {') and '"Square" -> "Total";' in dot


def test_plugins_lists_components_with_distribution_and_version() -> None:
    from importlib.metadata import version

    out = ok("plugins")
    assert "file://" in out and "laminar-core" in out and version("laminar-core") in out
    rows = json.loads(ok("plugins", "--json"))["components"]
    local = next(row for row in rows if "file://" in row["names"])
    assert local["kind"] == "datastore" and local["distribution"] == "laminar-core"
    assert {"thread", "process"} <= {
        name for row in rows if row["kind"] == "executor" for name in row["names"]
    }
    s3 = next(row for row in rows if "s3://" in row["names"])
    assert s3["distribution"] == "laminar-s3" and s3["version"] == version("laminar-s3")
    assert any(row["kind"] == "protocol" and "object" in row["names"] for row in rows)


def test_diff_names_the_parameters_and_artifacts_that_differ(flow_file: Path, store: str) -> None:
    run(flow_file, store, "--param", "n=3", "--execution", "a")
    run(flow_file, store, "--param", "n=4", "--execution", "b")
    run(flow_file, store, "--param", "n=4", "--execution", "c")
    rows = json.loads(ok("diff", flow_file, "a", "b", "--datastore", store, "--json"))
    found = {(row["layer"], row["name"]): row for row in rows}
    assert found[("Parameters", "n")]["kind"] == "parameter"
    assert found[("Square", "value")]["splits"] == [3]  # splits 0-2 hold the same values
    assert ("Total", "total") in found and ("Source", "item") in found
    assert ("Source", "text") not in found and ("Source", "blob") not in found  # the same in both
    assert "hold the same parameters and artifacts" in ok("diff", flow_file, "b", "c", "--datastore", store)
    table = ok("diff", flow_file, "a", "b", "--datastore", store)
    assert "parameter" in table and "changed" in table


# ---- loading FILE -------------------------------------------------------------------------------


def test_bad_files_and_flow_names(tmp_path: Path, flow_file: Path) -> None:
    assert "does not exist" in fails("graph", tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert "defines no flow" in fails("graph", empty)
    several = tmp_path / "several.py"
    several.write_text(
        "from laminar import Flow, Layer\nclass One(Flow): ...\nclass Two(Flow): ...\n"
        "@One.register\nclass A(Layer): ...\n@Two.register\nclass B(Layer): ...\n"
    )
    line = fails("graph", several)
    assert "defines several flows (One, Two)" in line and f"{several}:FlowName" in line
    assert ok("graph", f"{several}:Two").strip() == "B"
    assert "defines no flow named 'Three'" in fails("graph", f"{several}:Three")


def test_malformed_params(flow_file: Path, store: str) -> None:
    for bad in ("n", "=3", "not a name=1"):
        result = laminar("run", flow_file, "--datastore", store, "--executor", "thread", "--param", bad)
        assert result.exit_code == 2
        assert f"{bad!r} is not NAME=VALUE" in result.stderr
    result = laminar("run", flow_file, "--datastore", store, "--param", "n=1", "--param", "n=2")
    assert result.exit_code == 2 and "given twice" in result.stderr


def test_a_file_built_flow_and_its_datastore_are_used_by_default(tmp_path: Path) -> None:
    path = tmp_path / "built.py"
    path.write_text(
        textwrap.dedent(
            f"""
            from laminar import Flow, Layer

            class Built(Flow): ...

            @Built.register
            class A(Layer):
                def __call__(self) -> None:
                    self.x = 41 + 1

            if flow := Built(datastore={(tmp_path / "own").as_uri()!r}, executor="thread"):
                raise SystemExit("the guard was true on import")
            """
        )
    )
    ok("run", path, "--execution", "mine")
    assert (tmp_path / "own" / "flows" / "Built" / "executions" / "mine").is_dir()
    assert ok("get", path, "mine", "A", "x").strip() == "42"


def test_the_default_datastore_is_the_flows_own_default(flow_file: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "from-env"
    env = {"LAMINAR_DATASTORE": elsewhere.as_uri(), "LAMINAR_EXECUTOR": "thread"}
    ok("run", flow_file, "--param", "n=1", "--execution", "env", env=env)
    assert (elsewhere / "flows" / "Numbers" / "executions" / "env").is_dir()
    assert "env" in ok("executions", flow_file, env=env)


def test_the_installed_entry_point_runs_a_flow(flow_file: Path, store: str) -> None:
    binary = Path(sys.executable).with_name("laminar")
    assert binary.exists(), f"{binary} is missing: uv sync installs laminar-core's console script"
    done = subprocess.run(
        [str(binary), "run", str(flow_file), "--datastore", store, "--param", "n=2", "--execution", "sub"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "execution sub of flow Numbers succeeded" in done.stdout
    shown = subprocess.run(
        [str(binary), "show", str(flow_file), "sub", "--datastore", store, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(shown.stdout)["status"] == "succeeded"
    missing = subprocess.run(
        [str(binary), "show", str(flow_file), "nope", "--datastore", store],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr


def test_a_run_that_cannot_start_says_it_did_not_run(flow_file: Path, store: str) -> None:
    line = fails("run", flow_file, "--datastore", store, "--executor", "thread", "--param", "index=1")
    assert "did not run" in line and "reserved" in line
    line = fails("run", flow_file, "--datastore", store, "--executor", "nosuch")
    assert "no installed plugin provides the executor 'nosuch'" in line
    line = fails("resume", flow_file, "never", "--datastore", store)
    assert "execution never of flow Numbers does not exist" in line
