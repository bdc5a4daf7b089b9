"""A flow's hook relay: each hook called the way pluggy calls it, without pluggy's machinery when
nothing needs it.

pluggy calls a hook through ``HookCaller.__call__``, ``PluginManager._hookexec`` and
``_multicall``: it copies the list of implementations, checks the arguments against the
specification, and for each implementation builds its argument list and asks whether it wraps the
others. The scheduler calls the lifecycle hooks several times a layer, and in a chain of small
layers that machinery costs more than the plugins' own work. :class:`QuickRelay` calls a hook
directly when that gives what pluggy's call gives:

- every implementation is a plain one (no ``wrapper``, no old-style ``hookwrapper``, no parameter
  with a default), and the specification gives no defaults and is not historic;
- nobody monitors the manager's calls (``add_hookcall_monitoring``, ``enable_tracing``: pluggy then
  calls through its monitor, which sees every call), and the manager's class calls hooks as
  pluggy's own does;
- the call names exactly the specification's arguments (pluggy warns of a missing one).

Then the implementations are called in pluggy's order (last registered first, ``tryfirst`` and
``trylast`` honoured: the order pluggy keeps them in), each with the arguments it names, and the
results that are not ``None`` are returned in a list (for a ``firstresult`` hook, the first of them,
and no implementation after it is called); an implementation's exception ends the call, as it does
in pluggy. Anything else is pluggy's own call. What a hook calls is worked out again whenever its
implementations change (a plugin registered or unregistered since: ``disabled`` does both), so a
plugin sees the calls made after it registers and none after it leaves. Anything else asked of a
hook (``get_hookimpls``, ``call_extra``...) is pluggy's ``HookCaller``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

import pluggy

#: What a manager calls hooks with while nobody monitors its calls: pluggy's own ``_multicall``.
_UNMONITORED = pluggy.PluginManager("laminar-probe")._inner_hookexec
_HOOKEXEC = pluggy.PluginManager._hookexec

#: What calls a hook's implementations with the keywords of one call (see ``_compiled``).
_Plan = Callable[[Mapping[str, object]], Any]


@functools.lru_cache(maxsize=256)
def _compiled(
    functions: tuple[tuple[Callable[..., Any], tuple[str, ...]], ...], names: tuple[str, ...], first: bool
) -> tuple[_Plan, frozenset[str]] | None:
    """One function that calls ``functions`` in order, each with the keywords it names, as pluggy's
    ``_multicall`` does: results that are not None in a list, or the first of them for a
    ``firstresult`` hook (no function after it called), and the specification's argument ``names``
    a call must give; None if a function names one the specification does not. Written out as code,
    one call a line: no loop, no argument list built per implementation. Kept per process: every
    flow's manager has the same plugins' functions, and compiling costs more than a run of a small
    flow does."""
    given = frozenset(names)
    if any(not given.issuperset(wanted) for _, wanted in functions):
        return None
    used = sorted({name for _, wanted in functions for name in wanted})
    local = {name: f"a{place}" for place, name in enumerate(used)}
    lines = ["def call(kwargs):"]
    lines += [f"    {local[name]} = kwargs[{name!r}]" for name in used]
    lines.append("    results = []" if not first else "    pass")
    for place, (_, wanted) in enumerate(functions):
        arguments = ", ".join(local[name] for name in wanted)
        lines.append(f"    result = f{place}({arguments})")
        lines.append("    if result is not None:")
        lines.append("        return result" if first else "        results.append(result)")
    lines.append("    return None" if first else "    return results")
    namespace: dict[str, Any] = {f"f{place}": function for place, (function, _) in enumerate(functions)}
    exec(compile("\n".join(lines), "<laminar hook call>", "exec"), namespace)  # (the names are ours)
    return cast("_Plan", namespace["call"]), given


_NONE: frozenset[str] = frozenset()


class QuickCall:
    """One hook of a :class:`QuickRelay`: called as pluggy would call it (see the module)."""

    __slots__ = ("_caller", "_manager", "_state")

    def __init__(self, manager: pluggy.PluginManager, caller: pluggy.HookCaller) -> None:
        self._manager = manager
        self._caller = caller
        # (the implementations it was worked out from, what calls them or None: pluggy does, the
        # specification's arguments), replaced whole, so threads calling at once each see one whole
        self._state: tuple[list[Any] | None, _Plan | None, frozenset[str]] = (None, None, _NONE)

    def __call__(self, **kwargs: object) -> Any:
        caller = self._caller
        seen, plan, names = self._state
        if caller._hookimpls != seen:  # registered or unregistered since (or never worked out)
            seen, plan, names = self._state = self._plan()
        if plan is None or kwargs.keys() != names or self._manager._inner_hookexec is not _UNMONITORED:
            return caller(**kwargs)
        return plan(kwargs)

    def _plan(self) -> tuple[list[Any], _Plan | None, frozenset[str]]:
        """What calls the hook's implementations as they are now, or None: pluggy does. Worked out
        for each flow's manager, once a hook: one pass, the compiling shared (``_compiled``)."""
        caller = self._caller
        implementations = caller._hookimpls.copy()
        spec = caller.spec
        if (
            spec is None
            or caller._call_history is not None  # historic
            or getattr(spec, "kwargdefaults", None)
            or getattr(caller._hookexec, "__func__", None) is not _HOOKEXEC
        ):
            return implementations, None, _NONE
        functions = []
        for each in reversed(implementations):
            if each.wrapper or each.hookwrapper or each.kwargnames:
                return implementations, None, _NONE
            functions.append((each.function, tuple(each.argnames)))
        compiled = _compiled(tuple(functions), tuple(spec.argnames), bool(spec.opts.get("firstresult")))
        if compiled is None:
            return implementations, None, _NONE
        return implementations, compiled[0], compiled[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._caller, name)

    def __repr__(self) -> str:
        return f"<QuickCall {self._caller.name!r}>"


#: The members of pluggy's ``HookCaller`` a quick call reads (pluggy 1.5 and later have them).
_CALLER = ("_hookimpls", "_call_history", "_hookexec", "spec")


class QuickRelay:
    """The hook relay of ``manager`` (its ``hook``), each hook a :class:`QuickCall`."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self._manager = manager
        self._relay = manager.hook

    def __getattr__(self, name: str) -> QuickCall | pluggy.HookCaller:
        if name.startswith("_"):
            raise AttributeError(name)
        caller = getattr(self._relay, name)  # AttributeError: no such hook
        # What a quick call reads of pluggy is not its public API: a pluggy that keeps it otherwise
        # has each hook called by pluggy itself.
        known = all(hasattr(caller, each) for each in _CALLER) and hasattr(self._manager, "_inner_hookexec")
        call = QuickCall(self._manager, caller) if known else caller
        self.__dict__[name] = call  # pluggy keeps one HookCaller per hook for the manager's life
        return call

    def __repr__(self) -> str:
        return f"<QuickRelay of {self._manager.project_name!r}>"
