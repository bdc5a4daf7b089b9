"""``laminar ui`` in a real headless Chromium (Debian's, driven by Playwright; no browser download).

One server and one browser for the module, over a datastore holding a run with every kind of
preview, a failed run, and a run held at a gate (a named pipe) that the test opens while the page is
shown: the layer finishing appears without a reload. ``LAMINAR_UI_SCREENSHOTS=docs/images`` keeps the
screenshots for the docs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from laminar._cli import report
from laminar._ids import new_execution_id
from laminar._plugins.manager import resolve_datastore
from laminar.configurations import datastores, executors
from laminar_ui.reading import Reader
from ui_support import FLOW, HOSTILE, Background, clone, opener, run, ui_server, without_dependencies

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"

#: The executions the module's datastore holds, by what they are.
IDS: dict[str, str] = {}


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "shown_flow.py"
    path.write_text(FLOW)
    return path


@pytest.fixture(scope="module")
def served(flow_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The UI over a datastore with two runs of Shown (n=1, n=2) and a failed run of Broken, in that
    order, with ids Laminar made (they sort by creation time)."""
    store = (tmp_path_factory.mktemp("store") / ".laminar").as_uri()
    for name, flow, n, code in (
        ("one", "Shown", "1", 0),
        ("two", "Shown", "2", 0),
        ("broken", "Broken", "0", 1),
    ):
        execution = new_execution_id()
        IDS[name] = execution
        result = run(flow_file, flow, store, execution, f"n={n}")
        assert result.returncode == code, result.stderr
    with ui_server(store, "--flow", f"{flow_file}:Shown", "--flow", f"{flow_file}:Gated") as url:
        yield url, store


@pytest.fixture(scope="module")
def unflowed(served: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The UI given no flow file, over a copy of the datastore that also holds run one as runs stored
    it before they recorded their flow's dependencies (``IDS["earlier"]``)."""
    _, store = served
    copy = tmp_path_factory.mktemp("copy") / ".laminar"
    shutil.copytree(Path(store.removeprefix("file://")), copy)
    (IDS["earlier"],) = clone(copy, "Shown", IDS["one"], 1)
    without_dependencies(copy, "Shown", IDS["earlier"])
    with ui_server(copy.as_uri()) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"headless Chromium is missing at {CHROMIUM}: apt-get install chromium", pytrace=False)
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)  # a bound for hangs: the machine may be shared and slow
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def started() -> Iterator[Callable[..., Background]]:
    """Starts runs held at a gate (:class:`Background`), and kills those still running after the test."""
    made: list[Background] = []

    def start(*arguments: Any) -> Background:
        made.append(Background(*arguments))
        return made[-1]

    yield start
    for background in made:
        background.stop()


