"""An artifact that some splits of a foreach never assigned (Catch ended them first) reads truthfully.

Reading it names the splits without a value (not "the layer finished without assigning it", which
is false when most splits did), and ``missing=`` (``execution.layer(A, missing="skip" | None)``,
``laminar get --missing skip|none``, or the Accessor's ``skip_missing()`` / ``fill_missing()``) gives
what exists instead of failing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import EXECUTORS
from laminar import Flow
from laminar._cli.main import cli
from laminar.configurations import datastores, executors
from laminar.errors import ConfigurationError, MissingArtifact

#: Twelve pages; fetching pages 3 and 7 fails after their url was stored and before their words were.
CRAWL = textwrap.dedent(
    """
    from laminar import Flow, Layer
    from laminar.configurations.layers import Catch, ForEach, Parameter

    FAILING = {"page3", "page7"}


    class Crawl(Flow): ...


    @Crawl.register
    class Urls(Layer):
        def __call__(self) -> None:
            self.shard(url=[f"page{i}" for i in range(12)])


    @Crawl.register(catch=Catch(ValueError), foreach=ForEach(parameters=[Parameter(layer=Urls, attribute="url")]))
    class Fetch(Layer):
        def __call__(self, urls: Urls) -> None:
            self.url = urls.url
            self.ok = False
            if urls.url in FAILING:
                raise ValueError(f"cannot fetch {urls.url}")
            self.words = f"words of {urls.url}"
            self.ok = True


    @Crawl.register
    class Index(Layer):
        def __call__(self, fetch: Fetch) -> None:
            self.fetched = list(fetch.words.skip_missing())
            self.lacking = fetch.words.missing
            self.filled = list(fetch.words.fill_missing(""))
    """
)
WORDS = {i: f"words of page{i}" for i in range(12) if i not in (3, 7)}


# The same flow as this module's own (Process workers import it from here), and as a file for the CLI.
_crawl: dict[str, Any] = {"__name__": __name__}
exec(CRAWL, _crawl)
Crawl, Urls, Fetch, Index = (_crawl[name] for name in ("Crawl", "Urls", "Fetch", "Index"))


@pytest.fixture
def crawled(tmp_path: Path) -> Flow:
    """Crawl run as execution "e" in ``tmp_path / "store"``; its script in ``tmp_path / "crawl.py"``."""
    (tmp_path / "crawl.py").write_text(CRAWL)  # the same flow, for `laminar get`
    flow: Flow = Crawl(datastore=datastores.Local(tmp_path / "store"), executor=executors.Thread())
    flow(execution="e")
    return flow


# ---- the Accessor and the results API --------------------------------------------------------------
def test_reading_names_the_splits_without_a_value(crawled: Flow) -> None:
    flow = crawled
    words = flow.execution("e").layer(Fetch).words
    assert len(words) == 12 and words.missing == (3, 7)
    assert words[2] == WORDS[2] and words[-1] == WORDS[11]
    with pytest.raises(MissingArtifact) as error:
        list(words)
    message = str(error.value)
    assert message.startswith(
        "Fetch has no artifact 'words' in split 3 in execution e of flow Crawl: split 3 finished without "
        "assigning it (it stored: ok, url), ended by Catch (ValueError: cannot fetch page3); 2 of its 12 "
        "splits lack it (3, 7) and 10 have it: read those with .words.skip_missing() or "
        "execution.layer('Fetch', missing='skip'), or None in place of the missing with missing=None"
    )
    assert "layer Fetch finished without assigning it" not in message  # the false claim
    assert (error.value.missing, error.value.splits) == ((3, 7), 12)
    assert isinstance(error.value, AttributeError)
    with pytest.raises(
        MissingArtifact, match=r"in split 7 .* ended by Catch \(ValueError: cannot fetch page7\)"
    ):
        words[7]
    with pytest.raises(MissingArtifact, match=r"2 of its 12 splits lack it \(3, 7\)"):
        words[1:5]


def test_missing_skip_gives_what_exists_and_names_what_it_left_out(crawled: Flow) -> None:
    flow = crawled
    words = flow.execution("e").layer(Fetch, missing="skip").words
    assert list(words) == list(WORDS.values())
    assert len(words) == 10 and words.skipped == (3, 7) and words.missing == ()
    assert words[3] == WORDS[4] and words[-1] == WORDS[11] and words[2:4] == [WORDS[2], WORDS[4]]
    assert repr(words) == "Accessor(Fetch.words over 12 splits, 2 missing skipped, len=10)"
    assert list(flow.execution("e").layer(Fetch).words.skip_missing()) == list(WORDS.values())


def test_missing_none_gives_none_in_their_place(crawled: Flow) -> None:
    flow = crawled
    words = flow.execution("e").layer(Fetch, missing=None).words
    assert list(words) == [WORDS.get(i) for i in range(12)]
    assert words.missing == (3, 7) and words[7] is None and words[6:9] == [WORDS[6], None, WORDS[8]]
    filled = flow.execution("e").layer(Fetch).words.fill_missing("(none)")
    assert [filled[i] for i in (2, 3, 7)] == [WORDS[2], "(none)", "(none)"]


def test_an_artifact_no_split_stored_still_fails_whatever_missing_says(crawled: Flow) -> None:
    flow = crawled
    for missing in ("raise", "skip", None):
        layer = flow.execution("e").layer(Fetch, missing=missing)
        with pytest.raises(
            MissingArtifact,
            match=r"Fetch has no artifact 'wrods' in execution e of flow Crawl: layer Fetch finished without "
            r"assigning it in any of its 12 splits \(they stored: ok, url, words\)",
        ):
            layer.wrods  # noqa: B018
        assert hasattr(layer, "words") and not hasattr(layer, "wrods")


def test_every_split_assigned_means_nothing_missing(crawled: Flow) -> None:
    flow = crawled
    urls = flow.execution("e").layer(Fetch).url
    assert urls.missing == () and urls.skip_missing() is urls and urls.fill_missing() is urls
    assert list(flow.execution("e").layer(Fetch, missing="skip").url) == [f"page{i}" for i in range(12)]


def test_an_unknown_missing_choice_is_refused(crawled: Flow) -> None:
    flow = crawled
    with pytest.raises(
        ConfigurationError, match=r"missing=\.\.\.\) takes 'raise', 'skip' or None, not 'skpi'"
    ):
        flow.execution("e").layer(Fetch, missing="skpi")  # type: ignore[arg-type]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_downstream_layer_reads_what_exists(tmp_path: Path, executor: Any) -> None:
    flow = Crawl(datastore=datastores.Local(tmp_path / "store"), executor=executor())
    index = flow(execution="e").layer(Index)
    assert index.fetched == list(WORDS.values()) and index.lacking == (3, 7)
    assert index.filled == [WORDS.get(i, "") for i in range(12)]


# ---- laminar get ---------------------------------------------------------------------------------------
def get(tmp_path: Path, *args: str) -> Result:
    store = (tmp_path / "store").as_uri()
    command = ["get", str(tmp_path / "crawl.py"), "e", "Fetch", "words", "--datastore", store, *args]
    return CliRunner().invoke(cli, command, catch_exceptions=False)


def test_get_names_the_splits_without_a_value(crawled: Flow, tmp_path: Path) -> None:
    result = get(tmp_path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        "Error: artifact 'words' of layer Fetch in execution e has no value in splits 3, 7 of its 12: they "
        "finished without assigning it; print the 10 values it has with --missing skip, or None in their "
        "place with --missing none"
    )
    one = get(tmp_path, "--index", "7")
    assert one.exit_code == 1 and one.stderr.strip() == (
        "Error: split 7 of layer Fetch in execution e finished without assigning 'words' (splits 3, 7 of "
        "its 12 have no value); print None for it with --missing none"
    )
    assert get(tmp_path, "--index", "2").stdout.strip() == repr(WORDS[2])


def test_get_missing_skip_and_none(crawled: Flow, tmp_path: Path) -> None:
    skipped = get(tmp_path, "--missing", "skip")
    assert skipped.exit_code == 0 and skipped.stdout.strip() == repr(list(WORDS.values()))
    assert skipped.stderr.strip() == (
        "artifact 'words' of layer Fetch has no value in splits 3, 7 of its 12 (they finished without "
        "assigning it): left out"
    )
    filled = get(tmp_path, "--missing", "none")
    assert filled.exit_code == 0 and filled.stdout.strip() == repr([WORDS.get(i) for i in range(12)])
    assert filled.stderr.strip().endswith("(they finished without assigning it): printed as None")
    assert get(tmp_path, "--index", "3", "--missing", "none").stdout.strip() == "None"
    invalid = get(tmp_path, "--missing", "drop")
    assert invalid.exit_code == 2 and "'drop' is not one of 'raise', 'skip', 'none'" in invalid.stderr
