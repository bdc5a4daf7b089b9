"""The web app: the executions list, an execution (live), and two executions compared.

Pages are rendered on the server with the templates the static report uses (``laminar._cli``'s
``execution.html`` and previews), autoescaped. An execution page follows its run through a stream
of Server-Sent Events: the server reads the run records every :data:`POLL` seconds and sends the
page's sections again whenever they changed, and the page's one script swaps them in. Reading runs
in threads, so a slow object store blocks no other request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from laminar import Flow
from laminar._cli import report
from laminar._cli.output import duration_text, preview, time_text
from laminar._names import is_valid
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from laminar_ui.reading import STATUSES, Reader, parse_parameter
from laminar_ui.tailing import Appended, Tail

#: Seconds between two reads of a running execution's records.
POLL = 0.5
#: Executions on a page of the list.
PAGE = 50
#: The names a request to a UI bound to the loopback may be addressed to (its Host header).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
#: The cookie a token is kept in once a link with ``?token=`` was opened.
COOKIE = "laminar_ui_token"
#: Scripts only from the app itself, nothing fetched from elsewhere.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'"
)


def environment() -> jinja2.Environment:
    """The UI's templates, then the ones it shares with the report."""
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.PackageLoader("laminar_ui", "templates"),
                jinja2.PackageLoader("laminar._cli", "templates"),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


#: Previews kept by content, so a running execution's values are loaded and drawn once.
PREVIEWS = 2000


