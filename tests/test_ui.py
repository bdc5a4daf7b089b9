"""``laminar ui`` over HTTP: the command, its safety defaults, paging, and S3, GCS and Azure as Local.

The server is the real command in a subprocess; requests go over a socket with httpx.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from laminar._cli.main import cli
from laminar._cli.previews import Preview
from laminar._cli.report import build_report
from laminar._ids import new_execution_id
from laminar._plugins.manager import resolve_datastore
from laminar.configurations import datastores, executors
from laminar_ui.app import Previewed
from laminar_ui.reading import Reader
from ui_support import FLOW, clone, laminar, run, ui_server


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "shown_flow.py"
    path.write_text(FLOW)
    return path


@pytest.fixture(scope="module")
def local(
    flow_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A Local datastore with a failed run and a finished one, and the UI over it."""
    store = (tmp_path_factory.mktemp("store") / ".laminar").as_uri()
    ids = {"broken": new_execution_id()}
    assert run(flow_file, "Broken", store, ids["broken"]).returncode == 1
    ids["gated"] = new_execution_id()
    (gate := tmp_path_factory.mktemp("gate") / "open").write_text("at once")
    result = laminar(
        "run", f"{flow_file}:Gated", "--datastore", store, "--executor", "thread", "--execution", ids["gated"],
        env={"UI_TEST_GATE": str(gate)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with ui_server(store) as url:
        yield url, store, ids


def test_laminar_ui_is_a_laminar_command_added_by_its_plugin() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert any(line.split()[:1] == ["ui"] for line in result.output.splitlines())
    assert cli.commands["ui"].callback.__module__ == "laminar_ui.command"  # type: ignore[union-attr]


def test_another_host_is_refused_without_allow_remote(tmp_path: Path) -> None:
    result = laminar("ui", tmp_path.as_uri(), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: --host 0.0.0.0 would show this datastore's values and logs to other machines; add "
        "--allow-remote to do so (every request then needs the token printed with the URL)"
    )
    assert result.stdout == ""  # no URL: nothing listens
    assert list(tmp_path.iterdir()) == []  # and nothing was written


def test_another_host_needs_the_printed_token(local: tuple[str, str, dict[str, str]]) -> None:
    _, store, _ = local
    with ui_server(store, "--host", "0.0.0.0", "--allow-remote") as url:
        assert "?token=" in url
        base, token = url.split("?token=")
        port = base.rstrip("/").rsplit(":", 1)[1]
        here = f"http://127.0.0.1:{port}"
        refused = httpx.get(here + "/")
        assert refused.status_code == 403 and "needs its token" in refused.text
        assert httpx.get(here + "/?token=wrong").status_code == 403
        with httpx.Client() as client:
            first = client.get(f"{here}/?token={token}")
            assert first.status_code == 200 and "Executions" in first.text
            assert client.get(here + "/").status_code == 200  # then its cookie is enough


def test_the_default_is_localhost_without_a_token(local: tuple[str, str, dict[str, str]]) -> None:
    url, _, ids = local
    assert url.startswith("http://127.0.0.1:") and "token" not in url
    page = httpx.get(url)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert ids["gated"] in page.text and ids["broken"] in page.text


def test_a_request_for_another_site_name_is_refused(local: tuple[str, str, dict[str, str]]) -> None:
    """A DNS rebinding: another site's page, its name pointed at 127.0.0.1, sends that name as Host."""
    url, _, ids = local
    port = url.rstrip("/").rsplit(":", 1)[1]
    refused = httpx.get(url, headers={"Host": f"evil.example:{port}"})
    assert refused.status_code == 403 and "answers only requests for 127.0.0.1" in refused.text
    assert ids["gated"] not in refused.text
    assert httpx.get(url, headers={"Host": f"localhost:{port}"}).status_code == 200


def test_the_default_datastore_is_the_nearest_laminar(flow_file: Path, tmp_path: Path) -> None:
    (tmp_path / ".laminar").mkdir()
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    execution = new_execution_id()
    assert run(flow_file, "Broken", (tmp_path / ".laminar").as_uri(), execution).returncode == 1
    with ui_server("", cwd=nested) as url:
        assert execution in httpx.get(url).text


def test_bad_filters_say_what_to_give(local: tuple[str, str, dict[str, str]]) -> None:
    url, _, _ = local
    bad = httpx.get(url + "?status=sleeping")
    assert bad.status_code == 400
    assert "status must be one of running, succeeded, failed, cancelled, not &#39;sleeping&#39;" in bad.text
    bad = httpx.get(url + "?parameter=n")
    assert bad.status_code == 400 and "filter parameters as name=value, e.g. n=3" in bad.text
    missing = httpx.get(url + "flows/Broken/executions/" + "0" * 27)
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_the_events_stream_sends_the_sections(local: tuple[str, str, dict[str, str]]) -> None:
    url, _, ids = local
    with httpx.stream("GET", f"{url}flows/Gated/executions/{ids['gated']}/events", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: update"
        data = json.loads(next(lines).removeprefix("data: "))
    assert 'data-layer="Gate" data-status="finished"' in data["body"]
    assert 'data-log="Gate/0/0"' in data["body"] and "through the gate" not in data["body"]
    assert "through the gate" in data["logs"]["Gate/0/0"] and data["fresh"] == ["Gate/0/0"]  # the log's end
    assert ">succeeded<" in data["header"]


def test_a_page_reads_only_the_executions_it_shows(flow_file: Path, tmp_path: Path) -> None:
    store = tmp_path / ".laminar"
    first = new_execution_id()
    assert run(flow_file, "Broken", store.as_uri(), first).returncode == 1
    made = clone(store, "Broken", first, 120)
    reader = Reader(resolve_datastore(store.as_uri()))
    read: list[str] = []
    row = reader._row
    reader._row = lambda flow, execution: (read.append(execution), row(flow, execution))[1]  # type: ignore[method-assign]
    page = reader.page(size=50)
    assert [r.id for r in page.rows] == sorted([first, *made], reverse=True)[:50]  # newest first
    assert sorted(read) == sorted(r.id for r in page.rows) and page.next_start == 50 and page.total == 121
    second = reader.page(size=50, start=page.next_start or 0)
    assert [r.id for r in second.rows] == sorted([first, *made], reverse=True)[50:100]
    assert reader.page(size=50, start=100).next_start is None


@pytest.mark.parametrize(
    "datastore_fixture",
    [pytest.param("s3_location", marks=pytest.mark.s3), pytest.param("gcs_location", marks=pytest.mark.gcs),
     pytest.param("azure_location", marks=pytest.mark.azure)],
)  # fmt: skip
def test_object_stores_show_as_local_does(
    datastore_fixture: str, flow_file: Path, request: pytest.FixtureRequest
) -> None:
    """The list, a failed run, a run's previews and DAG, and two runs compared, on each emulator."""
    store = request.getfixturevalue(datastore_fixture)
    ids = {name: new_execution_id() for name in ("broken", "one", "two")}
    assert run(flow_file, "Broken", store, ids["broken"]).returncode == 1
    for name, n in (("one", "1"), ("two", "2")):
        result = run(flow_file, "Shown", store, ids[name], f"n={n}")
        assert result.returncode == 0, result.stderr
    with ui_server(store) as url:
        listed = httpx.get(url, timeout=60).text
        assert [listed.index(f'data-execution="{ids[name]}"') for name in ("two", "one", "broken")] == sorted(
            listed.index(f'data-execution="{ids[name]}"') for name in ids
        )  # newest first
        assert ">failed<" in listed
        shown = httpx.get(f"{url}flows/Broken/executions/{ids['broken']}", timeout=60).text
        assert "ValueError: the gauge read &lt;img" in shown and "Traceback (most recent call last)" in shown
        assert 'data-layer="Fine" data-status="finished"' in shown
        shown = httpx.get(f"{url}flows/Shown/executions/{ids['one']}", timeout=60).text
        assert '<p class="shape">3 rows x 2 columns</p>' in shown  # the DataFrame
        assert '<p class="shape">1000 · float64</p>' in shown  # the array
        assert '<img alt="figure" src="data:image/png;base64,' in shown  # the matplotlib figure
        assert 'class="plotly-figure" data-figure="{&#34;data&#34;:' in shown  # the Plotly figure
        assert "&lt;b id=&#34;planted-repr&#34;&gt;" in shown and 'id="planted-repr"' not in shown
        assert 'data-from="Values" data-to="Total"' in shown  # the stored dependencies, no --flow
        compared = httpx.get(f"{url}compare?a=Shown/{ids['one']}&b=Shown/{ids['two']}", timeout=60).text
        assert '<tr class="differs" data-name="n">' in compared
        assert '<tr class="same" data-name="Values.frame">' in compared
        assert compared.count('<p class="shape">3 rows x 2 columns</p>') == 2  # both sides' previews


def test_an_untrusted_store_previews_no_pickled_value(local: tuple[str, str, dict[str, str]]) -> None:
    _, store, ids = local
    with ui_server(store, "--trust", "none") as url:
        shown = httpx.get(f"{url}flows/Gated/executions/{ids['gated']}", timeout=60).text
    opened = shown.split('data-artifact="opened"', 1)[1].split("</tr>", 1)[0]
    assert "(not previewed: UntrustedArtifact: " in opened  # named, never unpickled
    assert "at once" not in opened


def test_laminar_core_never_imports_laminar_ui() -> None:
    """``laminar report`` and every other command work without laminar-ui installed."""
    import ast

    core = Path(__file__).resolve().parents[1] / "laminar-core" / "src"
    found = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "laminar_ui"]
    assert found == []


LARGE = textwrap.dedent(
    """
    import numpy
    from laminar import Flow, Layer


    class Large(Flow): ...


    @Large.register
    class Big(Layer):
        def __call__(self) -> None:
            self.array = numpy.arange(1_000_000, dtype="float64")  # 7.6 MiB
            self.text = "line of text\\n" * 100_000  # 1.2 MiB
            self.pickled = set(range(100_000))  # no safe protocol for a set: cloudpickle
    """
)


def test_a_large_value_is_previewed_from_the_start_of_its_bytes(tmp_path: Path) -> None:
    store = tmp_path / ".laminar"
    store.mkdir()
    namespace: dict[str, Any] = {}
    exec(compile(LARGE, str(tmp_path / "large.py"), "exec"), namespace)
    datastore = datastores.Local(str(store)).use_safe_protocols()
    namespace["Large"](datastore=datastore, executor=executors.Thread())(execution="big")
    found = Reader(datastores.Local(str(store))).flow("Large", "big")
    rows = {row.name: row.preview for row in build_report(found, found.execution("big")).artifacts}
    assert rows["array"].kind == "array" and rows["array"].shape == "1000000 · float64"
    assert (
        "the histogram is of its first 100000 values" in rows["array"].text and len(rows["array"].chart) == 20
    )
    assert (
        rows["text"].text.startswith("line of text\nline of text")
        and "(the start of 1.2 MiB)" in rows["text"].text
    )
    assert rows["pickled"].kind == "note" and rows["pickled"].text.startswith("(not loaded: ")


def test_previews_are_kept_by_content_between_reads(tmp_path: Path) -> None:
    """A running execution is read every half second; each value is loaded and drawn once."""
    store = tmp_path / ".laminar"
    store.mkdir()
    namespace: dict[str, Any] = {}
    exec(compile(LARGE, str(tmp_path / "large.py"), "exec"), namespace)
    namespace["Large"](
        datastore=datastores.Local(str(store)).use_safe_protocols(), executor=executors.Thread()
    )(execution="big")
    found = Reader(datastores.Local(str(store))).flow("Large", "big")
    previewed = Previewed(limit=2)
    first = {
        row.name: row for row in build_report(found, found.execution("big"), previewed=previewed).artifacts
    }
    assert len(previewed) == 2  # three values, the least recently used dropped
    kept = next(iter(previewed))
    planted = Preview("text", text="kept from before")
    previewed[kept] = planted
    again = build_report(found, found.execution("big"), previewed=previewed).artifacts
    assert [row.preview for row in again if row.digests[0] == kept] == [planted]
    assert first["array"].preview.kind == "array"
