"""Bounded storage faults, on S3, GCS and Azure: real emulators behind a real fault-injecting proxy.

- flows complete with the reference results through seeded resets (before and after the request
  reached the server), injected 500/503 answers and latency;
- a server that never answers (the proxy's black hole), from the start or switched on mid-flow, fails
  within the deadline with an error naming the URL; ``resume()`` completes once it answers again;
- every retry is one WARNING on the ``laminar.storage`` logger; a permanent error (a missing bucket,
  refused credentials) fails at once, without retries;
- S3, GCS and Azure share one retry policy, and ``deadline=`` / ``LAMINAR_STORAGE_DEADLINE`` set it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from emulators.faultproxy import FaultProxy, Faults
from emulators.fixtures import AZURITE_KEY, azurite_connection_string, unique_name
from laminar import Flow, Layer, Parameters
from laminar.configurations import executors
from laminar.configurations.layers import ForEach, Parameter
from laminar.errors import ConfigurationError, DatastoreError, LaminarError
from laminar.plugins import ObjectStore
from laminar.testing.datastore import ConformanceFlow, Total, _expected

#: Seeded faults: about one request in six is reset, answered 500/503, or delayed.
FAULTS = Faults(
    reset_before=0.04, reset_after=0.04, error_500=0.03, error_503=0.03, latency=0.04, max_latency=0.05
)
DEADLINE = 5.0
#: A generous bound on a failure that the deadline should bring within about one deadline.
BOUND = 3 * DEADLINE


@dataclass
class Backend:
    """One backend's emulator and how to reach a location on it through some endpoint."""

    name: str
    url: str  # the fresh bucket / container of this test
    endpoint: str  # the emulator itself
    build: Callable[..., ObjectStore[Any, Any]]  # build(url, endpoint, **options)

    def through(self, proxy: FaultProxy, url: str | None = None, **options: Any) -> ObjectStore[Any, Any]:
        return self.build(url or self.url, proxy.endpoint, **options)

    def direct(self) -> ObjectStore[Any, Any]:
        return self.build(self.url, self.endpoint)

    def missing(self) -> str:
        scheme = self.url.partition("://")[0]
        return f"{scheme}://{unique_name('missing')}/runs"


def _s3(request: pytest.FixtureRequest) -> Backend:
    from laminar_s3 import S3

    service = request.getfixturevalue("s3_service")
    url = request.getfixturevalue("s3_location")
    return Backend("s3", url, service.endpoint, lambda u, e, **o: S3(u, endpoint_url=e, **o))


def _gcs(request: pytest.FixtureRequest) -> Backend:
    from laminar_gcs import GCS

    service = request.getfixturevalue("gcs_service")
    url = request.getfixturevalue("gcs_location")
    return Backend("gcs", url, service.endpoint, lambda u, e, **o: GCS(u, endpoint=e, **o))


def _azure(request: pytest.FixtureRequest) -> Backend:
    from laminar_azure import Azure

    service = request.getfixturevalue("azure_service")
    url = request.getfixturevalue("azure_location")
    endpoint = service.connection_string.split("BlobEndpoint=")[1].split(";")[0].rsplit("/", 1)[0]
    return Backend(
        "azure",
        url,
        endpoint,
        lambda u, e, **o: Azure(u, connection_string=azurite_connection_string(e), **o),
    )


