"""A session-wide ``distributed.LocalCluster`` (two worker processes) for the Dask tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import pytest
from distributed import Client, LocalCluster


def local_cluster(**options: Any) -> LocalCluster:
    # allowed-failures 0: a task whose worker dies fails at once (KilledWorker), and Laminar's Retry
    # decides what happens next, as the executor's own LocalCluster does.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return LocalCluster(processes=True, threads_per_worker=1, dashboard_address=":0", **options)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each, for the whole session."""
    cluster = local_cluster(n_workers=2)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def address(dask_cluster: LocalCluster) -> Iterator[str]:
    """The session cluster's scheduler address, with both workers up (a test may have killed one)."""
    with Client(dask_cluster) as client:  # type: ignore[no-untyped-call]
        client.wait_for_workers(2)
    yield dask_cluster.scheduler_address
    with Client(dask_cluster) as client:  # type: ignore[no-untyped-call]
        client.wait_for_workers(2)
