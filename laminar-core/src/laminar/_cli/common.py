"""What every command shares: the ``FILE`` argument, ``--datastore``, and finding an execution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from laminar import Execution, Flow
from laminar._cli import loading

F = TypeVar("F", bound=Callable[..., Any])


def file_argument(function: F) -> F:
    return click.argument("file", metavar="FILE")(function)


def datastore_option(function: F) -> F:
    return click.option(
        "--datastore",
        metavar="URL",
        default=None,
        help="Datastore URL (file:///path, s3://bucket/prefix, ...); default: the flow's own.",
    )(function)


def open_flow(target: str, *, datastore: str | None = None, executor: str | None = None) -> Flow:
    """The flow ``FILE[:FlowName]`` defines, wired to ``datastore`` / ``executor`` when given."""
    return loading.build(loading.load(target), datastore=datastore, executor=executor)


def file_given() -> str:
    """The ``FILE`` the running command was given, as typed, for hints naming the user's file."""
    context = click.get_current_context(silent=True)
    file = context.params.get("file") if context is not None else None
    return str(file) if file else "FILE"


def where(flow: Flow) -> str:
    """The flow's datastore, and how it was found when it is the default: ``file:///a/.laminar (the
    nearest .laminar to /a/b)``."""
    found = flow._default_datastore
    url = flow.configuration.datastore.url
    return f"{url} ({found.describe()}; choose another with --datastore)" if found is not None else url


def find_execution(flow: Flow, execution_id: str) -> Execution:
    """Execution ``execution_id`` of ``flow``; a one-line error if it does not exist in its datastore."""
    execution = flow.execution(execution_id)
    store = execution.store
    if store.metadata() is None:
        raise click.ClickException(
            f"execution {execution_id} of flow {flow.name} does not exist in {where(flow)}; "
            f"list its executions with `laminar executions {file_given()}`"
        )
    return execution


def check_layer(flow: Flow, name: str) -> str:
    if name not in flow.registry:
        raise click.ClickException(
            f"flow {flow.name} has no layer {name!r}; its layers are {', '.join(flow.layer_names())}"
        )
    return name


def is_foreach(flow: Flow, name: str) -> bool:
    """Whether layer ``name`` runs as several splits (has a ForEach)."""
    return name in flow.registry and flow.registry[name].configuration.foreach is not None
