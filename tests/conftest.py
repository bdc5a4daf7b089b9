from __future__ import annotations

import pytest

pytest_plugins = ["emulators.fixtures", "dask_cluster", "emulators.sftp"]

#: Test files that share what they make once per session, so they run in the same worker under
#: pytest-xdist (``./run test`` runs two): the built distributions and the README's environment.
SHARED_SESSION = {"test_packaging.py": "distributions", "test_readme.py": "distributions"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test file is one unit of work for pytest-xdist's ``--dist loadgroup``: its module- and
    session-scoped servers and builds are made once, in one worker, not once per test."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(SHARED_SESSION.get(item.path.name, item.path.stem)))
