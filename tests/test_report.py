"""``laminar report``: one self-contained HTML page of a run, opened in headless Chromium.

A flow plants HTML and ``<script>`` in a parameter, an artifact, a log line and an error message;
the page must show each as text and run none of it. Chromium (Debian's ``chromium`` package, which
``scripts/install-emulators`` installs) renders the page: ``--dump-dom`` gives the DOM after any
script would have run, ``--screenshot`` a PNG kept in the test's temporary directory.
"""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from laminar._cli.main import cli

PLANT = "<script>document.title='pwned-{0}'</script><b id=\"planted-{0}\">bold-{0}</b>"

FLOW = textwrap.dedent(
    f"""
    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter, Retry

    PLANT = {PLANT!r}


    class Planted(Flow): ...


    @Planted.register
    class Source(Layer):
        def __call__(self, parameters: Parameters) -> None:
            print(PLANT.format("log"))
            self.note = PLANT.format("artifact")
            self.big = b"x" * 2_000_000
            self.shard(item=[1, 2, 3])


    @Planted.register(foreach=ForEach(parameters=[Parameter(layer=Source, attribute="item")]))
    class Work(Layer):
        def __call__(self, source: Source) -> None:
            self.double = source.item * 2


    @Planted.register(retry=Retry(attempts=2, delay=0))
    class Explode(Layer):
        def __call__(self, work: Work) -> None:
            raise ValueError(PLANT.format("error"))


    @Planted.register
    class After(Layer):
        def __call__(self, explode: Explode) -> None:
            self.never = True
    """
)

LAYERS = ("Source", "Work", "Explode", "After")


def chromium() -> str:
    """The Chromium binary; a missing one fails these tests with what to install (never a skip)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "headless Chromium is missing, and the report tests open the report in it: install Debian's "
            "chromium package (as root: apt-get install -y --no-install-recommends chromium; "
            "./run test does it when run as root), or put a chromium on PATH",
            pytrace=False,
        )
    return found


def browse(page: Path, work: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={work / 'chromium-profile'}", *flags, page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A failed execution with planted markup, and its report."""
    root = tmp_path_factory.mktemp("report")
    flow_file = root / "planted_flow.py"
    flow_file.write_text(FLOW)
    store = (root / "store").as_uri()
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["run", str(flow_file), "--datastore", store, "--executor", "thread", "--execution", "boom",
         "--param", f"tag={PLANT.format('parameter')}"],
    )  # fmt: skip
    assert result.exit_code == 1 and "pwned-error" in result.stderr
    page = root / "report.html"
    result = runner.invoke(cli, ["report", str(flow_file), "boom", "--datastore", store, "-o", str(page)])
    assert result.exit_code == 0, result.output
    return page, page.read_text()


class Elements(html.parser.HTMLParser):
    """The tags of a page, with their attributes, as a parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def elements(text: str) -> list[tuple[str, dict[str, str]]]:
    parser = Elements()
    parser.feed(text)
    return parser.tags


def test_the_page_is_self_contained_and_has_no_script(report: tuple[Path, str]) -> None:
    _, text = report
    tags = elements(text)
    assert not [tag for tag, _ in tags if tag in ("script", "link", "iframe", "img", "object", "embed")]
    assert not [attrs for _, attrs in tags if "src" in attrs or "href" in attrs]
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    csp = next(
        attrs for tag, attrs in tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp["content"]


def test_the_page_shows_each_part_of_the_run(report: tuple[Path, str]) -> None:
    _, text = report
    tags = elements(text)
    nodes = [attrs for tag, attrs in tags if tag == "g" and "node" in attrs.get("class", "").split()]
    assert [node["data-layer"] for node in nodes] == list(LAYERS)  # one node per layer
    statuses = {node["data-layer"]: node["data-status"] for node in nodes}
    assert statuses["Source"] == statuses["Work"] == "finished"
    assert statuses["Explode"] == "failed"
    assert statuses["After"] in ("not started", "skipped", "cancelled")
    assert 'id="execution-status" style="background: #c62828">failed<' in text
    bars = [attrs for tag, attrs in tags if tag == "div" and "bar" in attrs.get("class", "").split()]
    assert len(bars) == 1 + 3 + 2  # Source, three Work splits, two Explode attempts
    assert sum("failed" in bar["class"] for bar in bars) == 2
    assert "Traceback (most recent call last)" in text
    assert "(not loaded: 1.9 MiB)" in text  # the big value's preview is not loaded
    for index, value in enumerate((2, 4, 6)):  # Work.double: every item previewed, not only item 0
        assert f"[item {index} of 3] {value}" in text


def test_planted_markup_is_text_and_never_runs_in_the_browser(report: tuple[Path, str]) -> None:
    page, text = report
    dom = browse(page, page.parent, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    rendered = dom.stdout
    assert "<title>Laminar report: Planted boom</title>" in rendered
    assert "pwned" not in rendered.split("</title>", 1)[0]  # no planted script set the title
    tags = elements(rendered)
    assert not [tag for tag, _ in tags if tag in ("script", "b")]  # no planted markup became an element
    assert not [attrs["id"] for _, attrs in tags if attrs.get("id", "").startswith("planted")]
    for where in ("parameter", "artifact", "log", "error"):
        assert "&lt;b id=" in rendered and f"bold-{where}&lt;/b&gt;" in rendered, where  # shown, as text
    nodes = [attrs for tag, attrs in tags if tag == "g" and "node" in attrs.get("class", "").split()]
    assert len(nodes) == len(LAYERS)
    assert [n["data-layer"] for n in nodes if "status-failed" in n["class"]] == ["Explode"]
    for where in ("parameter", "artifact", "log", "error"):  # and in the file itself
        assert f'id="planted-{where}"' not in text
        assert f"&lt;b id=&#34;planted-{where}&#34;&gt;bold-{where}&lt;/b&gt;" in text, where


def test_the_report_renders_in_chromium_and_a_screenshot_is_kept(
    report: tuple[Path, str], tmp_path: Path
) -> None:
    page, _ = report
    screenshot = tmp_path / "report.png"
    shot = browse(
        page, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1600", "--hide-scrollbars"
    )
    assert shot.returncode == 0, shot.stderr
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)
    assert len(data) > 20_000  # a rendered page, not a blank one
