"""``laminar``: run flows and read what they stored, from a terminal.

Errors are one line on stderr and a non-zero exit status; ``laminar --debug ...`` shows the
traceback instead.

A command's module is imported when that command runs, not with the group: ``laminar run`` does not
import the report's templates or the diff's previews, and ``laminar --help`` imports none of them
(:data:`BUILT_IN` has each command's one-line summary). The installed plugins, and the commands they
add (``laminar_cli_commands``), are loaded only for a name no built-in command has, or to list them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from laminar._cli.output import one_line

DEBUG_VARIABLE = "LAMINAR_DEBUG"

#: The built-in commands: name -> (``module:attribute``, the first sentence of its help), which
#: ``laminar --help`` shows without importing the module (tests/test_startup.py keeps them equal).
BUILT_IN: dict[str, tuple[str, str]] = {
    "run": ("laminar._cli.runs:run", "Run the flow in FILE with the given parameters."),
    "resume": (
        "laminar._cli.runs:resume",
        "Run EXECUTION again, skipping the layers and splits that already finished, with the parameters "
        "it was started with.",
    ),
    "executions": (
        "laminar._cli.inspect:executions",
        "List the flow's executions, newest first: id, status, first start, runs, latest run's duration.",
    ),
    "show": (
        "laminar._cli.inspect:show",
        "Show EXECUTION: its status, parameters, and every layer's status, splits, attempts and errors.",
    ),
    "explain": (
        "laminar._cli.explain:explain",
        "Say, for each layer of EXECUTION (or LAYER), whether it was reused and from where, or why it ran.",
    ),
    "artifacts": (
        "laminar._cli.inspect:artifacts",
        "List the artifacts LAYER stored in EXECUTION, with their sizes (nothing is loaded).",
    ),
    "get": (
        "laminar._cli.inspect:get",
        "Print the repr of ARTIFACT of LAYER in EXECUTION, or write its raw value with --output.",
    ),
    "logs": (
        "laminar._cli.inspect:logs",
        "Print what LAYER (every layer, without it) wrote to stdout, stderr and logging in EXECUTION.",
    ),
    "graph": (
        "laminar._cli.graph:graph",
        "Print the DAG of the flow in FILE: each layer and the layers it depends on.",
    ),
    "plugins": (
        "laminar._cli.plugins:plugins",
        "List the installed datastores, executors and serialization protocols, with their distributions.",
    ),
    "report": (
        "laminar._cli.report:report",
        "Write one self-contained HTML page of EXECUTION: DAG, timeline, errors, artifacts, logs.",
    ),
    "diff": (
        "laminar._cli.diff:diff",
        "Show the parameters and artifacts EXECUTION_A and EXECUTION_B hold differently (by content hash; "
        "small values as themselves).",
    ),
    "gc": (
        "laminar._cli.gc:gc",
        "Delete executions in DATASTORE, and the stored values no remaining execution references.",
    ),
    "verify": (
        "laminar._cli.verify:verify",
        "Check every value EXECUTION's records point to against its address; list what is damaged or missing.",
    ),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each built-in one imported when it is first looked up."""

    def __init__(self, where: dict[str, str]) -> None:
        self._where = dict(where)  # name -> "module:attribute", not imported yet
        self._loaded: dict[str, click.Command] = {}

    def loaded(self, name: str) -> bool:
        return name in self._loaded

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
            del self._where[name]
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._where.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if self._where.pop(name, None) is None:
            del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._loaded
        yield from (name for name in list(self._where) if name not in self._loaded)

    def __len__(self) -> int:
        return len(self._loaded) + len(self._where)


class LaminarGroup(click.Group):
    """A group that turns any error into one line on stderr, unless ``--debug`` is given, and
    imports a command's module (or loads the plugins) only when that command is wanted."""

    _with_plugins = False

    def _imported(self, name: str) -> bool:
        return not isinstance(self.commands, LazyCommands) or self.commands.loaded(name)

    def _add_plugin_commands(self) -> None:
        """Commands plugins add (``laminar_cli_commands``), after the built-in ones, which keep their names."""
        if self._with_plugins:
            return
        self._with_plugins = True
        from laminar._plugins.manager import command_plugins

        for added in command_plugins().hook.laminar_cli_commands():
            for command in added:
                if isinstance(command, click.Command) and command.name not in self.commands:
                    self.add_command(command)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._add_plugin_commands()
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's one line; a built-in command's from :data:`BUILT_IN`, without importing it."""
        names = self.list_commands(ctx)
        shown = [name for name in names if not (self._imported(name) and self.commands[name].hidden)]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name in shown)
        rows: list[tuple[str, str]] = []
        for name in shown:
            if not self._imported(name) and name in BUILT_IN:
                rows.append((name, click.Command(name, help=BUILT_IN[name][1]).get_short_help_str(limit)))
            else:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as error:  # laminar's Interrupted says how to resume
            if ctx.meta.get("laminar.debug"):
                raise
            click.echo(f"Error: {one_line(str(error)) or 'interrupted'}", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as error:
            if ctx.meta.get("laminar.debug"):
                raise
            message = one_line(str(error)) or type(error).__name__
            raise click.ClickException(f"{type(error).__name__}: {message}") from None


@click.group(
    cls=LaminarGroup,
    commands=LazyCommands({name: where for name, (where, _) in BUILT_IN.items()}),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_VARIABLE,
    help=f"Show full tracebacks of errors (also {DEBUG_VARIABLE}=1).",
)
@click.version_option(package_name="laminar-core", prog_name="laminar")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run Laminar flows and read what their executions stored.

    FILE is a Python file that defines a flow (class MyFlow(Flow): ...), or FILE:FlowName when
    it defines several. It is imported without running its __main__ part.
    """
    ctx.meta["laminar.debug"] = debug


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="laminar")
