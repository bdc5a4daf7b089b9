from __future__ import annotations

import pytest

pytest_plugins = ["emulators.fixtures", "dask_cluster", "emulators.sftp"]

#: Test files that share what they make once per session, so they run in the same worker under
#: pytest-xdist (``./run test`` runs two): the built distributions and the README's environment.
SHARED_SESSION = {"test_packaging.py": "distributions", "test_readme.py": "distributions"}

#: The units that take longest (from ``--durations``), handed out first, so that near the end each
#: worker runs short files, not one of these alone while the other waits. The rest keep their order.
SLOWEST_FIRST = (
    "distributions",
    "test_ui.py",
    "test_ui_browser.py",
    "test_datastore_conformance.py",
    "test_reliability.py",
    "test_storage_faults.py",
    "test_executor_conformance.py",
    "test_dask_executor.py",
    "test_verify.py",
    "test_fsspec_datastore.py",
    "test_docs.py",
    "test_cloud_flows.py",
)


def _unit(path_or_id: str) -> str:
    """The unit of work a test belongs to: its file, or the group of files sharing what it makes."""
    name = path_or_id.split("::", 1)[0].rsplit("/", 1)[-1]
    return SHARED_SESSION.get(name, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest units first (``./run test`` keeps this order: ``--no-loadscope-reorder``); each
    file's tests in their own order."""
    rank = {unit: place for place, unit in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile`` (``./run test``), each file one unit of work, its module- and session-scoped
    servers and builds made once, in one worker, not in both; the files of ``SHARED_SESSION`` one
    unit together. (pytest-xdist's ``loadgroup``, which would read groups from marks, does not group
    under pytest 9.2: pytest-xdist issue 1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Units(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return Units(config, log)  # type: ignore[arg-type]
