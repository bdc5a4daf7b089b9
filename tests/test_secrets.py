"""No credential is ever shown: a recognisable fake secret planted in each backend's options and
environment appears in no error message (nor its causes' and notes, nor a formatted traceback), no log
record, no ``repr``, no ``datastore.url``, and no file a run stored (read back through the datastore).

The one masking policy every backend uses is tested here once. Credentials a store refuses (with the
secret in them) are laminar.testing's DatastoreConformance's, run on every backend in
test_datastore_conformance.py; what stays here is each backend's own ways to show a secret: retries
logged through a failing proxy, endpoints with passwords, unreachable accounts.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zstandard
from emulators.faultproxy import FaultProxy
from emulators.fixtures import AZURITE_ACCOUNT, AZURITE_KEY, azurite_connection_string, closed_endpoint
from laminar.configurations import executors
from laminar.errors import LaminarError
from laminar.plugins import Datastore
from laminar.testing.datastore import ConformanceFlow, Total

SECRET = "SECRETSECRET1234"  # valid base64 too, so Azure takes it as an account key


def shown(error: BaseException) -> str:
    """All a user can see of ``error``: its traceback with every cause, and every note."""
    text = "".join(traceback.format_exception(error))
    current: BaseException | None = error
    for _ in range(40):
        if current is None:
            break
        text += f"\n{current}\n" + "\n".join(map(str, getattr(current, "__notes__", [])))
        current = current.__cause__ or current.__context__
    return text


def stored(datastore: Datastore, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """Every key below ``prefix`` and its bytes (decompressed where they are zlib or zstd streams)."""
    for name in datastore.list_prefix(prefix):
        key = f"{prefix}{name}"
        children = datastore.list_prefix(key + "/")
        if children:
            yield from stored(datastore, key + "/")
        if datastore.exists(key):
            data = datastore.read_bytes(key)
            yield key, data
            with contextlib.suppress(zlib.error):
                yield key, zlib.decompressobj().decompress(data)
            with contextlib.suppress(zstandard.ZstdError):
                yield key, zstandard.ZstdDecompressor().decompressobj().decompress(data)


def assert_hidden(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, f"the secret is shown in: {text[:2000]}"


def assert_nothing_stored(secret: str, datastore: Datastore) -> None:
    keys = list(stored(datastore))
    assert keys, "the run stored nothing to search"
    for key, data in keys:
        assert secret.encode() not in data, f"the secret is stored in {key}"


def run_flow(datastore: Datastore, execution: str) -> None:
    flow = ConformanceFlow(datastore=datastore, executor=executors.Thread())
    assert flow(execution=execution, count=3, label="secrets").layer(Total).total == 1 + 4 + 9


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    caplog.set_level(logging.DEBUG, logger="laminar")
    caplog.set_level(logging.WARNING)
    return lambda: "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )


def with_password(endpoint: str, secret: str = SECRET) -> str:
    return endpoint.replace("http://", f"http://laminar:{secret}@")


# ---- the helper -------------------------------------------------------------------------------------


def test_redact_masks_every_kind_of_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one masking policy every backend uses (laminar.plugins.redact), tested here once."""
    from laminar.plugins import redact

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-" + SECRET)
    cases = {
        f"http://user:{SECRET}@host:9000/b": "http://user:***@host:9000/b",
        f"sftp://laminar:p@ss{SECRET}@127.0.0.1:22/srv": "sftp://laminar:***@127.0.0.1:22/srv",  # "@" inside
        f"AccountName=a;AccountKey={SECRET}==;BlobEndpoint=x": "AccountName=a;AccountKey=***;BlobEndpoint=x",
        f"SharedAccessSignature=sv=1&sig={SECRET};": "SharedAccessSignature=***;",
        f"https://a.blob.core.windows.net/c?sv=2021&se=2030&sig={SECRET}%3D": "https://a.blob.core.windows.net/c?sv=2021&se=2030&sig=***",
        f"https://b.s3.amazonaws.com/k?X-Amz-Signature={SECRET}&x=1": "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&x=1",
        f"https://b/k?X-Amz-Credential={SECRET}%2F2024&X-Amz-Security-Token={SECRET}": "https://b/k?X-Amz-Credential=***&X-Amz-Security-Token=***",
        f"webdav://h/x?client_secret={SECRET}&api_key={SECRET}&key_filename=/k&timeout=5": "webdav://h/x?client_secret=***&api_key=***&key_filename=/k&timeout=5",
        f"fsspec+memory://runs?password={SECRET}&=x": "fsspec+memory://runs?password=***&=x",
        f"S3(secret='{SECRET}', region='eu')": "S3(secret='***', region='eu')",
        f"the key is env-{SECRET}": "the key is ***",
    }
    for text, expected in cases.items():
        assert redact(text) == expected
    literal = {  # secrets a backend knows, by value: 8+ characters anywhere, shorter ones where alone
        f"literal {SECRET}!": "literal ***!",
        f"glued{SECRET}glued": "glued***glued",
        "refused password 'pw7' for pw7x and xpw7": "refused password '***' for pw7x and xpw7",
        "quoted p%40ss%2F1 and p@ss/1": "quoted *** and ***",
    }
    for text, expected in literal.items():
        assert redact(text, secrets=[SECRET, "pw7", "p@ss/1", None, ""]) == expected
    ordinary = "write s3://bucket/runs/key at http://127.0.0.1:9000 failed: no key 'sig' in it; secret-less"
    assert redact(ordinary, secrets=["s", "short"]) == ordinary  # nothing else is touched


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("passphrase", True),
        ("client_secret", True),
        ("token", True),
        ("sig", True),
        ("X-Amz-Credential", True),
        ("connection_string", True),
        ("key", True),
        ("account_key", True),
        ("pkey", True),
        ("key_filename", False),
        ("timeout", False),
        ("username", False),
        ("region", False),
        ("AccountName", False),
    ],
)
def test_which_option_names_hold_secrets(name: str, secret: bool) -> None:
    """What the policy takes for a secret by its name: query parameters, fsspec's storage options."""
    from laminar.plugins import is_secret_name

    assert is_secret_name(name) is secret


