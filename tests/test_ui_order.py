"""``laminar ui`` lists executions newest first by when they were created, whatever their ids.

Ids are the user's to choose (``--execution``, ``flow(execution=...)``), so their order says nothing
about when each run started: the list is ordered by the creation time each execution's metadata
holds, across flows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from laminar._plugins.manager import resolve_datastore
from laminar.configurations import datastores, executors
from laminar_ui.reading import Reader
from ui_support import ui_server

FLOWS = """
from laminar import Flow, Layer


class Named(Flow): ...


@Named.register
class Only(Layer):
    def __call__(self) -> None:
        self.value = 1


class Other(Flow): ...


@Other.register
class Alone(Layer):
    def __call__(self) -> None:
        self.value = 2
"""

#: Runs in the order they are made: their ids sort the other way round, and across two flows.
RUNS = (("Named", "zulu"), ("Other", "alpha"), ("Named", "mike"))


def test_the_newest_execution_comes_first_whatever_its_id(tmp_path: Path) -> None:
    store = tmp_path / ".laminar"
    store.mkdir()
    namespace: dict[str, Any] = {}
    exec(compile(FLOWS, str(tmp_path / "named.py"), "exec"), namespace)
    for flow, execution in RUNS:
        namespace[flow](datastore=datastores.Local(str(store)), executor=executors.Thread())(
            execution=execution
        )
    newest_first = ["mike", "alpha", "zulu"]
    reader = Reader(resolve_datastore(store.as_uri()))
    assert [row.id for row in reader.page(size=50).rows] == newest_first
    assert [row.id for row in reader.page(size=2).rows] == newest_first[:2]
    assert [row.id for row in reader.page(flow="Named", size=50).rows] == ["mike", "zulu"]
    with ui_server(store.as_uri()) as url:
        listed = httpx.get(url, timeout=60).text
    assert [listed.index(f'data-execution="{execution}"') for execution in newest_first] == sorted(
        listed.index(f'data-execution="{execution}"') for execution in newest_first
    )
