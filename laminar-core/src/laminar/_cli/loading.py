"""Loading ``FILE`` or ``FILE:FlowName``: import a flow file without running it, and pick its flow.

The file is imported under a module name of its own, so ``if __name__ == "__main__": ...`` and the
execution guard ``if flow := MyFlow(): flow()`` stay false, and nothing runs. A file that runs its
flow without the guard is stopped at that call (``laminar._app.reading``): reading goes on with what
the file defined up to there, and ``laminar run`` says the guard is missing. The module is marked
for pickling by value, so the process and Dask executors' workers receive its classes whole
without having to import the file themselves (as for a script run with ``python file.py``).
"""

from __future__ import annotations

import builtins
import difflib
import hashlib
import importlib.util
import linecache
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click
import cloudpickle

from laminar import Flow
from laminar._app import reading
from laminar._cli.output import one_line

#: Names a flow file's module gets: a prefix no real package uses, and a digest of its path.
MODULE_PREFIX = "_laminar_cli_flow_"


#: Files whose import ran a flow without the guard, by module name: which flow, and where
#: (``on line 12 (`flow()`)``).
_RUN_AT_IMPORT: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class Loaded:
    """A flow file's chosen flow: its class, and the instance the file built, if it built one.

    ``run_at_import`` says which flow the file ran at import, outside the execution guard, and where
    (the import stopped there); None for a guarded file.
    """

    path: Path
    kind: type[Flow]
    instance: Flow | None
    run_at_import: tuple[str, str] | None = None


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
        with reading.reading(resolved):
            spec.loader.exec_module(module)
    except reading.RunAtImport as stopped:
        _RUN_AT_IMPORT[name] = (stopped.flow, _where(stopped, resolved))
    except Exception as error:
        del sys.modules[name]
        context = click.get_current_context(silent=True)
        if context is not None and context.meta.get("laminar.debug"):
            raise
        raise click.ClickException(_import_failure(path, resolved, error)) from None
    except BaseException:
        del sys.modules[name]
        raise
    cloudpickle.register_pickle_by_value(module)
    return module


def _user_frame(error: BaseException, file: Path) -> traceback.FrameSummary | None:
    """The innermost frame of ``error``'s traceback that is in ``file``."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename) == file]
    return frames[-1] if frames else None


def _where(stopped: BaseException, file: Path) -> str:
    frame = _user_frame(stopped, file)
    if frame is None or frame.lineno is None:
        return "at import"
    text = (frame.line or linecache.getline(str(file), frame.lineno)).strip()
    return f"on line {frame.lineno} (`{text}`)" if text else f"on line {frame.lineno}"


def _suggestion(error: Exception) -> str:
    """Python's ``Did you mean: 'delay'?`` for a ``NameError``, which before 3.12 only its own
    traceback printer adds: the closest name the failing frame could see, if one is close."""
    name = getattr(error, "name", None)
    if not isinstance(error, NameError) or not isinstance(name, str):
        return ""
    tb = error.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    visible = {*frame.f_locals, *frame.f_globals, *dir(builtins)}
    close = difflib.get_close_matches(name, sorted(visible), n=1)
    return f". Did you mean: {close[0]!r}?" if close else ""


def _import_failure(path: Path, file: Path, error: Exception) -> str:
    """One line: where in the user's file importing it failed, and Python's own message, with its
    hints (``Did you mean: 'delay'?``)."""
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename) == file:
        return f"{path} line {error.lineno}: {type(error).__name__}: {error.msg}"
    # Python's last line of the traceback, which carries its suggestions ("Did you mean").
    message = one_line(list(traceback.TracebackException.from_exception(error).format_exception_only())[-1])
    if "Did you mean" not in message:  # Python 3.12 adds it itself
        message += _suggestion(error)
    frame = _user_frame(error, file)
    where = f"{path} line {frame.lineno}" if frame is not None else str(path)
    return f"importing {where} failed: {message}"


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
    run_at_import = _RUN_AT_IMPORT.get(module.__name__)
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
    return Loaded(path, kind, built[0] if built else None, run_at_import)


def guard_missing(loaded: Loaded) -> str:
    """The one-line error for running a file that runs its flow when imported."""
    assert loaded.run_at_import is not None
    name, where = loaded.run_at_import
    return (
        f"{loaded.path} runs flow {name} when imported, {where}, outside the execution "
        f"guard, so `laminar run` would run it with the file's own parameters; put the call under the "
        f"guard, `if flow := {name}(): flow(...)`, or run the file with `python {loaded.path}`"
    )


def build(loaded: Loaded, *, datastore: str | None = None, executor: str | None = None) -> Flow:
    """The flow to use: the file's own instance, or a new one with its defaults; options override.

    A new instance resolves what is not given as ``Flow.__init__`` does: ``LAMINAR_DATASTORE`` /
    ``LAMINAR_EXECUTOR``, else the nearest ``.laminar`` to the working directory, else to the file's
    folder, and the process executor.
    """
    instance = loaded.instance
    if instance is not None and datastore is None and executor is None:
        return instance
    if instance is not None:
        flow = loaded.kind(
            datastore=datastore if datastore is not None else instance.configuration.datastore,
            executor=executor if executor is not None else instance.configuration.executor,
        )
        if datastore is None:
            flow._default_datastore = instance._default_datastore
        return flow
    with reading.reading(loaded.path):
        return loaded.kind(datastore=datastore, executor=executor)
