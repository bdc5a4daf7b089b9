"""Layer hooks: methods that run around a layer's life. Decorate with ``entry``, ``submission``,
``execution`` or ``retry``. Public as :mod:`laminar.configurations.hooks`.

Not to be confused with *plugin hooks* (pluggy hookspecs, :mod:`laminar._plugins.hookspecs`): in the
code these are always called layer hooks.

- ``entry`` (scheduler): return truthy to run the layer, falsy to skip it. Must not be a generator.
- ``submission`` (scheduler): before each split is submitted; may change ``self.configuration``.
- ``execution`` (where the layer runs): wraps ``__call__``.
- ``retry`` (scheduler): before a retry's back-off.

Plain functions run before the event; generators run up to ``yield`` before and the rest after.
Hooks may take layers as parameters (they become dependencies). Hooks on a Flow class apply to every
layer of the flow, with the layer as ``self``; they run before the layer's own, in definition order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from laminar.errors import FlowDefinitionError

F = TypeVar("F", bound=Callable[..., Any])
KINDS = ("entry", "submission", "execution", "retry")
ATTRIBUTE = "__laminar_layer_hook__"


def _marker(kind: str) -> Callable[[F], F]:
    def mark(function: F) -> F:
        if not callable(function):
            raise FlowDefinitionError(f"hooks.{kind} decorates a function, got {function!r}")
        if kind == "entry" and inspect.isgeneratorfunction(function):
            raise FlowDefinitionError(
                f"entry hook {function.__qualname__} is a generator; entry hooks return a truthy value to run "
                "the layer or a falsy one to skip it, so use `return`, not `yield`"
            )
        setattr(function, ATTRIBUTE, kind)
        return function

    mark.__name__ = kind
    return mark


entry = _marker("entry")
submission = _marker("submission")
execution = _marker("execution")
retry = _marker("retry")


def collect(owner: type, kind: str, *, stop: type | None = None) -> list[Callable[..., Any]]:
    """Hooks of ``kind`` defined on ``owner`` and its bases (base classes first, definition order)."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(owner.__mro__):
        if klass is object or (stop is not None and klass is stop):
            continue
        for name, value in vars(klass).items():
            if getattr(value, ATTRIBUTE, None) == kind:
                found.pop(name, None)
                found[name] = value
            elif name in found:
                del found[name]  # overridden by something that is not a hook
    return list(found.values())
