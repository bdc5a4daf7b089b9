"""Flow: a collection of layers run as a DAG. Declare one by subclassing, add layers with ``register``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from laminar.configurations import hooks as hook_kinds
from laminar.configurations.layers import Catch, Configuration, Container, ForEach, Retry
from laminar.errors import ConfigurationError, FlowDefinitionError
from laminar._model import dag
from laminar._model.layer import RESERVED, Layer, Parameters
from laminar._names import validate

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._runtime.executor import Executor
    from laminar._runtime.scheduler import Scheduler
    from laminar._transport.datastore import Datastore

L = TypeVar("L", bound=type[Layer])


@dataclass
class LayerDefinition:
    """A layer as registered to one flow: its class and its configuration there."""

    layer: type[Layer]
    configuration: Configuration = field(default_factory=Configuration)


@dataclass(frozen=True)
class Hook:
    function: Callable[..., Any]
    signature: dag.Signature


@dataclass(frozen=True)
class Plan:
    """A flow's validated shape: order, dependencies, call signatures and hooks of every layer."""

    order: tuple[str, ...]
    dependencies: dict[str, frozenset[str]]
    calls: dict[str, dag.Signature]
    hooks: dict[tuple[str, str], tuple[Hook, ...]]  # (layer, kind) -> hooks, flow hooks first


@dataclass
class FlowConfiguration:
    """Where a flow stores (``datastore``), runs (``executor``) and decides what runs (``scheduler``)."""

    datastore: Datastore
    executor: Executor
    scheduler: Scheduler


