"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, between a storage client and an emulator.

``FaultProxy(target_port, seed=..., faults=Faults(...))`` listens on a free port of 127.0.0.1 and
forwards each request to ``127.0.0.1:target_port``, reading requests and responses as HTTP/1.1
messages (``Content-Length``, chunked, or to the end of the connection) so that it can decide per
request, with a seeded random generator, to

- ``reset_before``: reset the client's connection before the request reaches the server;
- ``reset_after``: forward the request, wait for the server's answer, and reset the client's
  connection instead of passing the answer on (the request took effect; the client cannot know);
- ``error_500`` / ``error_503``: answer ``500`` / ``503`` itself instead of forwarding;
- ``latency``: forward after a pause of up to ``max_latency`` seconds;

or forward it untouched. ``plan`` lists faults for the first requests, in order, before the random
ones. :meth:`FaultProxy.black_hole` switches to accepting connections and reading requests but never
answering (until the client gives up); :meth:`FaultProxy.forward` switches back.

Bounded: it listens on 127.0.0.1 only and forwards to 127.0.0.1 only; every socket has a time-out;
headers, bodies, requests per connection and connections are capped; it stops by itself after
``lifetime`` seconds; :meth:`FaultProxy.stop` (or leaving the ``with`` block) ends every thread.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

FAULTS = ("reset_before", "reset_after", "error_500", "error_503", "latency")
_HEAD_LIMIT = 256 * 2**10
_BODY_LIMIT = 512 * 2**20
_IDLE = 30.0  # seconds a connection may sit idle
_MAX_REQUESTS = 100_000  # per connection
_MAX_CONNECTIONS = 20_000
_HOLD = 120.0  # longest a black-holed connection is held open


class _Closed(Exception):
    """The peer closed the connection (or the proxy is stopping)."""


@dataclass(frozen=True)
class Faults:
    """Probabilities of each fault per request (the rest is forwarded untouched)."""

    reset_before: float = 0.0
    reset_after: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    latency: float = 0.0
    max_latency: float = 0.2

    def __post_init__(self) -> None:
        total = self.reset_before + self.reset_after + self.error_500 + self.error_503 + self.latency
        if not 0 <= total <= 1:
            raise ValueError(f"fault probabilities must add up to at most 1, got {total}")


