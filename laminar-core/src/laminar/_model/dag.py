"""Dependencies between layers, read from the annotations of ``__call__`` and of hooks."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from laminar._model.layer import Layer, Parameters
from laminar.errors import FlowDefinitionError


@dataclass(frozen=True)
class Signature:
    """The layer parameters of a function: ``[(parameter name, layer name), ...]``."""

    parameters: tuple[tuple[str, str], ...]


def signature(function: Callable[..., Any], *, owner: str, known: Mapping[str, type], flow: str) -> Signature:
    """Read which layers ``function`` takes, by annotation. ``known`` maps names to layer classes.

    String annotations (``from __future__ import annotations`` or forward references) are resolved
    against the module first and against the flow's layer names second, so layers defined inside a
    function work too.
    """
    try:
        hints = typing.get_type_hints(function)
    except Exception:
        hints = {}
    parameters = []
    for index, (name, parameter) in enumerate(inspect.signature(function).parameters.items()):
        if index == 0 and name == "self":
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise FlowDefinitionError(f"{owner} takes *{name}; list each layer it depends on as a parameter")
        annotation = hints.get(name, parameter.annotation)
        if isinstance(annotation, str):
            text = annotation.strip("'\"")
            if text not in known and text.isidentifier():
                raise FlowDefinitionError(
                    f"{owner} depends on layer {text}, which is not registered to flow {flow}; "
                    f"register it with @{flow}.register"
                )
            annotation = known.get(text, annotation)
        if annotation is inspect.Parameter.empty:
            raise FlowDefinitionError(
                f"parameter {name!r} of {owner} has no annotation; annotate it with the Layer class it depends on"
            )
        if not (isinstance(annotation, type) and issubclass(annotation, Layer)):
            shown = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", annotation)
            raise FlowDefinitionError(
                f"parameter {name!r} of {owner} is annotated with {shown!r}, which is not a Layer registered to "
                "the flow; layer parameters must be annotated with Layer classes"
            )
        parameters.append((name, "Parameters" if issubclass(annotation, Parameters) else annotation.__name__))
    return Signature(tuple(parameters))


def topological_order(dependencies: Mapping[str, frozenset[str]], *, flow: str) -> list[str]:
    """Layers ordered so each comes after its dependencies, otherwise in the order of ``dependencies``
    (registration order); a cycle raises, naming its layers."""
    rank = {name: position for position, name in enumerate(dependencies)}

    def ordered(names: frozenset[str]) -> list[str]:
        return sorted(names, key=lambda name: rank.get(name, -1))

    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in dependencies:
        if state.get(start) == 2:
            continue
        stack: list[tuple[str, list[str]]] = [(start, ordered(dependencies[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            if pending:
                child = pending.pop(0)
                if state.get(child) == 1:
                    cycle = [*path[path.index(child) :], child]
                    raise FlowDefinitionError(f"flow {flow} has a cycle: {' -> '.join(cycle)}")
                if state.get(child) != 2:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, ordered(dependencies[child])))
                continue
            stack.pop()
            path.pop()
            state[node] = 2
            order.append(node)
    return order
