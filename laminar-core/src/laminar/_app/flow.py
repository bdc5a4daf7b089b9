"""``Flow``: the class users subclass. The model's definition plus the wiring that runs it.

``MyFlow(datastore=..., executor=...)`` resolves plugins into the flow's configuration, which the
runtime is handed; ``flow(...)`` runs an execution; ``if flow := MyFlow():`` is the execution guard.
The plugins and the runtime are imported when a flow object is made, not with ``import laminar``:
a script that only declares flows, or reads nothing, does not pay for them.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from laminar._app import reading
from laminar._app.execution import Execution
from laminar._ids import new_execution_id
from laminar._model.flow import FlowDefinition, is_framework_base
from laminar._plugins import discovery
from laminar.errors import FlowDefinitionError

if TYPE_CHECKING:
    from laminar._runtime.executor import Executor
    from laminar._runtime.scheduler import Scheduler
    from laminar._runtime.wiring import FlowConfiguration
    from laminar._transport.datastore import Datastore


class Flow(FlowDefinition):
    """A workflow. ``class MyFlow(Flow): ...``, then ``@MyFlow.register`` its layers.

    ``MyFlow(datastore=..., executor=...)`` takes objects or URLs/names; without them the
    ``LAMINAR_DATASTORE`` / ``LAMINAR_EXECUTOR`` environment variables, else the nearest ``.laminar``
    directory to the working directory (or its parents) and the local process executor.
    """

    _framework_base: ClassVar[bool] = True
    #: How the default datastore was found, for messages that say where; None when one was chosen.
    _default_datastore: discovery.Found | None = None
    #: Whether runs reuse unchanged layers by default (``class MyFlow(Flow): reuse = True``);
    #: ``flow(..., reuse=...)`` and ``laminar run --reuse`` decide for one run.
    reuse: ClassVar[bool] = False

    def __init__(
        self,
        *,
        datastore: Datastore | str | None = None,
        executor: Executor | str | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        from laminar._plugins.calls import QuickRelay
        from laminar._plugins.manager import (
            configured_manager,
            protocols_of,
            resolve_datastore,
            resolve_executor,
        )
        from laminar._runtime.scheduler import Scheduler
        from laminar._runtime.wiring import FlowConfiguration

        if is_framework_base(type(self)):
            raise FlowDefinitionError("declare a flow by subclassing: class MyFlow(Flow): ...")
        if datastore is None:
            datastore = os.environ.get("LAMINAR_DATASTORE") or None
        if datastore is None:
            self._default_datastore = discovery.nearest(reading.search_folders())
        plugins = configured_manager()  # this flow's own: what registers on it, only it sees
        self.configuration = FlowConfiguration(
            datastore=resolve_datastore(
                datastore if self._default_datastore is None else self._default_datastore.url, plugins
            ),
            executor=resolve_executor(
                executor if executor is not None else os.environ.get("LAMINAR_EXECUTOR"), plugins
            ),
            scheduler=scheduler or Scheduler(),
            protocols=protocols_of(plugins),
            plugins=plugins,
            hook=QuickRelay(plugins),
        )

    def execution(self, id: str) -> Execution:
        """The execution ``id`` of this flow, bound to the flow's datastore, ready to read results."""
        return Execution(flow=self, id=id)

    def __call__(
        self, *, execution: str | None = None, reuse: bool | None = None, **parameters: Any
    ) -> Execution:
        """Run the flow with these parameters and return the finished Execution."""
        from laminar._runtime import environment

        if environment.runs_a_split():
            raise FlowDefinitionError(
                f"{self.name}() was called in a process that runs layer splits (a worker importing the flow's "
                f"module), which would start a new execution in every worker; call it only under the "
                f"execution guard, at the bottom of the script: `if flow := {self.name}(): flow()`"
            )
        run = self.execution(execution if execution is not None else new_execution_id())
        return run.run(parameters=parameters, reuse=reuse)

    def __bool__(self) -> bool:
        """The execution guard: ``if flow := MyFlow(): flow()``.

        In a process an executor started to run one layer (``LAMINAR_*`` variables set) it runs that
        layer and is false. Otherwise it is true only in the script being run, so importing the
        script (to read results, or in a worker process) never starts a run.
        """
        from laminar._runtime import environment
        from laminar._runtime.split import run_and_record_split

        task = environment.task_from_environment(self)
        if task is not None:
            run_and_record_split(task)
            return False
        if environment.in_worker():
            return False
        caller = sys._getframe(1).f_globals.get("__name__")
        return caller == "__main__"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_flow, (type(self), self.configuration))


def _rebuild_flow(kind: type[Flow], configuration: FlowConfiguration) -> Flow:
    """A flow unpickled in a worker: its plugin manager does not travel, so the worker's is attached."""
    from laminar._plugins.calls import QuickRelay
    from laminar._plugins.manager import configured_manager

    flow = kind.__new__(kind)
    configuration.plugins = configured_manager()
    configuration.hook = QuickRelay(configuration.plugins)
    flow.configuration = configuration
    return flow
