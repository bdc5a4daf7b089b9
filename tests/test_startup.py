"""What starting costs: ``import laminar``, a one-layer flow and the ``laminar`` command load only what
they use (issue 29, item 5). Each check runs a fresh interpreter and reads its ``sys.modules``: what a
process imported is what it paid for. The timings themselves are ``benchmarks/startup.py``'s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from laminar import Flow, Layer
from laminar._plugins import manager
from laminar.configurations import datastores, executors
from laminar.plugins import Datastore, hookimpl

#: Imported by a plugin, a command or a datastore, never by ``import laminar`` itself.
NOT_AT_IMPORT = (
    "pydantic",
    "click",
    "rich",
    "pluggy",
    "importlib.metadata",
    "cloudpickle",
    "asyncio",
    "zstandard",
    "blake3",
    "concurrent.futures",
    "laminar._runtime.scheduler",
    "laminar._plugins.manager",
    "laminar._storage.store",
    "laminar._serialization.registry",
)

#: Entry-point plugins' heavy parts a one-layer flow on a local store does not use.
NOT_IN_A_LOCAL_RUN = (
    "rich",
    "fsspec",
    "opentelemetry",
    "distributed",
    "laminar_dask.executor",
    "laminar_fsspec.datastore",
    "laminar_s3.datastore",
    "laminar_gcs.datastore",
    "laminar_azure.datastore",
)


def imported_by(code: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter running ``code`` has imported when it ends."""
    program = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINAR_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_import_laminar_loads_no_plugin_library_or_runtime(tmp_path: Path) -> None:
    modules = imported_by(
        "import laminar\nfrom laminar import Flow, Layer, Parameters, Execution, Help", tmp_path
    )
    assert "laminar._app.flow" in modules  # the check sees what was imported
    assert not {name for name in NOT_AT_IMPORT if name in modules}
    assert not [name for name in modules if name.startswith("laminar_")], "an entry point was loaded"


def test_the_version_is_read_when_asked_for(tmp_path: Path) -> None:
    import importlib.metadata

    import laminar

    assert laminar.__version__ == importlib.metadata.version("laminar-core")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        laminar.nope  # noqa: B018


ONE_LAYER = """
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores

class One(Flow): ...

@One.register
class Only(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.out = parameters.n + 1

flow = One(datastore={datastore}, executor="thread")
assert flow(n=1).layer(Only).out == 2
"""


@pytest.mark.parametrize("datastore", ["object", "url", "default"])
def test_a_one_layer_flow_on_a_local_store_loads_no_unused_plugin_library(
    tmp_path: Path, datastore: str
) -> None:
    given = {
        "object": f"datastores.Local({str(tmp_path / 'store')!r})",
        "url": repr((tmp_path / "store").as_uri()),
        "default": "None",
    }[datastore]
    modules = imported_by(ONE_LAYER.format(datastore=given), tmp_path)
    assert (
        "laminar._runtime.scheduler" in modules and "laminar_fsspec.plugin" in modules
    )  # it ran, plugins loaded
    assert not {name for name in NOT_IN_A_LOCAL_RUN if name in modules}


def test_a_run_loads_opentelemetry_when_the_application_did(tmp_path: Path) -> None:
    modules = imported_by("import opentelemetry.trace\n" + ONE_LAYER.format(datastore="None"), tmp_path)
    assert "opentelemetry.trace" in modules and "laminar_otel" in modules


# ---- which plugin a scheme or an executor name resolves to ---------------------------------------
class _Claimant(datastores.Memory):
    schemes = ("file", "claimed")

    @classmethod
    def from_url(cls, url: str) -> _Claimant:
        return cls()


class _Claims:
    @hookimpl
    def laminar_datastores(self) -> list[type[Datastore]]:
        return [_Claimant]


class _ClaimsFirst:
    @hookimpl(tryfirst=True)
    def laminar_datastores(self) -> list[type[Datastore]]:
        return [_Claimant]


@pytest.mark.parametrize("plugin", [_Claims(), _ClaimsFirst()], ids=["registered later", "tryfirst"])
def test_a_scheme_resolves_to_the_plugin_that_wins_it_in_the_listing(plugin: object, tmp_path: Path) -> None:
    plugins = manager.configured_manager()
    plugins.register(plugin, name="claims")
    classes = manager.datastore_classes(plugins)
    assert classes["file"] is datastores.Local and classes["claimed"] is _Claimant  # the first claim wins
    for scheme, kind in classes.items():
        if scheme in ("file", "claimed", "memory"):
            assert type(manager.resolve_datastore(f"{scheme}://{tmp_path}", plugins)) is kind


