"""A real SFTP server on 127.0.0.1 for the laminar-fsspec tests: asyncssh, in a subprocess.

As a pytest plugin (listed in ``tests/conftest.py``) this module provides ``sftp_service``, started
once per session on a free port and stopped at its end, and ``sftp_location``, a fresh directory on it
for each test. The server serves one temporary directory (a chroot: the client's ``/`` is that
directory, which the tests can inspect on disk) to one user, who may log in with a password or with a
generated ed25519 key. Clients connect with fsspec's ``sftp`` implementation (paramiko).

Run as a script, it is the server itself::

    python sftp.py ROOT USER PASSWORD AUTHORIZED_KEYS HOST_KEY READY_FILE

It listens on 127.0.0.1 on a port the system picks and writes that port to READY_FILE once it accepts
connections; it serves until SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

SFTP_HINT = (
    "The SFTP tests need asyncssh (the server) and paramiko (fsspec's sftp client): run `uv sync` at the "
    "repository root (the dev group has both), or `pip install asyncssh paramiko`."
)
START_TIMEOUT = 30.0
USER = "laminar"
PASSWORD = "laminar-sftp-test"


# ---- the server (run as a script) ----------------------------------------------------------------


def serve(root: str, user: str, password: str, authorized_keys: str, host_key: str, ready: str) -> None:
    import asyncssh

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn

        def begin_auth(self, username: str) -> bool:
            if username == user:
                self._conn.set_authorized_keys(authorized_keys)
            return True  # always ask for credentials

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, offered: str) -> bool:
            return username == user and offered == password

    def sftp_factory(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=root.encode())

    async def main() -> None:
        acceptor = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=Server,
            server_host_keys=[host_key],
            sftp_factory=sftp_factory,
            allow_scp=False,
            backlog=128,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(name, stop.set)
        partial = f"{ready}.partial"
        with open(partial, "w") as file:
            file.write(str(acceptor.get_port()))
        os.replace(partial, ready)  # the port appears whole, once connections are accepted
        await stop.wait()
        acceptor.close()
        await acceptor.wait_closed()

    asyncio.run(main())


# ---- the pytest fixtures -------------------------------------------------------------------------


@dataclass
class SFTPService:
    """The running server: where it listens, what it serves, and the credentials it accepts."""

    port: int
    root: Path
    key_path: Path
    user: str = USER
    password: str = PASSWORD
    host: str = "127.0.0.1"

    def url(self, path: str, *, auth: str = "key", password: str | None = None, scheme: str = "sftp") -> str:
        """``sftp://user@127.0.0.1:PORT/path?...``, logging in with the key (``auth="key"``), with
        ``password`` (default: the right one) in the URL (``"password"``), or with neither (``"none"``:
        the caller passes ``password=``)."""
        # Only the credentials given here: no keys of ~/.ssh or an agent of whoever runs the tests.
        query = "look_for_keys=false&allow_agent=false&timeout=10"
        where = f"{self.host}:{self.port}/{path}"
        if auth == "key":
            return f"{scheme}://{self.user}@{where}?key_filename={self.key_path}&{query}"
        if auth == "password":
            secret = quote(self.password if password is None else password, safe="")
            return f"{scheme}://{self.user}:{secret}@{where}?{query}"
        if auth == "none":
            return f"{scheme}://{self.user}@{where}?{query}"
        raise ValueError(f"auth is 'key', 'password' or 'none', not {auth!r}")

    def new_path(self) -> str:
        """A fresh directory name below the server's root (not created: the datastore makes it)."""
        return f"runs-{uuid.uuid4().hex[:12]}"


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(64)


@pytest.fixture(scope="session")
def sftp_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPService]:
    try:
        import asyncssh
        import paramiko  # noqa: F401  (the client side: fsspec's sftp implementation needs it)
    except ImportError as error:
        pytest.fail(f"cannot start the SFTP server: {error}. {SFTP_HINT}")
    tmp = tmp_path_factory.mktemp("sftp")
    root = tmp / "root"
    root.mkdir()
    host_key = tmp / "host_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(host_key))
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "client_key"
    client_key.write_private_key(str(key_path))
    authorized = tmp / "authorized_keys"
    client_key.write_public_key(str(authorized))
    ready = tmp / "port"
    log_path = tmp / "sftp.log"
    command = [
        sys.executable, __file__, str(root), USER, PASSWORD, str(authorized), str(host_key), str(ready),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-3000:]
                why = (
                    f"exited with code {process.returncode}"
                    if process.poll() is not None
                    else f"did not listen within {START_TIMEOUT:.0f}s"
                )
                pytest.fail(f"the SFTP server (asyncssh) {why}. {SFTP_HINT}\n--- its output ---\n{output}")
            time.sleep(0.05)
        port = int(ready.read_text())
        banner = _banner(port)
        if not banner.startswith(b"SSH-2.0-"):
            pytest.fail(f"the SFTP server on 127.0.0.1:{port} did not greet as SSH ({banner!r}). {SFTP_HINT}")
        yield SFTPService(port=port, root=root, key_path=key_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def sftp_location(sftp_service: SFTPService) -> str:
    """``sftp://laminar@127.0.0.1:PORT/runs-...?key_filename=...``: a fresh directory, key auth."""
    return sftp_service.url(sftp_service.new_path())


def _main(argv: list[str]) -> Any:
    if len(argv) != 6:
        sys.exit(__doc__)
    return serve(*argv)


if __name__ == "__main__":
    _main(sys.argv[1:])
