"""``laminar ui [DATASTORE]``: serve the web app on 127.0.0.1 and print its URL.

Another interface is refused unless ``--allow-remote`` is given, and then every request needs a
token, printed in the URL: the app shows every value and log the datastore holds.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from pathlib import Path

import click

#: Hosts that are this machine only.
LOCAL = ("127.0.0.1", "localhost", "::1")


def is_local(host: str) -> bool:
    if host in LOCAL:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


@click.command(name="ui")
@click.argument("datastore", metavar="[DATASTORE]", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a --host other than this machine's loopback; every request then needs the printed token.",
)
@click.option(
    "--flow",
    "flow_files",
    multiple=True,
    metavar="FILE",
    help="A flow file (FILE or FILE:FlowName), to read its executions with its own class: their DAGs show "
    "their dependencies even when stored by a Laminar that did not record them. Repeatable.",
)
@click.option(
    "--trust",
    type=click.Choice(["all", "none"]),
    default=None,
    help="none: preview only values stored with safe protocols (JSON, text, bytes, .npy), for a store "
    "you do not trust; default: the datastore's own (LAMINAR_TRUST).",
)
def ui(
    datastore: str | None,
    host: str,
    port: int,
    allow_remote: bool,
    flow_files: tuple[str, ...],
    trust: str | None,
) -> None:
    """Browse every execution in DATASTORE (default: the one a run in this folder would use) on a
    local web page, live: executions, each execution's DAG, timeline, errors, previews and logs,
    and two executions compared."""
    if not is_local(host) and not allow_remote:
        raise click.ClickException(
            f"--host {host} would show this datastore's values and logs to other machines; "
            "add --allow-remote to do so (every request then needs the token printed with the URL)"
        )
    import uvicorn
    from laminar._cli.loading import load
    from laminar._plugins.discovery import nearest
    from laminar._plugins.manager import resolve_datastore

    from laminar_ui.app import create_app
    from laminar_ui.reading import Reader

    url = datastore or nearest((Path.cwd(),)).url
    store = resolve_datastore(url)
    if trust is not None:
        store.trust = trust
    flows = {}
    for file in flow_files:
        kind = load(file).kind
        flows[kind.__name__] = kind(datastore=store)
    token = None if is_local(host) else secrets.token_urlsafe(24)
    reader = Reader(store, flows)
    threading.Thread(target=reader.warm, name="laminar-ui-warm", daemon=True).start()
    app = create_app(reader, token=token)
    # The socket is bound here, so the URL printed has the port the system chose for --port 0.
    listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    click.echo(f"laminar ui: {store.url}")
    click.echo(url_of(host, listening.getsockname()[1], token))
    uvicorn.Server(config).run(sockets=[listening])