def keep(page: Any, name: str, tmp_path: Path) -> None:
    """A full-page screenshot: checked to be a PNG, kept for the docs when asked."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    target = os.environ.get("LAMINAR_UI_SCREENSHOTS")
    if target:
        shutil.copy(shot, Path(target) / name)


def test_the_executions_list_shows_every_run_newest_first(
    served: tuple[str, str], page: Any, tmp_path: Path
) -> None:
    url, _ = served
    page.goto(url)
    rows = page.locator("tr.execution")
    found = [(r.get_attribute("data-flow"), r.get_attribute("data-execution"), r.get_attribute("data-status"))
             for r in rows.all()]  # fmt: skip
    assert found == [
        ("Broken", IDS["broken"], "failed"),
        ("Shown", IDS["two"], "succeeded"),
        ("Shown", IDS["one"], "succeeded"),
    ]
    assert "n=2" in rows.nth(1).inner_text() and "n=1" in rows.nth(2).inner_text()
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button")
    assert [r.get_attribute("data-execution") for r in page.locator("tr.execution").all()] == [IDS["broken"]]
    page.goto(url + "?parameter=n%3D2")
    assert [r.get_attribute("data-execution") for r in page.locator("tr.execution").all()] == [IDS["two"]]
    page.goto(url)
    keep(page, "ui-executions.png", tmp_path)
    page.click(f"a:has-text('{IDS['one']}')")
    page.wait_for_selector("#dag svg")
    assert page.url.endswith(f"/flows/Shown/executions/{IDS['one']}")


def test_an_execution_shows_its_previews_and_a_hostile_repr_stays_text(
    served: tuple[str, str], page: Any, tmp_path: Path
) -> None:
    url, _ = served
    page.goto(url + "flows/Shown/executions/" + IDS["one"])
    frame = page.locator('tr.artifact[data-artifact="frame"]')
    assert frame.locator(".shape").inner_text() == "3 rows x 2 columns"
    assert (
        frame.locator(".dtype").all_inner_texts()[1] == "float64"
    )  # the str column: object or str by pandas version
    assert "Pune" in frame.inner_text() and "27.25" in frame.inner_text()
    figure = page.locator('tr.artifact[data-artifact="figure"] img')
    assert figure.get_attribute("src").startswith("data:image/png;base64,")
    assert figure.evaluate("image => image.complete && image.naturalWidth") > 100  # drawn, not broken
    array = page.locator('tr.artifact[data-artifact="array"]')
    assert "1000 · float64" in array.locator(".shape").inner_text()
    assert array.locator(".chart rect").count() == 20  # the histogram's bins
    squared = page.locator('tr.artifact[data-artifact="squared"]')
    assert squared.locator(".chart rect").count() == 4  # every item, charted over the splits
    assert [text.split("] ")[1] for text in squared.locator("pre.preview").all_inner_texts()] == [
        "1",
        "25",
        "4",
        "81",
    ]
    hostile = page.locator('tr.artifact[data-artifact="hostile"] pre.preview')
    assert hostile.inner_text() == HOSTILE  # shown as the text it is
    assert page.locator("#planted-repr").count() == 0 and page.locator("#artifacts b").count() == 0
    assert "pwned" not in page.title()
    edges = {
        (e.get_attribute("data-from"), e.get_attribute("data-to")) for e in page.locator("path.edge").all()
    }
    assert ("Values", "Total") in edges  # the edge that skips Square's column is drawn, below its box
    skipping = page.locator('path.edge[data-from="Values"][data-to="Total"]').evaluate(
        "edge => { const box = edge.getBBox(); return box.y + box.height; }"
    )
    square = page.locator('g.node[data-layer="Square"] rect').evaluate(
        "rect => rect.y.baseVal.value + rect.height.baseVal.value"
    )
    assert skipping > square
    keep(page, "ui-execution.png", tmp_path)


def test_a_failed_run_shows_its_traceback(served: tuple[str, str], page: Any, tmp_path: Path) -> None:
    url, _ = served
    page.goto(url + "flows/Broken/executions/" + IDS["broken"])
    assert page.locator("#execution-status").inner_text() == "failed"
    assert page.locator('g.node[data-layer="Explode"]').get_attribute("data-status") == "failed"
    page.locator("#errors summary").first.click()
    traceback = page.locator("#errors pre.traceback").first.inner_text()
    assert "Traceback (most recent call last)" in traceback and "ValueError: the gauge read <img" in traceback
    assert "pwned" not in page.title()
    keep(page, "ui-failed.png", tmp_path)


def test_the_compare_page_shows_what_differs(served: tuple[str, str], page: Any, tmp_path: Path) -> None:
    url, _ = served
    page.goto(url + f"compare?a=Shown/{IDS['one']}&b=Shown/{IDS['two']}")
    row = page.locator('#compare-parameters tr[data-name="n"]')
    assert row.get_attribute("class") == "differs" and row.locator("td").all_inner_texts()[1:] == ["1", "2"]
    frame = page.locator('#compare-artifacts tr[data-name="Values.frame"]')
    assert frame.get_attribute("class") == "same" and frame.locator("table").count() == 2  # both tables shown
    assert page.locator('#compare-layers tr[data-name="Square"]').get_attribute("class") == "same"
    keep(page, "ui-compare.png", tmp_path)


def test_a_layer_finishing_appears_without_a_reload(
    served: tuple[str, str], flow_file: Path, page: Any, tmp_path: Path, started: Callable[..., Background]
) -> None:
    url, store = served
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    background = started(flow_file, "Gated", store, "gated", gate)
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(open(gate, "w")), daemon=True)  # noqa: SIM115
    opener.start()
    opener.join(timeout=120)  # returns once the Gate layer opened the pipe: it runs
    assert opened, "the Gate layer never started"
    page.goto(url + "flows/Gated/executions/gated")
    page.evaluate("window.notReloaded = true")
    gate_node = page.locator('g.node[data-layer="Gate"]')
    # Its record says "running" as soon as the status plugin writes it: on this page, or by an update.
    page.wait_for_selector('g.node[data-layer="Gate"][data-status="running"]', timeout=60_000)
    assert page.locator("#execution-status").inner_text() == "running"
    assert page.locator('g.node[data-layer="After"]').get_attribute("data-status") == "not started"
    keep(page, "ui-live.png", tmp_path)
    opened[0].write("opened")
    opened[0].close()
    page.wait_for_selector('g.node[data-layer="After"][data-status="finished"]', timeout=60_000)
    page.wait_for_selector('#execution-status:has-text("succeeded")', timeout=60_000)
    assert gate_node.get_attribute("data-status") == "finished"
    assert page.evaluate("window.notReloaded") is True  # the same page, updated in place
    assert "through the gate" in page.locator("#logs").inner_text()
    assert background.join().returncode == 0


def edges_of(page: Any) -> set[tuple[str, str]]:
    return {
        (e.get_attribute("data-from"), e.get_attribute("data-to")) for e in page.locator("path.edge").all()
    }


def test_the_dag_has_its_edges_without_the_flow_file(unflowed: str, page: Any) -> None:
    """A run stores its flow's dependencies when it starts: the UI draws them with no --flow."""
    page.goto(unflowed + "flows/Shown/executions/" + IDS["one"])
    assert edges_of(page) == {("Values", "Square"), ("Values", "Total"), ("Square", "Total")}
    skipping = page.locator('path.edge[data-from="Values"][data-to="Total"]').evaluate(
        "edge => { const box = edge.getBBox(); return box.y + box.height; }"
    )
    square = page.locator('g.node[data-layer="Square"] rect').evaluate(
        "rect => rect.y.baseVal.value + rect.height.baseVal.value"
    )
    assert skipping > square  # the edge that skips Square's column runs below its box
    assert "stored before runs recorded their dependencies" not in page.locator("#dag").inner_text()
    # An execution stored before runs recorded them: its layers, no edges, and what to do about it.
    page.goto(unflowed + "flows/Shown/executions/" + IDS["earlier"])
    layers = [g.get_attribute("data-layer") for g in page.locator("g.node").all()]
    assert sorted(layers) == ["Square", "Total", "Values"] and edges_of(page) == set()
    assert page.locator('g.node[data-layer="Total"]').get_attribute("data-status") == "finished"
    assert "laminar ui --flow FILE (flow Shown)" in page.locator("#dag").inner_text()