class Previewed(OrderedDict[str, Any]):
    """Previews by content (their digests), the least recently used dropped beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        with self.lock:
            self.move_to_end(key)
            return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        with self.lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.limit:
                self.popitem(last=False)


class Token(BaseHTTPMiddleware):
    """Every request needs the token (``?token=`` once, then its cookie), when the app has one."""

    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.token is None:
            # Bound to the loopback: a page of another site whose name a DNS rebinding points at
            # 127.0.0.1 sends its own name as Host; only this machine's loopback names are answered.
            if urlsplit("//" + request.headers.get("host", "")).hostname not in LOOPBACK_NAMES:
                return PlainTextResponse(
                    "this laminar ui answers only requests for 127.0.0.1, localhost or [::1] (the Host "
                    "header names another site); to serve other machines, start it with --host and "
                    "--allow-remote",
                    status_code=403,
                )
            response = await call_next(request)
        else:
            given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
            if not secrets.compare_digest(given, self.token):
                return PlainTextResponse(
                    "this laminar ui needs its token: open the URL `laminar ui` printed, with ?token=...",
                    status_code=403,
                )
            response = await call_next(request)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


@dataclass(frozen=True)
class Compared:
    """One row of a comparison: a name, the two sides, and whether they differ."""

    name: str
    left: Any
    right: Any
    differs: bool


class UI:
    """The app's state: the datastore reader and the templates."""

    def __init__(self, reader: Reader, *, poll: float = POLL) -> None:
        self.reader = reader
        self.poll = poll
        self.templates = environment()
        self.previewed = Previewed(PREVIEWS)

    def render(self, name: str, **values: Any) -> str:
        return self.templates.get_template(name).render(
            datastore=self.reader.datastore.url,
            time=time_text,
            duration=duration_text,
            preview=preview,
            **values,
        )

    # ---- reading (in a thread) ----------------------------------------------------------------------
    def _execution(self, flow: str, execution: str, *, logs: bool) -> report.Report:
        return self._read(flow, execution, logs=logs)[1]

    def _read(self, flow: str, execution: str, *, logs: bool) -> tuple[Flow, report.Report]:
        """The flow ``execution`` is read with, and everything its page shows."""
        if not (is_valid(flow) and is_valid(execution)):
            raise LookupError(f"no execution {execution!r} of flow {flow!r}")
        found, known = self.reader.flow_of(flow, execution)
        run = found.execution(execution)
        if run.store.metadata() is None:
            raise LookupError(
                f"execution {execution} of flow {flow} does not exist in {self.reader.datastore.url}"
            )
        note = (
            ""
            if known
            else f"this execution was stored before runs recorded their dependencies: they are drawn "
            f"when the flow's file is given, laminar ui --flow FILE (flow {flow})"
        )
        return found, report.build_report(found, run, dag_note=note, previewed=self.previewed, logs=logs)

    def _sections(
        self, flow: str, execution: str, tail: Tail, *, with_logs: bool = False
    ) -> tuple[str, str, Appended]:
        """The page's header and body, and the logs' text ``tail`` has not sent yet. The body's log
        blocks are empty (the page keeps the text it was sent, and appends), unless ``with_logs``:
        then they hold that text."""
        found, built = self._read(flow, execution, logs=False)
        built.logs, appended = tail.read(found, built.layer_statuses)
        built.notes.extend(appended.notes)
        if with_logs:
            for block in built.logs:
                block.text = appended.text.get(block.key, "")
        values = report.context(built, live=True)
        header = self.templates.get_template("execution_header.html").render(values)
        body = self.templates.get_template("execution.html").render(values)
        return header, body, appended

    # ---- pages -------------------------------------------------------------------------------------
    async def executions(self, request: Request) -> Response:
        query = request.query_params
        flow = query.get("flow") or None
        status = query.get("status") or None
        try:
            parameter = parse_parameter(query.get("parameter"))
            start = int(query.get("start") or 0)
        except ValueError as error:
            return HTMLResponse(self.render("problem.html", message=str(error)), status_code=400)
        if flow is not None and not is_valid(flow):
            return HTMLResponse(self.render("problem.html", message=f"no flow {flow!r}"), status_code=404)
        if status is not None and status not in STATUSES:
            message = f"status must be one of {', '.join(STATUSES)}, not {status!r}"
            return HTMLResponse(self.render("problem.html", message=message), status_code=400)
        page, flows = await asyncio.to_thread(
            lambda: (
                self.reader.page(
                    flow=flow, status=status, parameter=parameter, start=max(start, 0), size=PAGE
                ),
                self.reader.flow_names(),
            )
        )
        return HTMLResponse(
            self.render(
                "executions.html",
                page=page,
                flows=flows,
                chosen={
                    "flow": flow or "",
                    "status": status or "",
                    "parameter": query.get("parameter") or "",
                },
                statuses=STATUSES,
                colours=report.COLOURS,
            )
        )

    async def execution(self, request: Request) -> Response:
        flow, execution = request.path_params["flow"], request.path_params["execution"]
        try:
            tail = Tail(self.reader.datastore, execution)
            header, body, _ = await asyncio.to_thread(self._sections, flow, execution, tail, with_logs=True)
        except LookupError as error:
            return HTMLResponse(self.render("problem.html", message=str(error)), status_code=404)
        return HTMLResponse(
            self.render("execution_page.html", flow=flow, execution=execution, header=header, body=body)
        )

    async def events(self, request: Request) -> Response:
        """The execution's sections again each time its records change, and the text its logs got
        since the last event, like ``tail -f`` (``event: update``: ``header`` and ``body``, None when
        they did not change; ``logs``: new text by log key; ``fresh``: the keys this stream sends
        the first time, whose text replaces what the page shows). The stream keeps how much of each
        split attempt's log it sent."""
        flow, execution = request.path_params["flow"], request.path_params["execution"]
        tail = Tail(self.reader.datastore, execution)

        async def stream() -> AsyncIterator[str]:
            last: tuple[str, str] | None = None
            while not await request.is_disconnected():
                try:
                    header, body, appended = await asyncio.to_thread(self._sections, flow, execution, tail)
                except LookupError:
                    return
                changed = (header, body) != last
                if changed or appended.text:
                    last = (header, body)
                    update = {
                        "header": header if changed else None,
                        "body": body if changed else None,
                        "logs": appended.text,
                        "fresh": appended.fresh,
                    }
                    yield f"event: update\ndata: {json.dumps(update)}\n\n"
                else:
                    yield ": unchanged\n\n"  # a comment: notices a client that left
                await asyncio.sleep(self.poll)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def compare(self, request: Request) -> Response:
        query = request.query_params
        try:
            (flow_a, id_a), (flow_b, id_b) = (_pair(query.get("a")), _pair(query.get("b")))
            left, right = await asyncio.gather(
                asyncio.to_thread(self._execution, flow_a, id_a, logs=False),  # the page shows no logs
                asyncio.to_thread(self._execution, flow_b, id_b, logs=False),
            )
        except (LookupError, ValueError) as error:
            return HTMLResponse(self.render("problem.html", message=str(error)), status_code=404)
        return HTMLResponse(self.render("compare.html", a=left, b=right, **comparison(left, right)))


