"""Plugins: the built-ins register through the same pluggy hooks as any distribution, every hookspec
is implemented by the built-in plugin and called by core, the defaults (cloudpickle, the local
datastore, the process executor) come through the hooks, a plugin's serialization protocols and
lifecycle hooks take effect. (That each ``laminar[...]`` extra installs only the backend it names is
in test_packaging.py.)

Plugins are registered here in-process through the plugin manager (``laminar._plugins.manager``), as
an entry point would register them at start-up; no public API registers a plugin object.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import stored_splits
from helpers import datastore_at
from laminar import Execution, Flow, Layer
from laminar._plugins import hookspecs
from laminar._plugins.manager import datastore_classes, executor_classes, plugin_manager, plugin_protocols
from laminar.configurations import datastores, executors, serde
from laminar.plugins import hookimpl

CORE = Path(__file__).resolve().parents[1] / "laminar-core" / "src" / "laminar"
HOOKSPECS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if name.startswith("laminar_") and inspect.isfunction(value)
)


@pytest.fixture
def plugin() -> Iterator[Any]:
    """Register a plugin object for one test, as an entry point would, and remove it afterwards."""
    registered: list[Any] = []

    def register(obj: Any) -> Any:
        plugin_manager().register(obj)
        registered.append(obj)
        plugin_protocols.cache_clear()
        return obj

    yield register
    for obj in registered:
        plugin_manager().unregister(obj)
    plugin_protocols.cache_clear()


# ---- the built-in plugin and the hookspecs -------------------------------------------------------


def test_builtins_register_through_the_plugin_hooks() -> None:
    assert plugin_manager().get_plugin("laminar.builtin") is not None
    assert (
        datastore_classes()["file"] is datastores.Local and datastore_classes()["memory"] is datastores.Memory
    )
    assert (
        executor_classes()["thread"] is executors.Thread
        and executor_classes()["process"] is executors.Process
    )


def test_every_hookspec_has_a_built_in_implementation() -> None:
    assert (
        sorted(
            [
                "laminar_datastores",
                "laminar_executors",
                "laminar_protocols",
                "laminar_execution_started",
                "laminar_layer_started",
                "laminar_layer_skipped",
                "laminar_split_started",
                "laminar_split_retried",
                "laminar_split_finished",
                "laminar_layer_finished",
                "laminar_split_context",
                "laminar_execution_finished",
                "laminar_cli_commands",
            ]
        )
        == HOOKSPECS
    )
    for name in HOOKSPECS:
        implementations = getattr(plugin_manager().hook, name).get_hookimpls()
        built_in = [i.plugin_name for i in implementations if i.plugin_name.startswith("laminar.")]
        assert built_in, f"{name} has no implementation among the built-in plugins"


def test_every_hookspec_is_called_by_core() -> None:
    sources = "\n".join(
        path.read_text() for path in CORE.rglob("*.py") if path.name not in ("hookspecs.py", "builtin.py")
    )
    for name in HOOKSPECS:
        assert f"hook.{name}(" in sources, f"{name} is a hookspec that core never calls"


def test_the_defaults_come_through_the_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Defaults(Flow): ...

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAMINAR_DATASTORE", raising=False)
    monkeypatch.delenv("LAMINAR_EXECUTOR", raising=False)
    flow = Defaults()
    assert isinstance(flow.configuration.datastore, datastores.Local)
    assert flow.configuration.datastore.root == str((tmp_path / ".laminar").resolve())
    assert type(flow.configuration.executor) is executors.Process
    fallback = flow.configuration.protocols.get(object)
    assert isinstance(fallback, serde.Pickle)  # cloudpickle, registered by the built-in plugin for object


# ---- serialization protocols from plugins --------------------------------------------------------


class Json(serde.Protocol[Any]):
    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class DictAsJson:
    @hookimpl
    def laminar_protocols(self) -> Sequence[tuple[tuple[type, ...], serde.Protocol[Any]]]:
        return [((dict,), Json())]


class EverythingAsJson:
    @hookimpl
    def laminar_protocols(self) -> Sequence[tuple[tuple[type, ...], serde.Protocol[Any]]]:
        return [((object,), Json())]


def stored_protocols(root: Path) -> set[str]:
    """The protocol names recorded with every artifact under ``root``."""
    names: set[str] = set()
    for stored in stored_splits.in_store(root):
        for split in stored.splits().values():
            for archive in split["archives"].values():
                names.update(artifact["protocol"] for artifact in archive["artifacts"])
    return names


class Stores(Flow): ...


@Stores.register
class Values(Layer):
    def __call__(self) -> None:
        self.mapping = {"a": [1, 2]}
        self.items = [1, 2]


@pytest.mark.parametrize(
    ("registered", "expected"),
    [
        (None, {"cloudpickle"}),
        (DictAsJson, {"cloudpickle", f"{__name__}.Json"}),  # dict by the plugin, the list by the fallback
        (EverythingAsJson, {f"{__name__}.Json"}),  # a plugin's fallback wins over the built-in one
    ],
)
def test_plugin_protocols_serialize_values_and_read_back(
    tmp_path: Path, plugin: Any, registered: type | None, expected: set[str]
) -> None:
    if registered is not None:
        plugin(registered())
    execution = Stores(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert stored_protocols(tmp_path) == expected
    layer = execution.layer(Values)
    assert (layer.mapping, layer.items) == ({"a": [1, 2]}, [1, 2])


def test_a_users_protocol_wins_over_the_plugins(tmp_path: Path, plugin: Any) -> None:
    plugin(DictAsJson())
    datastore = datastores.Local(tmp_path)

    @datastore.protocol(dict)
    class Mine(Json): ...

    Stores(datastore=datastore, executor=executors.Thread())()
    assert stored_protocols(tmp_path) == {"cloudpickle", f"{__name__}.{Mine.__qualname__}"}


# ---- lifecycle hooks -----------------------------------------------------------------------------


class Recorder:
    """A third-party plugin on the lifecycle hooks, as a notifier would be."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @hookimpl
    def laminar_execution_started(self, execution: Execution) -> None:
        self.events.append(("started", execution.id))

    @hookimpl
    def laminar_layer_finished(self, layer: Layer, splits: int) -> None:
        self.events.append(("layer", layer.name, splits, layer.mapping))

    @hookimpl
    def laminar_execution_finished(self, execution: Execution, error: BaseException | None) -> None:
        self.events.append(("finished", execution.id, type(error).__name__ if error else None))


