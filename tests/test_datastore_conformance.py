"""Every datastore (built-in, cloud, and the out-of-tree example) passes laminar.testing's
DatastoreConformance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import datastore_at
from laminar.configurations import datastores
from laminar.plugins import Datastore
from laminar.testing import DatastoreConformance


class TestLocal(DatastoreConformance):
    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Iterator[Datastore]:
        store = datastores.Local(root=tmp_path / "store")
        yield store
        store.close()


class TestMemory(DatastoreConformance):
    @pytest.fixture
    def datastore(self) -> Iterator[Datastore]:
        store = datastores.Memory()
        yield store
        store.close()


@pytest.mark.s3
class TestS3(DatastoreConformance):
    @pytest.fixture
    def datastore(self, s3_datastore: Any) -> Datastore:
        return s3_datastore  # type: ignore[no-any-return]


@pytest.mark.gcs
class TestGCS(DatastoreConformance):
    @pytest.fixture
    def datastore(self, gcs_datastore: Any) -> Datastore:
        return gcs_datastore  # type: ignore[no-any-return]


@pytest.mark.azure
class TestAzure(DatastoreConformance):
    @pytest.fixture
    def datastore(self, azure_datastore: Any) -> Datastore:
        return azure_datastore  # type: ignore[no-any-return]


class TestSQLite(DatastoreConformance):
    """The example third-party plugin, installed like any other distribution, found by its URL."""

    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Iterator[Datastore]:
        store = datastore_at(f"sqlite:///{tmp_path}/runs.sqlite")
        assert type(store).__module__ == "laminar_sqlite.datastore"
        yield store
        store.close()
