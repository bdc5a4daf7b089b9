"""Loading ``FILE`` or ``FILE:FlowName``: import a flow file without running it, and pick its flow.

The file is imported under a module name of its own, so ``if __name__ == "__main__": ...`` and the
execution guard ``if flow := MyFlow(): flow()`` stay false, and nothing runs. The module is marked
for pickling by value, so the process and Dask executors' workers receive its classes whole
without having to import the file themselves (as for a script run with ``python file.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click
import cloudpickle

from laminar import Flow

#: Names a flow file's module gets: a prefix no real package uses, and a digest of its path.
MODULE_PREFIX = "_laminar_cli_flow_"


@dataclass(frozen=True)
class Loaded:
    """A flow file's chosen flow: its class, and the instance the file built, if it built one."""

    path: Path
    kind: type[Flow]
    instance: Flow | None


def split_target(target: str) -> tuple[Path, str | None]:
    """``path.py:FlowName`` into the path and the name; a plain path has no name."""
    path, separator, name = target.rpartition(":")
    if separator and name and not name.startswith(("/", "\\")) and path:
        return Path(path), name
    return Path(target), None


def import_file(path: Path) -> ModuleType:
    """Import the flow file at ``path`` as a module of its own, without running its ``__main__`` part."""
    if not path.exists():
        raise click.ClickException(
            f"{path} does not exist; give the path of a Python file that defines a flow"
        )
    if not path.is_file():
        raise click.ClickException(
            f"{path} is not a file; give the path of a Python file that defines a flow"
        )
    resolved = path.resolve()
    name = MODULE_PREFIX + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise click.ClickException(f"{path} cannot be imported as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Like `python file.py`: the file's own directory comes first on the path, for its sibling imports.
    directory = str(resolved.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    cloudpickle.register_pickle_by_value(module)
    return module


def _flow_classes(module: ModuleType) -> dict[str, type[Flow]]:
    """The Flow subclasses ``module`` defines (not those it imports), by name, in definition order."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Flow)
        and value.__module__ == module.__name__
        and not value.__dict__.get("_framework_base", False)
    }


def _flow_instances(module: ModuleType) -> dict[str, Flow]:
    return {name: value for name, value in vars(module).items() if isinstance(value, Flow)}


def load(target: str) -> Loaded:
    """The flow ``target`` (``FILE`` or ``FILE:FlowName``) names; ``ClickException`` saying why not."""
    path, wanted = split_target(target)
    module = import_file(path)
    classes = _flow_classes(module)
    instances = _flow_instances(module)
    for instance in instances.values():  # flows imported from elsewhere but built here count too
        classes.setdefault(type(instance).__name__, type(instance))
    if wanted is not None:
        if wanted in classes:
            kind = classes[wanted]
        elif wanted in instances:
            kind = type(instances[wanted])
        else:
            known = ", ".join(classes) or "none"
            raise click.ClickException(
                f"{path} defines no flow named {wanted!r}; the flows it defines: {known}"
            )
    elif not classes:
        raise click.ClickException(
            f"{path} defines no flow: declare one with `class MyFlow(Flow): ...` (from laminar import Flow)"
        )
    elif len(classes) > 1:
        names = ", ".join(classes)
        raise click.ClickException(
            f"{path} defines several flows ({names}); choose one with {path}:FlowName, e.g. "
            f"{path}:{next(iter(classes))}"
        )
    else:
        kind = next(iter(classes.values()))
    built = [instance for instance in instances.values() if type(instance) is kind]
    return Loaded(path, kind, built[0] if built else None)


def build(loaded: Loaded, *, datastore: str | None = None, executor: str | None = None) -> Flow:
    """The flow to use: the file's own instance, or a new one with its defaults; options override.

    A new instance resolves what is not given as ``Flow.__init__`` does: ``LAMINAR_DATASTORE`` /
    ``LAMINAR_EXECUTOR``, else ``.laminar`` in the working directory and the process executor.
    """
    instance = loaded.instance
    if instance is not None and datastore is None and executor is None:
        return instance
    if instance is not None:
        return loaded.kind(
            datastore=datastore if datastore is not None else instance.configuration.datastore,
            executor=executor if executor is not None else instance.configuration.executor,
        )
    return loaded.kind(datastore=datastore, executor=executor)