BACKENDS = [
    pytest.param(_s3, id="s3", marks=pytest.mark.s3),
    pytest.param(_gcs, id="gcs", marks=pytest.mark.gcs),
    pytest.param(_azure, id="azure", marks=pytest.mark.azure),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    make: Callable[[pytest.FixtureRequest], Backend] = request.param
    return make(request)


def messages(error: BaseException) -> str:
    """Every message a traceback of ``error`` would show: the chain of causes and their notes."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None and len(parts) < 40:
        parts.append(f"{type(current).__name__}: {current}")
        parts.extend(getattr(current, "__notes__", []))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(parts)


def retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "laminar.storage" and r.levelno == logging.WARNING]


# ---- seeded faults: every flow completes -----------------------------------------------------------


@pytest.mark.timeout(900)
def test_ten_flows_complete_through_seeded_faults(
    backend: Backend, fault_proxy: Callable[..., FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="laminar.storage")
    proxy = fault_proxy(backend.endpoint, seed=10, faults=FAULTS)
    datastore = backend.through(proxy, deadline=30)
    try:
        for run in range(10):
            executor = executors.Process(concurrency=2) if run % 5 == 4 else executors.Thread()
            flow = ConformanceFlow(datastore=datastore, executor=executor)
            execution = flow(execution=f"faulty-{run}", count=4, label=f"run {run}")
            total = execution.layer(Total)
            results = {name: getattr(total, name) for name in ("squares", "total", "shifted", "summary")}
            assert results == _expected(4, f"run {run}")
    finally:
        datastore.close()
    # The faults were there, and retried (the Process runs' retries are logged in their workers).
    for fault in ("reset_before", "reset_after", "error_500", "error_503", "latency"):
        assert proxy.counts[fault] > 0, (fault, proxy.counts)
    assert len(retries(caplog)) > 0
    # The reference results, read back past the proxy: the stored state is the faultless one.
    direct = backend.direct()
    flow = ConformanceFlow(datastore=direct, executor=executors.Thread())
    for run in range(10):
        assert flow.execution(f"faulty-{run}").layer(Total).total == _expected(4, "")["total"]
    assert [e.id for e in direct.list_executions(flow=flow)] == sorted(f"faulty-{run}" for run in range(10))
    direct.close()


# ---- a server that never answers ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_server_that_never_answers_fails_within_the_deadline(
    backend: Backend, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(backend.endpoint)
    proxy.black_hole()
    datastore = backend.through(proxy, deadline=DEADLINE)
    start = time.monotonic()
    with pytest.raises(DatastoreError) as error:
        datastore.write_bytes("key", b"value")
    elapsed = time.monotonic() - start
    assert DEADLINE * 0.8 <= elapsed < BOUND, elapsed  # it waited for an answer, and no longer than that
    message = str(error.value)
    assert backend.url in message and proxy.endpoint in message, message
    assert "deadline is 5s" in message and "LAMINAR_STORAGE_DEADLINE" in message
    assert proxy.counts["black_hole"] >= 1


@pytest.mark.timeout(120)
def test_the_deadline_comes_from_the_environment(
    backend: Backend, fault_proxy: Callable[..., FaultProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_STORAGE_DEADLINE", "3")
    proxy = fault_proxy(backend.endpoint)
    proxy.black_hole()
    datastore = backend.through(proxy)
    assert datastore.deadline == 3 and datastore.read_timeout <= 3 and datastore.connect_timeout <= 3
    start = time.monotonic()
    with pytest.raises(DatastoreError, match="deadline is 3s"):
        datastore.exists("key")
    assert time.monotonic() - start < 9


#: Calls of ``BLACK_HOLE`` switch the proxy of the running test to its black hole (Thread executor only).
BLACK_HOLE: list[Callable[[], None]] = []


class Interrupted(Flow):
    """Numbers -> Square (foreach of 6; split 3 switches the storage off) -> Sum (join)."""


@Interrupted.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=list(range(1, parameters.count + 1)))


@Interrupted.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="values")]))
class Square(Layer):
    def __call__(self, numbers: Numbers) -> None:
        if numbers.values == 3:
            for switch in BLACK_HOLE:
                switch()
        self.value = numbers.values**2


@Interrupted.register
class Sum(Layer):
    def __call__(self, square: Square) -> None:
        self.squares = list(square.value)
        self.total = sum(square.value)


def _resume(flow: Flow, execution: str) -> Any:
    """``flow.execution(execution).resume()``, once the lease the failed run could not release (its
    storage was gone) has gone stale: a short ``LAMINAR_LEASE_TTL`` is set for that."""
    ends = time.monotonic() + 60
    while True:
        try:
            return flow.execution(execution).resume()
        except LaminarError as error:
            if "being run by another scheduler" not in str(error) or time.monotonic() > ends:
                raise
            time.sleep(0.5)


@pytest.mark.timeout(300)
def test_storage_lost_mid_flow_fails_within_the_deadline_and_resume_completes(
    backend: Backend, fault_proxy: Callable[..., FaultProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINAR_LEASE_TTL", "3")
    proxy = fault_proxy(backend.endpoint)
    switched: list[float] = []

    def switch() -> None:
        if not switched:
            switched.append(time.monotonic())
            proxy.black_hole()

    BLACK_HOLE[:] = [switch]
    datastore = backend.through(proxy, deadline=DEADLINE)
    flow = Interrupted(datastore=datastore, executor=executors.Thread(concurrency=2))
    try:
        with pytest.raises(LaminarError) as error:
            flow(execution="interrupted", count=6)
        elapsed = time.monotonic() - switched[0]
    finally:
        BLACK_HOLE.clear()
    assert elapsed < BOUND, f"the run failed {elapsed:.1f}s after the storage stopped answering"
    shown = messages(error.value)
    assert backend.url in shown and proxy.endpoint in shown and "deadline" in shown, shown
    assert proxy.counts["black_hole"] >= 1

    proxy.forward()
    execution = _resume(flow, "interrupted")
    assert execution.layer(Sum).total == sum(n * n for n in range(1, 7))
    assert execution.layer(Sum).squares == [n * n for n in range(1, 7)]
    datastore.close()


# ---- retries are logged; permanent errors are not retried ---------------------------------------------


@pytest.mark.timeout(120)
def test_each_retry_is_one_warning_on_the_storage_logger(
    backend: Backend, fault_proxy: Callable[..., FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="laminar.storage")
    proxy = fault_proxy(backend.endpoint)
    datastore = backend.through(proxy, deadline=30)
    datastore.write_bytes("warm", b"up")  # the first-use check, without faults
    assert retries(caplog) == []
    proxy.plan[:] = ["error_503", "error_500", "error_503"]  # answers: no SDK retries them unseen
    datastore.write_bytes("key", b"value")
    assert backend.direct().read_bytes("key") == b"value"
    records = retries(caplog)
    assert proxy.counts["error_503"] + proxy.counts["error_500"] == 3
    # One line per retry of ours. (The GCS SDK has been seen to absorb one of the three answers itself,
    # about one run in six: then two lines; and once two of them, in a CI run: then one. The others'
    # backends' keep the bound they had.)
    fewest = 1 if backend.name == "gcs" else 2
    assert fewest <= len(records) <= 3, [r.getMessage() for r in records]
    for attempt, record in enumerate(records, start=1):
        line = record.getMessage()
        assert line.startswith(f"write {backend.url}/key at {proxy.endpoint}") and "\n" not in line, line
        assert f": attempt {attempt} of 8 failed (" in line, line
        assert "retrying in" in line and "of the 30s deadline" in line
        cause = line.lower().replace(" ", "")
        assert any(code in cause for code in ("503", "serviceunavailable", "500", "internalservererror")), (
            line
        )


@pytest.mark.timeout(120)
def test_a_missing_bucket_fails_at_once_without_retries(
    backend: Backend, fault_proxy: Callable[..., FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="laminar.storage")
    proxy = fault_proxy(backend.endpoint)
    missing = backend.missing()
    datastore = backend.through(proxy, url=missing, deadline=30)
    start = time.monotonic()
    with pytest.raises(DatastoreError) as error:
        datastore.write_bytes("key", b"value")
    assert time.monotonic() - start < 10  # no back-off: a single wait would add at least 0.1 s per retry
    assert "does not exist" in str(error.value) and missing in str(error.value)
    assert retries(caplog) == []
    assert proxy.counts["forward"] == 1, proxy.counts  # one request: the first-use check


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_refused_credentials_fail_at_once_without_retries(
    s3_auth_service: tuple[str, str], fault_proxy: Callable[..., FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    from laminar_s3 import S3, CredentialsRejected

    caplog.set_level(logging.WARNING, logger="laminar.storage")
    endpoint, bucket = s3_auth_service
    proxy = fault_proxy(endpoint)
    datastore = S3(f"s3://{bucket}/runs", endpoint_url=proxy.endpoint, key="nobody", secret="wrong-secret")
    with pytest.raises(CredentialsRejected, match=f"refused the credentials for s3://{bucket}/runs"):
        datastore.write_bytes("key", b"value")
    assert retries(caplog) == []
    assert proxy.counts["forward"] == 2, proxy.counts  # the check (403: let the call decide), the PUT


@pytest.mark.azure
@pytest.mark.timeout(120)
def test_azure_refused_key_fails_at_once_without_retries(
    azure_location: str,
    azure_service: Any,
    fault_proxy: Callable[..., FaultProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from laminar_azure import Azure, CredentialsRejected

    caplog.set_level(logging.WARNING, logger="laminar.storage")
    endpoint = azure_service.connection_string.split("BlobEndpoint=")[1].split(";")[0].rsplit("/", 1)[0]
    proxy = fault_proxy(endpoint)
    wrong = azurite_connection_string(proxy.endpoint).replace(AZURITE_KEY, "d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    with pytest.raises(CredentialsRejected):
        Azure(azure_location, connection_string=wrong).write_bytes("key", b"value")
    assert retries(caplog) == []
    assert proxy.counts["forward"] == 1, proxy.counts


# ---- one policy --------------------------------------------------------------------------------------


def test_one_policy_for_every_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar._transport.retries import StoragePolicy
    from laminar_azure import Azure
    from laminar_gcs import GCS
    from laminar_s3 import S3

    monkeypatch.delenv("LAMINAR_STORAGE_DEADLINE", raising=False)
    stores = [
        S3("s3://bucket/runs", endpoint_url="http://127.0.0.1:9"),
        GCS("gs://bucket/runs", endpoint="http://127.0.0.1:9"),
        Azure("az://container/runs", connection_string=azurite_connection_string("http://127.0.0.1:9")),
    ]
    assert {store.policy for store in stores} == {StoragePolicy()}
    policy = StoragePolicy()
    assert policy.deadline == 60 and policy.attempts == 8
    waits = [policy.wait(n) for n in range(1, 8)]
    assert all(
        min(5.0, 0.1 * 2 ** (n - 1)) <= w <= min(5.0, 1.5 * 0.1 * 2 ** (n - 1))
        for n, w in enumerate(waits, 1)
    )
    assert sum(min(5.0, 1.5 * 0.1 * 2 ** (n - 1)) for n in range(1, 8)) < policy.deadline
    assert {(s.connect_timeout, s.read_timeout) for s in stores} == {(3.0, 20.0)}
    fast = S3("s3://bucket/runs", endpoint_url="http://127.0.0.1:9", deadline=2)
    assert (fast.deadline, fast.connect_timeout, fast.read_timeout) == (2, 2, 2)
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("LAMINAR_STORAGE_DEADLINE", bad)
        with pytest.raises(ConfigurationError, match="LAMINAR_STORAGE_DEADLINE"):
            S3("s3://bucket/runs")
    with pytest.raises(ConfigurationError, match="deadline="):
        GCS("gs://bucket/runs", deadline=0)


@pytest.fixture(autouse=True)
def _no_leftover_switch() -> Iterator[None]:
    yield
    BLACK_HOLE.clear()
