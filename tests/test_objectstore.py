"""laminar._transport.objectstore on a minimal in-memory backend: the base class's own rules (URL checks,
retries, error classes, pickling). The real backends run on their emulators in test_datastore_*.py."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
from laminar._transport.objectstore import BucketURL, ObjectStore
from laminar.errors import ConfigurationError, DatastoreError

URL = BucketURL(
    schemes=("fake",), service="Fake", title="a Fake", pattern=re.compile(r"^[a-z]{3,}$"), rule="use letters"
)


class Gone(DatastoreError):
    pass


class Flaky(Exception):
    pass


class Client:
    """An in-memory client: buckets of objects, and errors to raise on the next calls."""

    def __init__(self, buckets: dict[str, dict[str, bytes]], failures: list[Exception]) -> None:
        self.buckets = buckets
        self.failures = failures
        self.closed = False

    def bucket(self, name: str) -> dict[str, bytes]:
        if self.failures:
            raise self.failures.pop(0)
        if name not in self.buckets:
            raise LookupError(name)
        return self.buckets[name]


class Fake(ObjectStore[Client, dict[str, bytes]]):
    schemes = ("fake",)
    transient_names = frozenset({"Flaky"})
    connects = 0

    def __init__(self, url: str, buckets: dict[str, dict[str, bytes]], failures: list[Exception]) -> None:
        super().__init__(*URL.parse(url), attempts=3)
        self.buckets, self.failures = buckets, failures

    def _connect(self) -> Client:
        type(self).connects += 1
        return Client(self.buckets, self.failures)

    def _open_bucket(self, client: Client) -> dict[str, bytes]:
        return client.buckets.get(self.bucket_name, {})

    def _check_bucket(self, bucket: dict[str, bytes]) -> None:
        assert self._client is not None
        try:
            self._client.bucket(self.bucket_name)
        except LookupError:
            raise self._bucket_not_found() from None

    def _bucket_not_found(self) -> DatastoreError:
        return Gone(f"no bucket {self.bucket_name!r} ({self.url})")

    def _classify(self, error: Exception) -> DatastoreError | None:
        return self._bucket_not_found() if isinstance(error, LookupError) else None

    def _disconnect(self, client: Client) -> None:
        client.closed = True

    def _list(self, bucket: dict[str, bytes], path: str) -> list[str]:
        return [path + name[len(path) :].partition("/")[0] for name in bucket if name.startswith(path)]

    def _run(self, bucket: dict[str, bytes], key: str) -> bytes:
        if self.failures:
            raise self.failures.pop(0)
        if self._object(key) not in bucket:
            raise self._missing(key)
        return bucket[self._object(key)]

    def read_bytes(self, key: str) -> bytes:
        return self._call("read", key, lambda bucket: self._run(bucket, key))

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda bucket: bucket.__setitem__(self._object(key), data))

    def exists(self, key: str) -> bool:
        return self._call("check", key, lambda bucket: self._object(key) in bucket)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda bucket: bucket.pop(self._object(key), None))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("other://abc/x", "not a Fake URL: 'other://abc/x'; write fake://bucket/prefix"),
        ("fake:///x", "the Fake URL 'fake:///x' names no bucket"),
        ("fake://AB/x", "'AB' in 'fake://AB/x' is not a valid Fake bucket name: use letters"),
        ("fake://abc/x?y", "has a query or fragment"),
        ("fake://abc/a/../b", "has an empty, '.' or '..' part"),
    ],
)
def test_bucket_urls(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        URL.parse(url)
    assert URL.parse("fake://abc//runs/a/") == ("abc", "runs/a")


def test_calls_are_prefixed_retried_classified_and_named() -> None:
    failures: list[Exception] = []
    store = Fake("fake://abc/runs", {"abc": {}}, failures)
    store.write_bytes("a/b", b"1")
    store.write_bytes("c", b"2")
    assert store.buckets["abc"] == {"runs/a/b": b"1", "runs/c": b"2"}
    assert (store.url, store.list_prefix(""), store.list_prefix("a/")) == (
        "fake://abc/runs",
        ["a", "c"],
        ["b"],
    )
    failures += [Flaky("once"), Flaky("twice")]
    assert store.read_bytes("c") == b"2"  # two transient errors, then the answer
    with pytest.raises(FileNotFoundError, match="no key 'nope' in fake://abc/runs"):
        store.read_bytes("nope")
    failures += [Flaky("again")] * 3
    with pytest.raises(
        DatastoreError, match=r"^read fake://abc/runs/c failed after 3 attempts: Flaky: again"
    ):
        store.read_bytes("c")
    failures.append(LookupError("abc"))
    with pytest.raises(Gone, match="no bucket 'abc'"):  # classified, raised as it is
        store.read_bytes("c")
    failures.append(ValueError("bad"))
    with pytest.raises(DatastoreError, match=r"^read fake://abc/runs/c failed: ValueError: bad"):
        store.read_bytes("c")


def test_client_is_made_once_checked_once_and_dropped_on_pickling_and_close() -> None:
    Fake.connects = 0
    with pytest.raises(Gone, match=r"no bucket 'xyz' \(fake://xyz\)"):
        Fake("fake://xyz", {}, []).exists("k")
    store = Fake("fake://abc", {"abc": {}}, [Flaky("first check")])
    assert not store.exists("k") and not store.exists("k")
    assert Fake.connects == 2 and store._checked
    client = store._client
    copy: Any = pickle.loads(pickle.dumps(store))
    assert (copy._client, copy._bucket, copy._checked, copy.url) == (None, None, False, "fake://abc")
    store.close()
    assert client is not None and client.closed and store._client is None and not store._checked
