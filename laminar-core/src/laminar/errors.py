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


class UnstorableValue(SerializationError):
    """A value is, or holds, something that cannot come back when read (an open file, a socket, a lock,
    a generator ...); the message says what it is and what to store instead. Nothing was stored."""


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


class LeaseHeld(LaminarError, ExecutionError):
    """Another live scheduler runs this execution; the message names it (host, pid, since)."""


class LeaseLost(LaminarError, ExecutionError):
    """This scheduler's lease on its execution was taken over (it was thought dead); it stops."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM after flushing finished splits; the message says how
    to resume. A ``KeyboardInterrupt``, so ``except Exception`` does not swallow it."""


class MissingParameters(LaminarError, ExecutionError):
    """An execution to resume has no stored parameters; resuming would run it with others."""


class IntegrityError(DatastoreError):
    """Stored bytes are damaged: an artifact, split batch, layer record or execution metadata fails its
    checksum, or is not what Laminar wrote. The message names what it belongs to and its storage URL
    (also ``url``); nothing was decompressed or unpickled from the damaged bytes."""

    url: str | None = None


class UntrustedArtifact(DatastoreError):
    """An artifact would run code when read (a pickle, or any protocol not marked safe), and the
    datastore is opened untrusted (``trust="none"`` or ``LAMINAR_TRUST=none``); nothing was read."""


class UnknownProtocol(DatastoreError, LookupError):
    """An artifact names a serialization protocol this process has not registered."""


class ExecutionNotFound(LaminarError, ExecutionError, LookupError):
    """An execution asked for by id does not exist in the flow's datastore."""


class MissingArtifact(LaminarError, AttributeError):
    """A layer has no value of the artifact read: the execution or the layer's run does not exist, or
    the layer (some splits of a foreach layer: ``missing``, of ``splits``) finished without assigning
    it. An ``AttributeError``, so ``hasattr(layer, name)`` stays truthful."""

    missing: tuple[int, ...] = ()
    splits: int | None = None


class SplitNotFound(LaminarError, ExecutionError, LookupError):
    """A split index or attempt asked for (of a layer's logs, say) does not exist; says which do."""


class LayerTraceback(Exception):
    """Where a layer raised, in the process that ran it (a worker): chained as the cause of the error
    raised to the caller, so its traceback shows the layer's own frames."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
