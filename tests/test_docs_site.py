"""The documentation site: ``mkdocs build --strict`` (MkDocs with Material, mkdocs.yml at the root)
succeeds, builds a page for every nav entry, leaves no page of docs/ out of the nav, and fails on a
link to a missing page or a missing anchor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mkdocs.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"

#: Pages the site must have, whatever else the nav holds (issue 12: every SPEC section, datastores,
#: executors, plugin authoring, the CLI, the results API, performance, reliability, architecture).
REQUIRED = {
    "index.md",
    "getting-started.md",
    "core.md",
    "fan-out.md",
    "control.md",
    "composition.md",
    "results.md",
    "run-records.md",
    "trust.md",
    "datastores/s3.md",
    "datastores/gcs.md",
    "datastores/azure.md",
    "datastores/fsspec.md",
    "executors/dask.md",
    "plugins/api.md",
    "plugins/writing-a-datastore.md",
    "plugins/writing-an-executor.md",
    "cli.md",
    "performance.md",
    "reliability.md",
    "architecture.md",
    "coming-from-earlier-laminar.md",
}


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def nav_pages(nav: Any) -> list[str]:
    """The page paths of a nav (a list of paths and {title: path or sub-nav} entries), in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for entry in nav for page in nav_pages(entry)]


def built_page(site: Path, page: str) -> Path:
    """Where MkDocs (directory URLs) writes a page: a.md -> a/index.html, index.md -> index.html."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("site")
    result = build(CONFIG, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    yield out


def test_every_nav_entry_has_a_built_page(site: Path) -> None:
    pages = nav_pages(load_config(str(CONFIG)).nav)
    assert len(pages) == len(set(pages)), "a page is in the nav twice"
    assert set(pages) >= REQUIRED, sorted(REQUIRED - set(pages))
    for page in pages:
        html = built_page(site, page)
        assert html.is_file(), f"{page}: no {html.relative_to(site)}"
        title = next(
            line.removeprefix("# ").strip("`")
            for line in (ROOT / "docs" / page).read_text().splitlines()
            if line.startswith("# ")
        )
        assert title.split("`")[0].split(":")[0] in html.read_text(), (
            f"{page}: its heading is not in the page"
        )


def test_every_page_of_docs_is_in_the_nav() -> None:
    pages = set(nav_pages(load_config(str(CONFIG)).nav))
    documents = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").glob("**/*.md")}
    assert documents == pages


@pytest.mark.parametrize(
    ("link", "complaint"),
    [
        ("[gone](no-such-page.md)", "no-such-page.md"),
        ("[gone](core.md#no-such-section)", "no-such-section"),
    ],
)
def test_a_broken_link_fails_the_build(tmp_path: Path, link: str, complaint: str) -> None:
    shutil.copy(CONFIG, tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "getting-started.md"
    page.write_text(page.read_text() + f"\nSee {link}.\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, "mkdocs build --strict accepted a broken link"
    assert complaint in result.stderr, result.stderr