class FaultProxy:
    """See the module docstring. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        target_port: int,
        *,
        seed: int = 0,
        faults: Faults = Faults(),
        plan: list[str] | None = None,
        lifetime: float = 600.0,
    ) -> None:
        for fault in plan or []:
            if fault not in (*FAULTS, "forward"):
                raise ValueError(f"unknown fault {fault!r}: use one of {FAULTS} or 'forward'")
        self.target = ("127.0.0.1", target_port)
        self.faults = faults
        self.plan = list(plan or [])
        self.lifetime = lifetime
        #: How many requests got each fault, ``forward`` (untouched) and ``black_hole``.
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._holing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._connections = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- control -------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        thread = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def black_hole(self) -> None:
        """From now on accept and read every request and never answer; drop forwarded connections."""
        self._holing.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # pooled connections would otherwise still be served
            _shut(sock)

    def forward(self) -> None:
        """Forward (with the configured faults) again."""
        self._holing.clear()

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- serving -------------------------------------------------------------------------------
    def _accept(self) -> None:
        ends = time.monotonic() + self.lifetime
        while (
            not self._stopping.is_set() and time.monotonic() < ends and self._connections < _MAX_CONNECTIONS
        ):
            try:
                client, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if address[0] != "127.0.0.1":
                _reset(client)
                continue
            self._connections += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()
        self._stopping.set()

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(_IDLE)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _untrack(self, *socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is None:
                continue
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _choose(self) -> str:
        with self._lock:
            if self.plan:
                return self.plan.pop(0)
            draw, faults = self._random.random(), self.faults
        for name in FAULTS:
            chance: float = getattr(faults, name)
            if draw < chance:
                return name
            draw -= chance
        return "forward"

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        upstream: socket.socket | None = None
        reader = _Reader(client, self._stopping)
        try:
            for _ in range(_MAX_REQUESTS):
                if self._holing.is_set():
                    self._hold(reader)
                    return
                head = reader.head()
                if self._holing.is_set():
                    self._hold(reader)
                    return
                method, headers = _parse_request(head)
                if headers.get("expect", "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _without_header(head, b"expect")
                body = reader.body(headers)
                fault = self._choose()
                self._count(fault)
                if fault == "reset_before":
                    _reset(client)
                    return
                if fault in ("error_500", "error_503"):
                    status = (
                        b"500 Internal Server Error" if fault == "error_500" else b"503 Service Unavailable"
                    )
                    message = b"" if method == "HEAD" else b"injected by faultproxy"
                    client.sendall(
                        b"HTTP/1.1 "
                        + status
                        + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                        + str(len(message)).encode()
                        + b"\r\nConnection: close\r\n\r\n"
                        + message
                    )
                    return
                if fault == "latency":
                    with self._lock:
                        pause = self._random.uniform(0, self.faults.max_latency)
                    if self._stopping.wait(pause):
                        return
                if upstream is not None and not _alive(upstream):
                    self._untrack(upstream)  # the server closed its idle connection: open another
                    upstream = None
                if upstream is None:
                    upstream = self._track(socket.create_connection(self.target, timeout=10))
                upstream.sendall(head + body)
                response = _Reader(upstream, self._stopping)
                answer = response.response(method)
                if fault == "reset_after":
                    _reset(client)
                    return
                client.sendall(answer)
                if _closes(head) or _closes(answer.split(b"\r\n\r\n", 1)[0]) or response.until_close:
                    return
        except (_Closed, OSError):
            return
        finally:
            self._untrack(client, upstream)

    def _hold(self, reader: _Reader) -> None:
        """Read whatever the client sends and never answer, until it gives up (or the proxy stops)."""
        self._count("black_hole")
        ends = time.monotonic() + _HOLD
        reader.sock.settimeout(0.2)
        while time.monotonic() < ends and not self._stopping.is_set() and self._holing.is_set():
            try:
                if not reader.sock.recv(65536):
                    return
            except TimeoutError:
                continue
        # Forwarding again (or stopping): a black-holed request never gets its answer; drop it.


class _Reader:
    """Buffered reads of HTTP/1.1 messages from one socket, bounded in size and time."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock = sock
        self.buffer = b""
        self.stopping = stopping
        self.until_close = False

    def _more(self) -> bytes:
        if self.stopping.is_set():
            raise _Closed()
        data = self.sock.recv(65536)
        if not data:
            raise _Closed()
        return data

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise _Closed()
            self.buffer += self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, size: int) -> bytes:
        if size > _BODY_LIMIT:
            raise _Closed()
        while len(self.buffer) < size:
            self.buffer += self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise _Closed()
            self.buffer += self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.line()
            parts.append(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            total += size
            if total > _BODY_LIMIT:
                raise _Closed()
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.line()
                    parts.append(trailer)
                    if trailer == b"\r\n":
                        return b"".join(parts)
            parts.append(self.exactly(size + 2))

    def body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self.chunked()
        return self.exactly(int(headers.get("content-length", "0") or 0))

    def response(self, method: str) -> bytes:
        """One whole response (after any interim ``1xx`` ones, which are passed on with it)."""
        interim = b""
        for _ in range(10):
            head = self.head()
            status, headers = _parse_response(head)
            if 100 <= status < 200 and status != 101:
                interim += head
                continue
            if method == "HEAD" or status in (204, 304):
                return interim + head
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return interim + head + self.chunked()
            if "content-length" in headers:
                return interim + head + self.exactly(int(headers["content-length"]))
            self.until_close = True  # the body runs to the end of the connection
            ends = time.monotonic() + _IDLE
            while time.monotonic() < ends:
                try:
                    self.buffer += self._more()
                except _Closed:
                    break
                if len(self.buffer) > _BODY_LIMIT:
                    raise _Closed()
            data, self.buffer = self.buffer, b""
            return interim + head + data
        raise _Closed()


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _parse_request(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0].decode("latin-1")
    return method, _headers(lines[1:])


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise _Closed()
    return int(parts[1]), _headers(lines[1:])


def _without_header(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() != name]
    return b"\r\n".join(kept)


def _closes(head: bytes) -> bool:
    """Whether the connection ends after this message (``Connection: close``, or HTTP/1.0)."""
    lines = head.split(b"\r\n")
    connection = _headers(lines[1:]).get("connection", "").lower()
    if b"HTTP/1.0" in lines[0]:
        return "keep-alive" not in connection
    return "close" in connection


def _alive(sock: socket.socket) -> bool:
    """Whether the peer of an idle connection has not closed it."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) != b""
        finally:
            sock.settimeout(_IDLE)
    except BlockingIOError:
        return True
    except OSError:
        return False


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (RST) rather than an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
