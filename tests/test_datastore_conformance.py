"""Every datastore (built-in, cloud, and the out-of-tree example) passes laminar.testing's
DatastoreConformance, its error checks included: each backend says how to reach storage that does not
exist (missing_storage) and how to be refused with a planted secret (rejected_credentials), where it
has such a thing. (laminar-fsspec runs the kit in test_fsspec_datastore.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulators.fixtures import unique_name
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
    def datastore(self, s3_datastore: Any, s3_auth_service: tuple[str, str]) -> Datastore:
        self.auth_service = s3_auth_service
        return s3_datastore  # type: ignore[no-any-return]

    def missing_storage(self, datastore: Any) -> Datastore:
        from laminar_s3 import S3

        return S3(f"s3://{unique_name('missing')}/runs", endpoint_url=datastore.endpoint_url)

    def rejected_credentials(self, datastore: Any, secret: str) -> Datastore:
        from laminar_s3 import S3

        # moto checks credentials only on a server of its own: a bucket there, with a key it never issued.
        endpoint, bucket = self.auth_service
        return S3(f"s3://{bucket}/runs", endpoint_url=endpoint, key=f"AKIA{secret}", secret=secret)


@pytest.mark.gcs
class TestGCS(DatastoreConformance):
    @pytest.fixture
    def datastore(self, gcs_datastore: Any, tmp_path: Path) -> Datastore:
        self.tmp_path = tmp_path
        return gcs_datastore  # type: ignore[no-any-return]

    def missing_storage(self, datastore: Any) -> Datastore:
        from laminar_gcs import GCS

        return GCS(f"gs://{unique_name('missing')}/runs", endpoint=datastore.endpoint)

    def rejected_credentials(self, datastore: Any, secret: str) -> Datastore:
        from laminar_gcs import GCS

        # The emulator takes any credentials; a service-account key holding the secret that is not a
        # key is refused by the client.
        key = self.tmp_path / "key.json"
        key.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "laminar@example.com",
                    "private_key": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n",
                    "private_key_id": secret,
                    "token_uri": "http://127.0.0.1:9/token",
                }
            )
        )
        return GCS(datastore.url, credentials=key, endpoint=datastore.endpoint)


@pytest.mark.azure
class TestAzure(DatastoreConformance):
    @pytest.fixture
    def datastore(self, azure_datastore: Any) -> Datastore:
        return azure_datastore  # type: ignore[no-any-return]

    def missing_storage(self, datastore: Any) -> Datastore:
        from laminar_azure import Azure

        return Azure(f"az://{unique_name('missing')}/runs", connection_string=datastore.connection_string)

    def rejected_credentials(self, datastore: Any, secret: str) -> Datastore:
        from laminar_azure import Azure

        # The same container through a SAS the account never signed: the endpoint that messages name
        # holds the signature, so it shows unless masked.
        sas = f"sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig={secret}"
        return Azure(datastore.url, account_url=f"{datastore.endpoint}?{sas}", credential=sas)


class TestSQLite(DatastoreConformance):
    """The example third-party plugin, installed like any other distribution, found by its URL."""

    @pytest.fixture
    def datastore(self, tmp_path: Path) -> Iterator[Datastore]:
        store = datastore_at(f"sqlite:///{tmp_path}/runs.sqlite")
        assert type(store).__module__ == "laminar_sqlite.datastore"
        yield store
        store.close()
