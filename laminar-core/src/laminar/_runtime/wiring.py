"""A flow object's wiring: where it stores, where it runs, what serializes, and the plugin hooks.

The application builds it (resolving plugins) and hands it down with the flow; the runtime takes
everything it needs from here and fetches nothing itself, as pytest hands ``config.hook`` down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from laminar._serialization.registry import ProtocolRegistry, protocols_for
from laminar._storage.store import ExecutionStore
from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from laminar._runtime.executor import Executor
    from laminar._runtime.scheduler import Scheduler
    from laminar._transport.datastore import Datastore


@dataclass
class FlowConfiguration:
    """Where a flow stores (``datastore``), runs (``executor``) and decides what runs (``scheduler``).

    ``protocols`` are the serialization protocols plugins register (cloudpickle among them, for
    ``object``); a user's ``@datastore.protocol`` registrations come first. ``plugins`` is the flow's
    own plugin manager (two flows never share one) and ``hook`` its hook relay, on which the
    scheduler announces lifecycle events; neither travels to worker processes (the application
    attaches the worker's own there).
    """

    datastore: Datastore
    executor: Executor
    scheduler: Scheduler
    protocols: ProtocolRegistry = field(default_factory=ProtocolRegistry)
    plugins: pluggy.PluginManager | None = field(default=None, repr=False, compare=False)
    hook: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_compatible(self)
        if self.hook is None and self.plugins is not None:
            self.hook = self.plugins.hook

    def store(self, flow: str, execution: str, *, datastore: Datastore | None = None) -> ExecutionStore:
        """The store of one execution (in ``datastore``, the flow's own by default).

        The one place an ``ExecutionStore`` is built: it pairs the datastore's own protocol
        registry with the plugins'.
        """
        where = datastore if datastore is not None else self.datastore
        return ExecutionStore(where, flow, execution, protocols_for(where.protocols, self.protocols))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "plugins": None, "hook": None}


def check_compatible(configuration: FlowConfiguration) -> None:
    """The datastore must be reachable from where the executor runs layers."""
    datastore, executor = configuration.datastore, configuration.executor
    if not datastore.shared and not executor.in_process:
        raise ConfigurationError(
            f"the {type(datastore).__name__} datastore lives in the scheduler's process, so only an executor "
            f"that runs layers in that process can use it, and {type(executor).__name__} does not; use "
            "executors.Thread(), or a Local or cloud datastore"
        )
