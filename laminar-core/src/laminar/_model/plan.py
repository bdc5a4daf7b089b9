"""A flow's plan: its DAG checked and ordered, with each layer's call signature and layer hooks.

Computed once per flow class from the registry; pure analysis of the classes, nothing runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from laminar._model import dag, layer_hooks
from laminar._model.layer import Layer, Parameters
from laminar.errors import FlowDefinitionError

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition


@dataclass(frozen=True)
class LayerHook:
    """One layer hook (``hooks.entry`` ...) and the layers it takes as parameters."""

    function: Callable[..., Any]
    signature: dag.Signature


@dataclass(frozen=True)
class Plan:
    """A flow's validated shape: order, dependencies, call signatures and layer hooks of every layer."""

    order: tuple[str, ...]
    dependencies: dict[str, frozenset[str]]
    calls: dict[str, dag.Signature]
    layer_hooks: dict[tuple[str, str], tuple[LayerHook, ...]]  # (layer, kind) -> hooks, flow hooks first


#: Each flow class's plan, with the registry it was built from: a class's registry is a new dict
#: whenever a layer is registered, so a plan is reused while its registry is the class's own.
_PLANS: weakref.WeakKeyDictionary[type, tuple[Mapping[str, Any], Plan]] = weakref.WeakKeyDictionary()


def plan_of(flow: type[FlowDefinition], *, base: type) -> Plan:
    """``flow``'s plan, built once per class and registry (every flow object of a class shares it:
    analysing the layers again for each flow object cost a chain of quick layers a noticeable share
    of their time; figures: docs/performance.md)."""
    found = _PLANS.get(flow)
    if found is not None and found[0] is flow.registry:
        return found[1]
    plan = build_plan(flow, base=base)
    _PLANS[flow] = (flow.registry, plan)
    return plan


def build_plan(flow: type[FlowDefinition], *, base: type) -> Plan:
    """Analyse ``flow``'s layers: dependencies from ``__call__`` and hooks, checked and ordered.

    A hook defined on the flow class applies to every layer except ``Parameters`` (stored, never run)
    and the layers it takes as parameters together with their ancestors: a flow hook taking ``A``
    cannot run before ``A`` exists, so it does not apply to ``A`` itself or to what ``A`` needs.
    """
    registry = flow.registry
    known = {name: definition.layer for name, definition in registry.items()}
    known.setdefault(registry["Parameters"].layer.__name__, registry["Parameters"].layer)  # declared

    def analyse(function: Callable[..., Any]) -> LayerHook:
        owner = f"hook {function.__qualname__}"
        return LayerHook(function, dag.signature(function, owner=owner, known=known, flow=flow.__name__))

    def layers_of(signature: dag.Signature) -> set[str]:
        return {dependency for _, dependency in signature.parameters}

    calls: dict[str, dag.Signature] = {}
    own_hooks: dict[tuple[str, str], tuple[LayerHook, ...]] = {}
    own: dict[str, frozenset[str]] = {}
    for name, definition in registry.items():
        call = definition.layer.__call__
        calls[name] = (
            dag.Signature(())  # no __call__ of its own: a no-op layer
            if call is Layer.__call__
            else dag.signature(call, owner=f"layer {name}", known=known, flow=flow.__name__)
        )
        needed = layers_of(calls[name])
        for kind in layer_hooks.KINDS:
            own_hooks[(name, kind)] = tuple(
                analyse(f) for f in layer_hooks.collect(definition.layer, kind, stop=Layer)
            )
            for hook in own_hooks[(name, kind)]:
                needed |= layers_of(hook.signature)
        _check_registered(flow, name, needed)
        own[name] = frozenset(needed)
    dag.topological_order(own, flow=flow.__name__)  # a cycle among the layers themselves
    ancestors = _ancestors(own)

    flow_hooks = {
        kind: tuple(analyse(f) for f in layer_hooks.collect(flow, kind, stop=base))
        for kind in layer_hooks.KINDS
    }
    hooks: dict[tuple[str, str], tuple[LayerHook, ...]] = {}
    dependencies: dict[str, frozenset[str]] = {}
    for name, definition in registry.items():
        needed = set(own[name])
        for kind in layer_hooks.KINDS:
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


def _check_registered(flow: type[FlowDefinition], name: str, needed: set[str]) -> None:
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
