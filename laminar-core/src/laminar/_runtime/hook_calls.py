"""Calling layer hooks (``hooks.entry`` ...): plain functions before an event, generators around it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from laminar._model.layer import Layer
    from laminar._model.plan import LayerHook

Dependency = Callable[[str], "Layer"]


def call(hook: LayerHook, layer: Layer, dependency: Dependency) -> Any:
    """Call one hook with ``layer`` as ``self`` and its layer parameters resolved."""
    return hook.function(layer, **{p: dependency(name) for p, name in hook.signature.parameters})


def start(hooks: Sequence[LayerHook], layer: Layer, dependency: Dependency) -> list[Any]:
    """Run every hook up to its ``yield`` (or completely, if it is a plain function), in order."""
    running = []
    for hook in hooks:
        result = call(hook, layer, dependency)
        if inspect.isgenerator(result):
            next(result, None)
            running.append(result)
    return running


def finish(running: list[Any], error: BaseException | None = None) -> None:
    """Run what follows each generator's ``yield``, in reverse; an error is raised at the ``yield``."""
    for generator in reversed(running):
        with contextlib.suppress(StopIteration):
            if error is None:
                next(generator)
            else:
                generator.throw(error)


@contextlib.contextmanager
def around(hooks: Sequence[LayerHook], layer: Layer, dependency: Dependency) -> Iterator[None]:
    """Run ``hooks`` around the body of the ``with``."""
    running = start(hooks, layer, dependency)
    try:
        yield
    except BaseException as error:
        finish(running, error)
        raise
    finish(running)