def updates(stream: Any) -> Iterator[dict[str, Any]]:
    """The ``update`` events of an execution's event stream, parsed (at most two minutes of them:
    the stream sends a line every half second)."""
    lines = stream.iter_lines()
    for _ in range(240):
        line = next(lines)
        if line == "event: update":
            yield json.loads(next(lines).removeprefix("data: "))


def first(found: Iterator[dict[str, Any]], wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return next(update for update in found if wanted(update))


def test_a_running_split_s_log_is_appended_like_tail_f(
    served: tuple[str, str], flow_file: Path, page: Any, tmp_path: Path, started: Callable[..., Background]
) -> None:
    """Talk prints a line, waits at a gate, prints another, waits at a second gate: each line is
    sent once, the second event carries only the new line, and the page shows both."""
    url, store = served
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    os.mkfifo(tmp_path / "gate.then")
    background = started(flow_file, "Chatty", store, "chatty", gate)
    at_first = opener(gate)()  # Talk printed its first line and waits
    page.goto(url + "flows/Chatty/executions/chatty")
    log = playwright_api.expect(page.locator('pre.log[data-log="Talk/0/0"]'))
    with httpx.stream("GET", f"{url}flows/Chatty/executions/chatty/events", timeout=60) as stream:
        found = updates(stream)
        sent = first(found, lambda update: "Talk/0/0" in update["logs"])
        assert sent["logs"]["Talk/0/0"] == "first line\n" and sent["fresh"] == ["Talk/0/0"]
        log.to_have_text(re.compile("^first line\n$"), timeout=60_000)
        at_second = opener(tmp_path / "gate.then")
        at_first.write("go")
        at_first.close()
        waiting = at_second()  # Talk printed its second line and waits again: it still runs
        sent = first(found, lambda update: "Talk/0/0" in update["logs"])
        assert sent["logs"] == {"Talk/0/0": "second line\n"} and sent["fresh"] == []  # only what is new
    log.to_have_text(re.compile("^first line\nsecond line\n$"), timeout=60_000)  # both, each once
    assert page.locator("#execution-status").inner_text() == "running"
    waiting.write("go")
    waiting.close()
    assert background.join().returncode == 0


def test_a_plotly_figure_is_drawn_with_the_installed_plotly_js(
    served: tuple[str, str], page: Any, tmp_path: Path
) -> None:
    url, store = served
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url + "flows/Shown/executions/" + IDS["one"])
    figure = page.locator('tr.artifact[data-artifact="plotly"]')
    figure.locator(".plotly-figure svg.main-svg").first.wait_for(timeout=60_000)  # plotly.js drew it
    assert figure.locator(".scatterlayer .trace").count() == 1 and "a plotly figure" in figure.inner_text()
    assert figure.locator("pre.preview").is_hidden()  # the text the static report shows instead
    assert f"{url}static/plotly.min.js" in requested
    assert all(request.startswith(url) for request in requested)  # nothing from another site
    # The static report, which runs no script, says what the figure holds.
    found = Reader(resolve_datastore(store)).flow("Shown", IDS["one"])
    html = report.render(report.build_report(found, found.execution(IDS["one"])))
    row = html.split('data-artifact="plotly"', 1)[1].split("</tr>", 1)[0]
    assert "Plotly figure &#39;a plotly figure&#39;: 1 trace: scatter &#39;rise&#39; (3 points)" in row
    assert "<script" not in html


