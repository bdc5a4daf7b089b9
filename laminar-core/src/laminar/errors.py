"""Every error Laminar raises on purpose derives from :class:`LaminarError`.

Messages say what is wrong and what to do about it; the classes let callers tell the cases apart.
Each also derives from the earlier laminar's class for its kind (:mod:`laminar.exceptions`), so
``except FlowError`` keeps working, and from the builtin it resembles (``TypeError``, ...).
"""

from __future__ import annotations

from laminar.exceptions import ExecutionError, FlowError, LayerError, SchedulerError


class LaminarError(Exception):
    """Base class of Laminar's own errors."""


class FlowDefinitionError(LaminarError, FlowError, TypeError):
    """A flow or layer definition is invalid (cycle, unknown dependency, duplicate name, bad annotation)."""


class ConfigurationError(LaminarError, FlowError, ValueError):
    """A configuration value is invalid (bad Retry, Catch, ForEach, datastore/executor combination)."""


class InvalidName(LaminarError, FlowError, ValueError):
    """A name that would become a storage path is unsafe (``../x``, ``/abs``, NUL, empty)."""


class PluginNotFound(LaminarError, FlowError, LookupError):
    """No installed plugin provides the requested datastore scheme or executor name."""


class DatastoreError(LaminarError, ExecutionError, OSError):
    """A storage operation failed for good; the message names the URL and the cause."""


class SerializationError(LaminarError, LayerError, TypeError):
    """An artifact value could not be serialized; the message names the layer and attribute."""


class ExecutorContractError(LaminarError, SchedulerError, TypeError):
    """An executor broke its contract (say, returned no ``SplitOutcome``): a bug to fix, not to retry."""


class WorkerLost(LaminarError, LayerError, RuntimeError):
    """The process running a layer split died before reporting a result. Retried like any failure."""


def add_note(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error`` (PEP 678), also on Python 3.10 where ``add_note`` is missing."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = list(getattr(error, "__notes__", []))
        notes.append(note)
        error.__notes__ = notes  # type: ignore[attr-defined]
