"""A caught error is recorded: a split that ``Catch`` ended keeps the error (type, message and
traceback) on its attempt, in ``execution.status``, ``laminar show`` (and ``--json``), the split's
log and the report; the layer reads as finished, with the number of errors caught."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from laminar import Flow, Layer
from laminar._cli.main import cli
from laminar._runtime.split import run_and_record_split
from laminar._storage.records import AttemptRecord, LayerStatusRecord
from laminar.configurations import datastores
from laminar.configurations.layers import Catch
from laminar.plugins import Executor, SplitOutcome, SplitTask, recorded_outcome

CRAWL = textwrap.dedent(
    """
    from laminar import Flow, Layer
    from laminar.configurations.layers import Catch, ForEach, Parameter


    class Crawl(Flow): ...


    @Crawl.register
    class Pages(Layer):
        def __call__(self) -> None:
            self.shard(url=["a", "bad", "c", "worse"])


    @Crawl.register(foreach=ForEach(parameters=[Parameter(layer=Pages, attribute="url")]), catch=Catch(ValueError))
    class Fetch(Layer):
        def __call__(self, pages: Pages) -> None:
            self.url = pages.url
            if "bad" in pages.url or "worse" in pages.url:
                raise ValueError(f"cannot parse {pages.url}")
            self.words = len(pages.url)
    """
)


def laminar(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def ok(*args: str | Path) -> str:
    result = laminar(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


@pytest.fixture(params=["thread", "process"])
def crawled(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    flow_file = tmp_path / "crawl.py"
    flow_file.write_text(CRAWL)
    store = (tmp_path / "store").as_uri()
    ok("run", flow_file, "--datastore", store, "--executor", request.param, "--execution", "crawl")
    return flow_file, store


def test_a_caught_error_is_on_its_attempt_in_the_status(crawled: tuple[Path, str]) -> None:
    from laminar._cli.common import open_flow

    flow_file, store = crawled
    flow = open_flow(str(flow_file), datastore=store)
    status = flow.execution("crawl").status
    assert status == "succeeded"
    fetch = status.layers["Fetch"]
    assert fetch == "finished" and fetch.error is None and fetch.caught == 2
    for index, url in ((1, "bad"), (3, "worse")):
        (attempt,) = fetch.attempts[index]
        assert attempt.error is None
        assert attempt.caught is not None
        assert attempt.caught["type"] == "ValueError"
        assert attempt.caught["message"] == f"cannot parse {url}"
        assert 'raise ValueError(f"cannot parse {pages.url}")' in attempt.caught["traceback"]
        assert f'File "{flow_file}", line' in attempt.caught["traceback"]
    assert all(fetch.attempts[index][0].caught is None for index in (0, 2))


def test_show_and_its_json_carry_the_caught_errors(crawled: tuple[Path, str]) -> None:
    flow_file, store = crawled
    shown = json.loads(ok("show", flow_file, "crawl", "--datastore", store, "--json"))
    fetch = next(layer for layer in shown["layers"] if layer["name"] == "Fetch")
    assert fetch["status"] == "finished" and fetch["caught"] == 2 and fetch["error"] is None
    caught = fetch["attempts"]["1"][0]["caught"]
    assert caught["type"] == "ValueError" and caught["message"] == "cannot parse bad"
    assert "Traceback (most recent call last)" in caught["traceback"]
    assert fetch["attempts"]["1"][0]["error"] is None and fetch["attempts"]["0"][0]["caught"] is None

    text = ok("show", flow_file, "crawl", "--datastore", store)
    assert "Fetch split 1 attempt 0: caught ValueError: cannot parse bad (Catch: it finished)" in text
    assert "Fetch split 3 attempt 0: caught ValueError: cannot parse worse" in text
    assert "2 errors caught (Catch)" in text


def test_the_split_s_log_says_what_was_caught(crawled: tuple[Path, str]) -> None:
    flow_file, store = crawled
    log = ok("logs", flow_file, "crawl", "Fetch", "--datastore", store, "--index", "1")
    assert "Catch absorbed ValueError: cannot parse bad" in log
    assert ok("logs", flow_file, "crawl", "Fetch", "--datastore", store, "--index", "0") == ""


def test_the_report_lists_the_caught_errors(crawled: tuple[Path, str], tmp_path: Path) -> None:
    flow_file, store = crawled
    page = tmp_path / "report.html"
    ok("report", flow_file, "crawl", "--datastore", store, "-o", page)
    text = page.read_text()
    assert "Fetch split 1, attempt 0 (caught by Catch: it finished): <code>ValueError</code>" in text
    assert "Fetch split 3, attempt 0 (caught by Catch: it finished)" in text
    assert "cannot parse worse" in text and "2 errors caught (Catch)" in text


def test_an_attempt_record_without_caught_keeps_its_shape_and_one_with_it_reads_back() -> None:
    error = {"type": "E", "message": "m", "traceback": "t"}
    plain = AttemptRecord(0, 0, 1.0, 2.0)
    caught = AttemptRecord(1, 0, 1.0, 2.0, caught=error)
    assert len(plain.to_json()) == 5  # what earlier Laminar wrote and reads
    record = LayerStatusRecord("F", "e", "L", "finished", 1.0, 2.0, splits=2, attempts=(plain, caught))
    assert LayerStatusRecord.loads(record.dumps()).attempts == (plain, caught)


class RecordingItself(Executor):
    """Each split records its own result and hands back only that record, as an executor that
    starts a process or container per split does (``recorded_outcome``)."""

    names = ("recording-itself",)

    async def run(self, task: SplitTask) -> SplitOutcome:
        await asyncio.to_thread(run_and_record_split, task)
        return await asyncio.to_thread(recorded_outcome, task)


def test_a_split_that_recorded_itself_keeps_the_caught_type_and_message(tmp_path: Path) -> None:
    class Caught(Flow): ...

    @Caught.register(catch=Catch(KeyError))
    class Lookup(Layer):
        def __call__(self) -> None:
            empty: dict[str, int] = {}
            self.found = empty["missing"]

    flow = Caught(datastore=datastores.Local(tmp_path), executor=RecordingItself())
    (attempt,) = flow(execution="caught").status.layers["Lookup"].attempts[0]
    assert attempt.caught == {"type": "KeyError", "message": "'missing'", "traceback": ""}