def test_the_timeline_shows_how_long_each_split_waited(
    served: tuple[str, str], flow_file: Path, page: Any
) -> None:
    """Three splits on one thread: each waits for the one before, and its wait is drawn from the
    layer's start to its own bar."""
    url, store = served
    namespace: dict[str, Any] = {}
    exec(compile(FLOW, str(flow_file), "exec"), namespace)
    datastore = datastores.Local(store.removeprefix("file://"))
    namespace["Queued"](datastore=datastore, executor=executors.Thread(concurrency=1))(execution="queued")
    page.goto(url + "flows/Queued/executions/queued")
    page.locator("body[data-updates]").wait_for(state="attached")  # the live page's first redraw is done

    def box(split: int, part: str) -> Any:
        found = (
            page.locator("#timeline .row").filter(has_text=f"Each #{split} · attempt 0").locator(f".{part}")
        )
        assert found.count() == 1, f"split {split} of Each shows no {part}"
        # Measured in the page in one step: were the timeline redrawn between finding the element and
        # measuring it, bounding_box() would give None for the one found.
        return found.evaluate(
            "element => { const r = element.getBoundingClientRect(); return {x: r.x, width: r.width} }"
        )

    waits = [box(split, "wait") for split in (1, 2)]
    for split, wait in zip((1, 2), waits, strict=True):
        assert wait["width"] > 0
        assert abs(wait["x"] + wait["width"] - box(split, "bar")["x"]) < 1  # it ends where its bar begins
    assert abs(waits[0]["x"] - waits[1]["x"]) < 1  # both from the layer's start
    assert waits[1]["width"] > waits[0]["width"]  # the third split waited for two