def test_every_installed_scheme_and_executor_resolves_to_the_listed_class() -> None:
    plugins = manager.configured_manager()
    for scheme, kind in manager.datastore_classes(plugins).items():
        assert manager._first_claim(plugins.hook.laminar_datastores, "schemes", scheme) is kind, scheme
    for name, executor in manager.executor_classes(plugins).items():
        assert manager._first_claim(plugins.hook.laminar_executors, "names", name) is executor, name
    assert type(manager.resolve_executor("thread", plugins)) is executors.Thread


def test_an_unknown_scheme_still_names_every_installed_one() -> None:
    with pytest.raises(Exception, match=r"no installed plugin provides the datastore scheme 'nope'.*file://"):
        manager.resolve_datastore("nope://x")


def test_a_flow_made_in_this_process_still_runs(tmp_path: Path) -> None:
    class Tiny(Flow): ...

    @Tiny.register
    class Only(Layer):
        def __call__(self) -> None:
            self.out = 1

    flow = Tiny(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    assert flow().layer(Only).out == 1


# ---- the laminar command ------------------------------------------------------------------------
def command_imports(tmp_path: Path, *arguments: str) -> tuple[set[str], str]:
    """What ``laminar *arguments`` imported, and what it printed."""
    program = (
        "import json, sys\nfrom laminar._cli.main import main\n"
        f"sys.argv = ['laminar', *{list(arguments)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAMINAR_")}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    *printed, modules = result.stdout.splitlines()
    return set(json.loads(modules)), "\n".join(printed)


def test_laminar_help_lists_every_command_without_importing_the_built_in_ones(tmp_path: Path) -> None:
    from laminar._cli.main import BUILT_IN

    modules, printed = command_imports(tmp_path, "--help")
    listed = [line.split()[0] for line in printed.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted([*BUILT_IN, "ui"])  # the plugin's command too
    command_modules = {where.partition(":")[0] for where, _ in BUILT_IN.values()}
    assert not (command_modules | {"jinja2", "rich"}) & modules
    # listing the plugins' commands loads the entry points, not the built-in plugins and the runtime
    assert "laminar_ui.plugin" in modules
    assert (
        not {"laminar._plugins.builtin", "laminar._plugins.run_records", "laminar._runtime.scheduler"}
        & modules
    )


def test_a_plugin_asking_for_hookimpl_alone_imports_no_runtime(tmp_path: Path) -> None:
    modules = imported_by("from laminar.plugins import Datastore, hookimpl", tmp_path)
    assert "laminar._transport.datastore" in modules
    assert not {"laminar._runtime.scheduler", "laminar._runtime.split", "laminar._plugins.manager"} & modules
    import laminar.plugins

    assert {name: getattr(laminar.plugins, name) for name in laminar.plugins.__all__}  # every name resolves
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        laminar.plugins.nope  # noqa: B018


def test_commands_come_from_the_installed_plugins_once_this_process_has_them() -> None:
    assert manager.command_plugins() is manager.plugin_manager()  # made by this test session already


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(
        "from laminar import Flow, Layer\n\nclass F(Flow): ...\n\n@F.register\nclass A(Layer): ...\n"
    )
    modules, printed = command_imports(tmp_path, "graph", "flow.py")
    assert "A" in printed and "laminar._cli.graph" in modules
    assert (
        not {"laminar._cli.report", "laminar._cli.diff", "laminar._cli.gc", "jinja2", "laminar_ui.command"}
        & modules
    )


def test_each_built_in_command_is_listed_with_its_own_summary() -> None:
    import click
    from laminar._cli.main import BUILT_IN, cli

    for name, (where, summary) in BUILT_IN.items():
        module, _, attribute = where.partition(":")
        command = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert isinstance(command, click.Command) and command.name == name
        for limit in (30, 60, 1000):
            assert click.Command(name, help=summary).get_short_help_str(limit) == command.get_short_help_str(
                limit
            )
        assert cli.commands[name] is command