def plotly_bundle() -> Path | None:
    """The plotly.js the installed ``plotly`` package ships (``package_data/plotly.min.js``), or None
    when plotly is not installed: a Plotly figure can only have been stored, and loaded, with it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
    return found if found.is_file() else None


async def plotly_js(request: Request) -> Response:
    """plotly.js from the installed plotly package, for the page to draw Plotly figures with no network."""
    found = plotly_bundle()
    if found is None:
        return PlainTextResponse("plotly is not installed where laminar ui runs: pip install plotly", 404)
    return FileResponse(found, media_type="text/javascript")


def _pair(text: str | None) -> tuple[str, str]:
    """``Flow/execution`` from a compare link."""
    flow, separator, execution = (text or "").partition("/")
    if not separator:
        raise ValueError(f"compare takes ?a=Flow/execution&b=Flow/execution, not {text!r}")
    return flow, execution


def comparison(left: report.Report, right: report.Report) -> dict[str, list[Compared]]:
    """Parameters, artifacts and layers of two executions side by side, each marked if it differs."""
    params_a = {name: value for name, value, _ in left.parameters}  # (name, value, type)
    params_b = {name: value for name, value, _ in right.parameters}
    parameters = [
        Compared(name, params_a.get(name), params_b.get(name), params_a.get(name) != params_b.get(name))
        for name in sorted({*params_a, *params_b})
    ]
    arts_a = {(a.layer, a.name): a for a in left.artifacts}
    arts_b = {(a.layer, a.name): a for a in right.artifacts}
    artifacts = [
        Compared(
            f"{layer}.{name}",
            arts_a.get((layer, name)),
            arts_b.get((layer, name)),
            getattr(arts_a.get((layer, name)), "digests", None)
            != getattr(arts_b.get((layer, name)), "digests", None),
        )
        for layer, name in sorted({*arts_a, *arts_b})
    ]
    changed = {key[0] for key, row in zip(sorted({*arts_a, *arts_b}), artifacts, strict=True) if row.differs}
    layers_a = {layer.name: layer for layer in left.layers}
    layers_b = {layer.name: layer for layer in right.layers}
    layers = [
        Compared(
            name,
            layers_a.get(name),
            layers_b.get(name),
            name in changed
            or getattr(layers_a.get(name), "status", None) != getattr(layers_b.get(name), "status", None),
        )
        for name in [*layers_a, *(n for n in layers_b if n not in layers_a)]
    ]
    return {"parameters": parameters, "artifacts": artifacts, "layers": layers}


def create_app(reader: Reader, *, token: str | None = None, poll: float = POLL) -> Starlette:
    """The ASGI app over ``reader``; ``token``: the one every request must carry."""
    ui = UI(reader, poll=poll)
    return Starlette(
        routes=[
            Route("/", ui.executions),
            Route("/flows/{flow}/executions/{execution}", ui.execution),
            Route("/flows/{flow}/executions/{execution}/events", ui.events),
            Route("/compare", ui.compare),
            Route("/static/plotly.min.js", plotly_js),
            Mount("/static", StaticFiles(packages=[("laminar_ui", "static")]), name="static"),
        ],
        middleware=[Middleware(Token, token=token)],
    )
