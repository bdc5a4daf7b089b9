"""The ``laminar`` plugin of laminar-ui: it adds ``laminar ui`` (cheap to import: the web stack is
imported when the command runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from laminar.plugins import hookimpl


@hookimpl
def laminar_cli_commands() -> Sequence[Any]:
    from laminar_ui.command import ui

    return [ui]