# ---- S3 ---------------------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.timeout(300)
def test_s3_secrets_are_never_shown(
    s3_location: str,
    s3_service: Any,
    fault_proxy: Callable[..., FaultProxy],
    logs: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from laminar_s3 import S3

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto takes any secret
    monkeypatch.setenv("AWS_SESSION_TOKEN", "TOKEN" + SECRET)
    texts: list[str] = []

    # A normal run, through a proxy that makes the first writes fail: the retries are logged.
    proxy = fault_proxy(s3_service.endpoint, plan=["forward", "error_503", "reset_before", "error_500"])
    datastore = S3(s3_location, endpoint_url=proxy.endpoint, key="laminar-test", secret=SECRET, deadline=30)
    run_flow(datastore, "secret-run")
    texts += [repr(datastore), str(datastore), datastore.url]
    assert "attempt 1 of 8" in logs()
    assert_nothing_stored(SECRET, S3(s3_location, endpoint_url=s3_service.endpoint))

    # An endpoint with a password in it: refused before any request, the endpoint named, masked.
    endpoint = closed_endpoint()
    with pytest.raises(LaminarError, match="has a user name or password in it") as bad_endpoint:
        S3("s3://somebucket/runs", endpoint_url=with_password(endpoint))
    assert endpoint.replace("http://", "http://laminar:***@") in str(bad_endpoint.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", with_password(endpoint))
    with pytest.raises(LaminarError, match="has a user name or password in it") as bad_environment:
        S3.from_url("s3://somebucket/runs")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_service.endpoint)
    texts += [shown(bad_endpoint.value), shown(bad_environment.value)]

    # An endpoint that cannot be reached, with secret options.
    unreachable = S3(
        "s3://somebucket/runs", endpoint_url=endpoint, key="AKIAFAKE", secret=SECRET, token=SECRET, attempts=2
    )
    with pytest.raises(LaminarError) as error:
        unreachable.write_bytes("key", b"value")
    assert endpoint in str(error.value) and "after 2 attempts" in str(error.value)
    texts += [shown(error.value), repr(unreachable), unreachable.url]
    with pytest.raises(LaminarError) as failed_run:
        run_flow(unreachable, "never")
    texts.append(shown(failed_run.value))

    # A password where the bucket should be.
    with pytest.raises(LaminarError) as bad_url:
        S3(f"s3://user:{SECRET}@bucket/runs")
    texts.append(shown(bad_url.value))

    assert_hidden(SECRET, *texts, logs())


# ---- GCS --------------------------------------------------------------------------------------------


@pytest.mark.gcs
@pytest.mark.timeout(300)
def test_gcs_secrets_are_never_shown(
    gcs_location: str,
    gcs_service: Any,
    fault_proxy: Callable[..., FaultProxy],
    logs: Callable[[], str],
) -> None:
    from laminar_gcs import GCS

    texts: list[str] = []
    # A normal run, against an endpoint with a password in it, through a proxy that makes writes fail.
    proxy = fault_proxy(gcs_service.endpoint, plan=["forward", "error_503", "reset_before", "error_500"])
    datastore = GCS(gcs_location, endpoint=with_password(proxy.endpoint), deadline=30)
    run_flow(datastore, "secret-run")
    texts += [repr(datastore), str(datastore), datastore.url]
    assert "attempt 1 of 8" in logs() and "laminar:***@" in logs()
    assert_nothing_stored(SECRET, GCS(gcs_location, endpoint=gcs_service.endpoint))

    endpoint = closed_endpoint()
    unreachable = GCS("gs://somebucket/runs", endpoint=with_password(endpoint), attempts=2)
    with pytest.raises(LaminarError) as error:
        unreachable.exists("key")
    assert endpoint.replace("http://", "http://laminar:***@") in str(error.value)
    texts += [shown(error.value), repr(unreachable)]
    with pytest.raises(LaminarError) as failed_run:
        run_flow(unreachable, "never")
    texts.append(shown(failed_run.value))

    assert_hidden(SECRET, *texts, logs())


# ---- Azure ------------------------------------------------------------------------------------------


def _sas(endpoint: str) -> str:
    """A real account SAS for Azurite (signed with its key): ``sv=...&sig=...``."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(
            read=True, write=True, delete=True, list=True, create=True, add=True
        ),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )


@pytest.mark.azure
@pytest.mark.timeout(300)
def test_azure_secrets_are_never_shown(
    azure_location: str,
    azure_service: Any,
    fault_proxy: Callable[..., FaultProxy],
    logs: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urllib.parse import parse_qs

    from laminar_azure import Azure

    monkeypatch.setenv("AZURE_STORAGE_KEY", SECRET)
    emulator = azure_service.connection_string.split("BlobEndpoint=")[1].split(";")[0].rsplit("/", 1)[0]
    texts: list[str] = []

    # Normal runs: with the account key, and with a SAS token, in the connection string, through a
    # proxy that makes writes fail. The secrets are the real key and the SAS signature.
    sas = _sas(emulator)
    signature = parse_qs(sas)["sig"][0]
    for name, secret in (("key", AZURITE_KEY), ("sas", signature)):
        proxy = fault_proxy(emulator, plan=["forward", "error_503", "reset_before", "error_500"])
        blob = f"{proxy.endpoint}/{AZURITE_ACCOUNT}"
        connection = (
            azurite_connection_string(proxy.endpoint)
            if name == "key"
            else f"BlobEndpoint={blob};SharedAccessSignature={sas}"
        )
        datastore = Azure(azure_location, connection_string=connection, deadline=30)
        run_flow(datastore, f"secret-run-{name}")
        assert_hidden(secret, repr(datastore), str(datastore), datastore.url, logs())
        assert_nothing_stored(
            secret, Azure(azure_location, connection_string=azure_service.connection_string)
        )
    assert "attempt 1 of 8" in logs()

    # An unreachable account: by connection string, and by an account URL with a SAS in it.
    endpoint = closed_endpoint()
    unreachable = Azure(
        "az://somecontainer/runs",
        connection_string=azurite_connection_string(endpoint, key=SECRET),
        attempts=2,
    )
    with pytest.raises(LaminarError) as error:
        unreachable.write_bytes("key", b"value")
    assert endpoint in str(error.value)
    texts += [shown(error.value), repr(unreachable)]
    with pytest.raises(LaminarError) as failed_run:
        run_flow(unreachable, "never")
    texts.append(shown(failed_run.value))

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv(
        "AZURE_STORAGE_ACCOUNT_URL", f"{endpoint}/{AZURITE_ACCOUNT}?sv=2021-08-06&sig={SECRET}"
    )
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", f"sv=2021-08-06&sig={SECRET}")
    by_url = Azure.from_url("az://somecontainer/runs")
    by_url.attempts = 2
    with pytest.raises(LaminarError) as url_error:
        by_url.read_bytes("key")
    assert "devstoreaccount1?***" in str(url_error.value)  # the query is the SAS token: masked whole
    texts += [shown(url_error.value), repr(by_url)]

    assert_hidden(SECRET, *texts, logs())
