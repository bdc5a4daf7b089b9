"""``laminar run`` and ``laminar resume``."""

from __future__ import annotations

import enum
import json
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from laminar import Execution, Flow
from laminar._cli import loading, records
from laminar._cli.common import datastore_option, file_argument, find_execution, open_flow
from laminar._cli.output import duration_text, one_line
from laminar._ids import new_execution_id
from laminar._model.parameters import type_text
from laminar._plugins import progress
from laminar.errors import ConfigurationError, Interrupted

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from laminar._model.parameters import Field


#: A value whose text starts so is meant as JSON: one that does not parse is an error, not text.
JSON_STARTS = ("[", "{", '"')


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("n=3", "name=ada")`` -> ``{"n": 3, "name": "ada"}``: JSON values, else the text as a string.

    Text that starts as JSON does (``[``, ``{``, ``"``) must parse: ``--param 'rates=[0.1,'`` is an
    error, not the string ``[0.1,``.
    """
    found: dict[str, Any] = {}
    for name, text in _pairs(pairs).items():
        try:
            found[name] = json.loads(text)
        except ValueError as error:
            if text.lstrip().startswith(JSON_STARTS):
                raise click.BadParameter(
                    f"parameter {name!r}: {text!r} starts as JSON but does not parse ({error}); fix it, or give "
                    "text that starts so as a JSON string ('\"[...\"')",
                    param_hint="'--param'",
                ) from None
            found[name] = text
    return found


def _pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("n=3",)`` -> ``{"n": "3"}``: each NAME=VALUE, checked."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        name = name.strip()
        if not separator or not name.isidentifier():
            raise click.BadParameter(
                f"{pair!r} is not NAME=VALUE (say --param n=3 or --param name=ada); NAME must be a Python "
                "identifier",
                param_hint="'--param'",
            )
        if name in found:
            raise click.BadParameter(f"parameter {name!r} is given twice", param_hint="'--param'")
        found[name] = text
    return found


def read_parameters_file(path: str) -> dict[str, Any]:
    """The parameters in a JSON, TOML or YAML file (by its suffix): one mapping of names to values."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".json", ".toml", ".yaml", ".yml"):
        raise click.BadParameter(
            f"{path} is not a .json, .toml, .yaml or .yml file; give the parameters in one of those",
            param_hint="'--params'",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise click.BadParameter(
            f"cannot read {path}: {error.strerror or error}", param_hint="'--params'"
        ) from None
    try:
        if suffix == ".json":
            found = json.loads(text)
        elif suffix == ".toml":
            found = tomllib.loads(text)
        else:
            import yaml  # type: ignore[import-untyped]

            found = yaml.safe_load(text)
    except Exception as error:
        raise click.BadParameter(
            f"{path} is not valid {suffix[1:].upper()}: {one_line(str(error))}", param_hint="'--params'"
        ) from None
    if not isinstance(found, dict) or not all(isinstance(name, str) for name in found):
        raise click.BadParameter(
            f"{path} holds a {type(found).__name__}, not a mapping of parameter names to values",
            param_hint="'--params'",
        )
    return found


#: The options of ``laminar run`` that take a value: how ``FILE`` is found before they are parsed.
_FLAGS = ("--help", "-h")


def _file_in(args: list[str]) -> str | None:
    """The ``FILE`` among ``laminar run``'s arguments: the first that is not an option or its value."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            continue
        elif arg.startswith("-"):
            skip = arg not in _FLAGS and "=" not in arg
        else:
            return arg
    return None


def _metavar(field: Field) -> str:
    """``FLOAT``, ``[west|east]``, ``JSON``: what the option takes (an optional value: its type's)."""
    annotation = field.annotation
    inner = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    if len(inner) == 1 and type(None) in typing.get_args(annotation):
        annotation = inner[0]
    choices = _choices(annotation)
    if choices is not None:
        return "[" + "|".join(choices) + "]"
    if field.compound:
        return "JSON"
    return "TEXT" if annotation is str else type_text(annotation).upper()


def _choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(choice) for choice in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return None


def _option(field: Field) -> click.Option:
    """The option of one declared parameter, ``--lr FLOAT``; its text is read by its type later."""
    given = "required" if field.required else f"default {field.default_text}"
    return click.Option(
        [f"--{field.name.replace('_', '-')}", OPTION_PREFIX + field.name],
        metavar=_metavar(field),
        default=None,
        help=f"{field.type_text}, {given}" + (f": {field.help}" if field.help else ""),
    )


#: Declared parameters' options are named so in the command's keywords, apart from its own.
OPTION_PREFIX = "parameter__"


class RunCommand(click.Command):
    """``laminar run``: the flow's declared parameters are options of their own, read from ``FILE``
    before the arguments are parsed, so ``laminar run FILE --help`` lists them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        file = _file_in(args)
        options: list[click.Option] = []
        if file is not None:
            declared = loading.load(file).kind.declared_parameters()
            if declared is not None:
                options = [_option(field) for field in declared.fields.values()]
        ctx.meta["laminar.parameter_options"] = options
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        *own, last = super().get_params(ctx)
        return [*own, *ctx.meta.get("laminar.parameter_options", ()), last]  # --help stays last


def _given(
    flow: Flow, params_file: str | None, pairs: tuple[str, ...], options: dict[str, str | None]
) -> dict[str, Any]:
    """Every parameter given: from the file, then ``--param``, then the declared options, each
    later one over an earlier; text read by the declared type where the flow declares one."""
    found = read_parameters_file(params_file) if params_file is not None else {}
    declared = flow.declared_parameters()
    if declared is None:
        return {**found, **parse_parameters(pairs)}
    texts = {**_pairs(pairs), **{k[len(OPTION_PREFIX) :]: v for k, v in options.items() if v is not None}}
    for name, text in texts.items():
        try:
            found[name] = declared.parse_text(name, text, flow=flow.name) if name in declared.fields else text
        except ConfigurationError as error:
            raise click.BadParameter(str(error), param_hint=f"'--{name.replace('_', '-')}'") from None
    return found


def _report(execution: Execution, verb: str, file: str) -> None:
    status = records.status_of(execution)
    click.echo(
        f"execution {execution.id} of flow {execution.flow.name} {status} in {duration_text(status.duration)}"
    )
    click.echo(f"see it with: laminar show {file} {execution.id}")


def _interrupted(execution: Execution, error: Interrupted, file: str) -> Interrupted:
    """The scheduler's message, with the command that resumes the execution instead of the Python call."""
    stopped, said, _ = str(error).partition(" Resume it with ")
    stopped = stopped if said else f"execution {execution.id} of flow {execution.flow.name} was stopped."
    return Interrupted(f"{stopped} Resume it with `laminar resume {file} {execution.id}`")


def _failed(execution: Execution, error: Exception, file: str) -> click.ClickException:
    what = f"{type(error).__name__}: {one_line(str(error))}"
    try:
        ran = execution.status == "failed"
    except Exception:
        ran = False  # it never started (bad parameters, say): there is nothing to show or resume
    if not ran:
        return click.ClickException(
            f"execution {execution.id} of flow {execution.flow.name} did not run: {what}"
        )
    if _progress_showed_errors(execution):  # its message is on a progress line above: not again
        what = f"{type(error).__name__} (its message is above)"
    return click.ClickException(
        f"execution {execution.id} of flow {execution.flow.name} failed: {what} (see `laminar show {file} "
        f"{execution.id}`; resume it with `laminar resume {file} {execution.id}`)"
    )


def _progress_showed_errors(execution: Execution) -> bool:
    """Whether the progress display ran for ``execution``: it shows the error that failed the run,
    once, on the line of the split that raised it or on the run's last line."""
    plugins = execution.flow.configuration.plugins
    return progress.enabled() and plugins is not None and plugins.has_plugin("laminar.progress")


@click.command(cls=RunCommand)
@file_argument
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter (a JSON value, or text)."
)
@click.option(
    "--params",
    "params_file",
    metavar="FILE",
    default=None,
    help="Parameters from a JSON, TOML or YAML file (one mapping); --param and options override it.",
)
@datastore_option
@click.option(
    "--executor",
    metavar="NAME",
    default=None,
    help="Executor name or URL (thread, process, dask://host:8786).",
)
@click.option("--execution", "execution_id", metavar="ID", default=None, help="Run with this execution id.")
@click.option("--reuse/--no-reuse", default=None, help="Reuse layers unchanged since an earlier execution.")
@click.option("--force", multiple=True, metavar="LAYER", help="With --reuse: run LAYER and its dependents.")
@click.pass_context
def run(
    ctx: click.Context,
    /,
    file: str,
    params: tuple[str, ...],
    params_file: str | None,
    datastore: str | None,
    executor: str | None,
    execution_id: str | None,
    reuse: bool | None = None,
    force: tuple[str, ...] = (),
    **declared: str | None,
) -> None:
    """Run the flow in FILE with the given parameters.

    A flow that declares its parameters takes each as an option of its own (`laminar run FILE
    --help` lists them); one that does not takes --param NAME=VALUE.
    """
    loaded = loading.load(file)
    if loaded.run_at_import is not None:
        raise click.ClickException(loading.guard_missing(loaded))
    flow = loading.build(loaded, datastore=datastore, executor=executor)
    parameters = _given(flow, params_file, params, declared)
    execution = flow.execution(execution_id if execution_id is not None else new_execution_id())
    try:
        if reuse is None and not force:
            flow(execution=execution.id, **parameters)
        else:
            execution.run(parameters=parameters, reuse=reuse if reuse is not None else True, force=force)
    except Interrupted as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _interrupted(execution, error, file) from None
    except Exception as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _failed(execution, error, file) from None
    _report(execution, "ran", file)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@file_argument
@click.argument("execution_id", metavar="EXECUTION")
@datastore_option
@click.option("--executor", metavar="NAME", default=None, help="Executor name or URL.")
@click.option("--param", "params", multiple=True, hidden=True)
@click.option("--params", "params_file", default=None, hidden=True)
@click.pass_context
def resume(
    ctx: click.Context,
    /,
    file: str,
    execution_id: str,
    datastore: str | None,
    executor: str | None,
    params: tuple[str, ...],
    params_file: str | None,
) -> None:
    """Run EXECUTION again, skipping the layers and splits that already finished, with the parameters
    it was started with."""
    given = [
        *(f"--param {pair}" for pair in params),
        *([f"--params {params_file}"] if params_file else []),
        *ctx.args,
    ]
    if given:
        raise click.UsageError(
            f"execution {execution_id} resumes with the parameters it was started with, and takes no "
            f"{' '.join(given)}; to change them, run a new execution: `laminar run {file} ...`"
        )
    flow = open_flow(file, datastore=datastore, executor=executor)
    execution = find_execution(flow, execution_id)
    try:
        execution.resume()
    except Interrupted as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _interrupted(execution, error, file) from None
    except Exception as error:
        if ctx.meta.get("laminar.debug"):
            raise
        raise _failed(execution, error, file) from None
    _report(execution, "resumed", file)
