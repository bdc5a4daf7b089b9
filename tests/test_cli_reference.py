"""The built CLI page (docs/cli.md, rendered by mkdocs-click) documents every ``laminar`` command,
argument and option. They are enumerated from the click group itself, so a command or option added
without reaching the page fails here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import click
import pytest
from laminar._cli.main import cli
from test_docs_site import CONFIG, build, built_page

HEADING = re.compile(r"<h([1-6])[^>]*>(.*?)</h\1>", re.DOTALL)


def commands(group: click.Group, prefix: str = "laminar") -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group`` (nested groups too), with its full name, e.g. ``laminar gc``."""
    yield prefix, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")
        elif not command.hidden:
            yield f"{prefix} {name}", command


def documented(command: click.Command) -> list[str]:
    """What the page must show of ``command``: each visible option's spellings, each argument."""
    names: list[str] = []
    for parameter in command.params:
        if isinstance(parameter, click.Option) and not parameter.hidden:
            names += [*parameter.opts, *parameter.secondary_opts]
        elif isinstance(parameter, click.Argument):
            names.append(parameter.human_readable_name)
    return names


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def sections(page: str) -> dict[str, list[str]]:
    """The text under each heading of the page, by the heading's text (a heading may repeat)."""
    found: dict[str, list[str]] = {}
    headings = list(HEADING.finditer(page))
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following is not None else len(page)
        title = text(heading.group(2)).replace("¶", "").strip()
        found.setdefault(title, []).append(text(page[heading.end() : end]))
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    site = tmp_path_factory.mktemp("site")
    result = build(CONFIG, site)
    assert result.returncode == 0, result.stdout + result.stderr
    return sections(built_page(site, "cli.md").read_text())


def test_the_group_has_the_commands_the_page_is_checked_for() -> None:
    """Guards the enumeration: an empty or flattened walk would check nothing."""
    names = {name for name, _ in commands(cli)}
    assert {"laminar", "laminar run", "laminar resume", "laminar gc", "laminar verify"} <= names
    assert "--datastore" in documented(cli.commands["show"])
    assert "EXECUTION" in documented(cli.commands["show"])


@pytest.mark.parametrize(("name", "command"), list(commands(cli)), ids=[name for name, _ in commands(cli)])
def test_the_built_page_documents_every_command_argument_and_option(
    page: dict[str, list[str]], name: str, command: click.Command
) -> None:
    usage = f"{name} [OPTIONS]"
    found = [body for body in page.get(name.rsplit(" ", 1)[-1], []) if usage in body]
    assert found, f"docs/cli.md's built page has no section on `{name}` with its usage line"
    (body,) = found
    assert " ".join(command.get_short_help_str(limit=1000).rstrip(".").split()) in " ".join(body.split())
    missing = [option for option in documented(command) if option not in body]
    assert not missing, f"the built page's `{name}` section does not name {missing}"