class Flow:
    """A workflow. ``class MyFlow(Flow): ...``, then ``@MyFlow.register`` its layers.

    ``MyFlow(datastore=..., executor=...)`` takes objects or URLs/names; without them the
    ``LAMINAR_DATASTORE`` / ``LAMINAR_EXECUTOR`` environment variables, else a local ``.laminar``
    directory and the local process executor.
    """

    registry: ClassVar[dict[str, LayerDefinition]] = {"Parameters": LayerDefinition(Parameters)}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        validate(cls.__name__, what="flow name")
        merged: dict[str, LayerDefinition] = {}
        origin: dict[str, str] = {}
        for base in cls.__bases__:
            if not (isinstance(base, type) and issubclass(base, Flow)):
                continue
            for name, definition in base.registry.items():
                if name in merged and merged[name] != definition:
                    if merged[name].layer is definition.layer:
                        raise FlowDefinitionError(
                            f"{cls.__name__} merges layer {name} registered with different configurations in "
                            f"{origin[name]} ({merged[name].configuration}) and {base.__name__} "
                            f"({definition.configuration}); register it the same way in both"
                        )
                    raise FlowDefinitionError(
                        f"{cls.__name__} merges two layers named {name!r}: {_where(merged[name].layer)} from "
                        f"{origin[name]} and {_where(definition.layer)} from {base.__name__}; rename one"
                    )
                merged.setdefault(name, definition)
                origin.setdefault(name, base.__name__)
        cls.registry = merged

    # ---- registration --------------------------------------------------------------------------
    @overload
    @classmethod
    def register(cls, layer: L) -> L: ...

    @overload
    @classmethod
    def register(
        cls,
        layer: None = None,
        *,
        catch: Catch | None = None,
        container: Container | None = None,
        foreach: ForEach | None = None,
        retry: Retry | None = None,
    ) -> Callable[[L], L]: ...

    @classmethod
    def register(
        cls,
        layer: L | None = None,
        *,
        catch: Catch | None = None,
        container: Container | None = None,
        foreach: ForEach | None = None,
        retry: Retry | None = None,
    ) -> L | Callable[[L], L]:
        """Add a layer to this flow: ``@MyFlow.register`` or ``@MyFlow.register(retry=Retry(3))``."""
        if cls is Flow:
            raise FlowDefinitionError("register layers on a subclass of Flow: class MyFlow(Flow): ...")
        configuration = Configuration(
            catch=catch, container=container or Container(), foreach=foreach, retry=retry or Retry()
        )

        def add(layer: L) -> L:
            if not (isinstance(layer, type) and issubclass(layer, Layer)):
                raise FlowDefinitionError(f"{cls.__name__}.register takes a Layer subclass, got {layer!r}")
            name = validate(layer.__name__, what="layer name")
            if name in cls.registry:
                raise FlowDefinitionError(
                    f"{cls.__name__} already has a layer named {name!r} ({_where(cls.registry[name].layer)}); "
                    f"cannot also register {_where(layer)}. Rename one of them."
                )
            cls.registry = {**cls.registry, name: LayerDefinition(layer, configuration)}
            return layer

        return add(layer) if layer is not None else add

    # ---- instances -----------------------------------------------------------------------------
    def __init__(
        self,
        *,
        datastore: Datastore | str | None = None,
        executor: Executor | str | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        if type(self) is Flow:
            raise FlowDefinitionError("declare a flow by subclassing: class MyFlow(Flow): ...")
        from laminar._plugins.manager import resolve_datastore, resolve_executor
        from laminar._runtime.scheduler import Scheduler

        store = resolve_datastore(datastore if datastore is not None else os.environ.get("LAMINAR_DATASTORE"))
        runner = resolve_executor(executor if executor is not None else os.environ.get("LAMINAR_EXECUTOR"))
        self.configuration = FlowConfiguration(store, runner, scheduler or Scheduler())
        check_compatible(self.configuration)

    @property
    def name(self) -> str:
        return type(self).__name__

    def layer_names(self) -> list[str]:
        """The flow's layers, each after its dependencies."""
        return list(self.plan.order)

    @cached_property
    def plan(self) -> Plan:
        """Validate the DAG (dependencies, cycles, annotations) and analyse every layer once."""
        return build_plan(type(self))

    def execution(self, id: str) -> Execution:
        """The execution ``id`` of this flow, bound to the flow's datastore, ready to read results."""
        from laminar._model.execution import Execution

        return Execution(flow=self, id=id)

    def __call__(self, *, execution: str | None = None, **parameters: Any) -> Execution:
        """Run the flow with these parameters and return the finished Execution."""
        from laminar._ids import new_execution_id
        from laminar._model.execution import Execution

        reserved = sorted(set(parameters) & RESERVED)
        if reserved:
            raise ConfigurationError(
                f"parameter names {', '.join(map(repr, reserved))} are reserved on layers (layer.{reserved[0]} is "
                "set by Laminar) and could not be read back; choose other names"
            )
        run = Execution(flow=self, id=execution if execution is not None else new_execution_id())
        return run.run(parameters=parameters)

    def __bool__(self) -> bool:
        """The execution guard: ``if flow := MyFlow(): flow()``.

        In a process an executor started to run one layer (``LAMINAR_*`` variables set) it runs that
        layer and is false. Otherwise it is true only in the script being run, so importing the
        script (to read results, or in a worker process) never starts a run.
        """
        from laminar._runtime import environment

        task = environment.task_from_environment(self)
        if task is not None:
            from laminar._runtime.split import run_and_record_split

            run_and_record_split(task)
            return False
        if environment.in_worker():
            return False
        caller = sys._getframe(1).f_globals.get("__name__")
        return caller == "__main__"

    def __repr__(self) -> str:
        return f"{self.name}()"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_flow, (type(self), self.configuration))


def _rebuild_flow(kind: type[Flow], configuration: FlowConfiguration) -> Flow:
    flow = kind.__new__(kind)
    flow.configuration = configuration
    return flow


def _where(layer: type) -> str:
    return f"{layer.__module__}.{layer.__qualname__}"


def check_compatible(configuration: FlowConfiguration) -> None:
    """The datastore must be reachable from where the executor runs layers."""
    datastore, executor = configuration.datastore, configuration.executor
    if not datastore.shared and not executor.in_process:
        raise ConfigurationError(
            f"the {type(datastore).__name__} datastore lives in the scheduler's process, so only an executor "
            f"that runs layers in that process can use it, and {type(executor).__name__} does not; use "
            "executors.Thread(), or a Local or cloud datastore"
        )


