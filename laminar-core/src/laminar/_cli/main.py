"""``laminar``: run flows and read what they stored, from a terminal.

Errors are one line on stderr and a non-zero exit status; ``laminar --debug ...`` shows the
traceback instead.
"""

from __future__ import annotations

from typing import Any

import click

from laminar._cli import diff, explain, gc, graph, inspect, plugins, report, runs, verify
from laminar._cli.output import one_line
from laminar._plugins.manager import plugin_manager

DEBUG_VARIABLE = "LAMINAR_DEBUG"


class LaminarGroup(click.Group):
    """A group that turns any error into one line on stderr, unless ``--debug`` is given."""

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


@click.group(cls=LaminarGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (
    runs.run,
    runs.resume,
    inspect.executions,
    inspect.show,
    explain.explain,
    inspect.artifacts,
    inspect.get,
    inspect.logs,
    graph.graph,
    plugins.plugins,
    report.report,
    diff.diff,
    gc.gc,
    verify.verify,
):
    cli.add_command(command)

# Commands plugins add (``laminar_cli_commands``), after the built-in ones, which keep their names.
for added in plugin_manager().hook.laminar_cli_commands():
    for command in added:
        if isinstance(command, click.Command) and command.name not in cli.commands:
            cli.add_command(command)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="laminar")