class Fails(Flow): ...


@Fails.register
class Broken(Layer):
    def __call__(self) -> None:
        raise KeyError("nope")


def test_lifecycle_hooks_reach_a_plugin_and_the_built_in_log(
    tmp_path: Path, plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = plugin(Recorder())
    caplog.set_level(logging.INFO, logger="laminar")
    execution = Stores(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="ok-1")
    assert recorder.events == [
        ("started", execution.id),
        ("layer", "Values", 1, {"a": [1, 2]}),
        ("finished", execution.id, None),
    ]
    with pytest.raises(KeyError):
        Fails(datastore=datastores.Local(tmp_path), executor=executors.Thread())(execution="bad-1")
    assert recorder.events[-2:] == [("started", "bad-1"), ("finished", "bad-1", "KeyError")]
    messages = [record.getMessage() for record in caplog.records if record.name == "laminar"]
    assert "execution ok-1 of flow Stores started" in messages
    assert "layer Values finished (1 split) in execution ok-1" in messages
    assert "execution ok-1 of flow Stores succeeded" in messages
    assert "execution bad-1 of flow Fails failed: KeyError: 'nope'" in messages


def test_the_hook_relay_is_handed_down_not_fetched(tmp_path: Path, plugin: Any) -> None:
    """The scheduler announces events on the flow's own hook relay: replacing it silences the plugins."""
    recorder = plugin(Recorder())
    flow = Stores(datastore=datastores.Local(tmp_path), executor=executors.Thread())

    class Silent:
        def __getattr__(self, name: str) -> Any:
            return lambda **kwargs: []

    flow.configuration.hook = Silent()
    flow()
    assert recorder.events == []


# ---- URL schemes a plugin registers --------------------------------------------------------------


def test_every_azure_scheme_it_parses_resolves_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from laminar_azure import Azure

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "http://127.0.0.1:1/devstoreaccount1")
    for scheme in ("az", "azure", "abfs", "abfss"):
        datastore = datastore_at(f"{scheme}://container/prefix")
        assert type(datastore) is Azure and (datastore.container, datastore.prefix) == ("container", "prefix")
