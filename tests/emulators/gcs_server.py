"""Run gcp-storage-emulator in memory on HOST PORT, with a listen backlog deep enough for parallel I/O.

The emulator serves one request at a time on ``http.server.HTTPServer``, whose backlog of 5 pending
connections makes a client with 32 parallel requests see connect time-outs. Pending connections now
wait their turn instead. And in memory, the emulator's snapshot of all metadata, re-serialized to JSON
after every write (so each write costs O(objects)), is never read back: it is not written.
Usage: ``python gcs_server.py 127.0.0.1 PORT``.
"""

from __future__ import annotations

import http.server
import logging
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    http.server.HTTPServer.request_queue_size = 1024
    logging.basicConfig(level=logging.CRITICAL)
    from gcp_storage_emulator.server import create_server
    from gcp_storage_emulator.storage import Storage

    Storage._write_config_to_file = lambda self: None  # type: ignore[method-assign, unused-ignore]

    server = create_server(host, port, in_memory=True)
    server.run()  # until SIGTERM / SIGINT


if __name__ == "__main__":
    main()