def build_plan(flow: type[Flow]) -> Plan:
    """Analyse ``flow``'s layers: dependencies from ``__call__`` and hooks, checked and ordered.

    A hook defined on the flow class applies to every layer except ``Parameters`` (stored, never run)
    and the layers it takes as parameters together with their ancestors: a flow hook taking ``A``
    cannot run before ``A`` exists, so it does not apply to ``A`` itself or to what ``A`` needs.
    """
    registry = flow.registry
    known = {name: definition.layer for name, definition in registry.items()}

    def analyse(function: Callable[..., Any]) -> Hook:
        owner = f"hook {function.__qualname__}"
        return Hook(function, dag.signature(function, owner=owner, known=known, flow=flow.__name__))

    def layers_of(signature: dag.Signature) -> set[str]:
        return {dependency for _, dependency in signature.parameters}

    calls: dict[str, dag.Signature] = {}
    own_hooks: dict[tuple[str, str], tuple[Hook, ...]] = {}
    own: dict[str, frozenset[str]] = {}
    for name, definition in registry.items():
        calls[name] = dag.signature(
            definition.layer.__call__, owner=f"layer {name}", known=known, flow=flow.__name__
        )
        needed = layers_of(calls[name])
        for kind in hook_kinds.KINDS:
            own_hooks[(name, kind)] = tuple(
                analyse(f) for f in hook_kinds.collect(definition.layer, kind, stop=Layer)
            )
            for hook in own_hooks[(name, kind)]:
                needed |= layers_of(hook.signature)
        _check_registered(flow, name, needed)
        own[name] = frozenset(needed)
    dag.topological_order(own, flow=flow.__name__)  # a cycle among the layers themselves
    ancestors = _ancestors(own)

    flow_hooks = {
        kind: tuple(analyse(f) for f in hook_kinds.collect(flow, kind, stop=Flow))
        for kind in hook_kinds.KINDS
    }
    hooks: dict[tuple[str, str], tuple[Hook, ...]] = {}
    dependencies: dict[str, frozenset[str]] = {}
    for name, definition in registry.items():
        needed = set(own[name])
        for kind in hook_kinds.KINDS:
            applying = []
            if definition.layer is not Parameters:
                for hook in flow_hooks[kind]:
                    taken = layers_of(hook.signature)
                    if any(name == layer or name in ancestors[layer] for layer in taken):
                        continue
                    applying.append(hook)
                    needed |= taken
            hooks[(name, kind)] = (*applying, *own_hooks[(name, kind)])
        _check_registered(flow, name, needed)
        if definition.configuration.foreach is not None:
            for parameter in definition.configuration.foreach.parameters:
                if parameter.layer.__name__ not in needed:
                    raise FlowDefinitionError(
                        f"ForEach parameter of layer {name} reads {parameter.layer.__name__}.{parameter.attribute}, "
                        f"but {name} does not depend on {parameter.layer.__name__}; add a parameter annotated with "
                        f"{parameter.layer.__name__} to {name}.__call__"
                    )
        dependencies[name] = frozenset(needed)
    order = dag.topological_order(dependencies, flow=flow.__name__)
    return Plan(tuple(order), dependencies, calls, hooks)


def _check_registered(flow: type[Flow], name: str, needed: set[str]) -> None:
    for dependency in sorted(needed):
        if dependency not in flow.registry:
            raise FlowDefinitionError(
                f"layer {name} depends on layer {dependency}, which is not registered to flow {flow.__name__}; "
                f"register it with @{flow.__name__}.register"
            )


def _ancestors(dependencies: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    """Every layer each layer needs, directly or not."""
    found: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in found:
            found[name] = set()
            for dependency in dependencies.get(name, ()):
                found[name] |= {dependency, *visit(dependency)}
        return found[name]

    for name in dependencies:
        visit(name)
    return found
