"""Layer: one unit of work. Its ``__call__`` does the work; what it assigns on ``self`` is stored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from laminar._model.layer_options import LAYER_MARKER, Configuration

if TYPE_CHECKING:
    from laminar._model.execution import Execution
    from laminar._model.flow import FlowDefinition
    from laminar._model.parameters import Declaration

#: Attributes Laminar owns on a layer; everything else assigned on ``self`` is an artifact.
RESERVED = frozenset(
    {"flow", "execution", "index", "splits", "attempt", "configuration", "state", "name", "shard"}
)


class Context(Protocol):
    """What binds a Layer instance to a flow, an execution and a split, and reads its artifacts.

    The model only names what it needs; the runtime's ``LayerContext`` provides it.
    """

    @property
    def flow(self) -> FlowDefinition: ...
    @property
    def execution(self) -> Execution: ...
    @property
    def index(self) -> int | None: ...
    @property
    def splits(self) -> int | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def configuration(self) -> Configuration: ...
    def read(self, attribute: str) -> Any: ...
    def finished(self) -> bool: ...
    def layer_status(self) -> Any: ...
    def logs(self, index: int | None, attempt: int | None) -> str: ...


class LayerState:
    """What is known about a layer in one execution: whether it finished, its run record, its logs."""

    def __init__(self, layer: Layer) -> None:
        self._layer = layer

    def _bound(self) -> Context:
        context = self._layer._context
        if context is None:
            raise AttributeError(f"layer {self._layer.name} is not bound to an execution")
        return context

    @property
    def finished(self) -> bool:
        """Whether the layer finished in this execution (its record exists)."""
        context = self._layer._context
        return context is not None and context.finished()

    @property
    def status(self) -> Any:
        """Its ``LayerStatus``: finished, failed, skipped, running, cancelled or not started, with its
        splits' attempts (times, and errors with tracebacks)."""
        return self._bound().layer_status()

    def logs(self, index: int | None = None, attempt: int | None = None) -> str:
        """What split ``index`` (None: a layer without ForEach) printed and logged on ``attempt``
        (None: its last). Raises ``SplitNotFound`` naming the valid range for one that does not exist."""
        return self._bound().logs(index, attempt)

    def __repr__(self) -> str:
        return f"LayerState(finished={self.finished})"


class Layer:
    """Base class of a flow's units of work. Subclass it, define ``__call__``, register it to a flow.

    ``__call__``'s parameters, annotated with other Layer classes, are its dependencies. Attributes
    assigned on ``self`` inside ``__call__`` become artifacts (names starting with ``_`` stay private);
    ``self.shard(name=iterable)`` stores each item as its own artifact.
    """

    _context: Context | None = None

    def __init__(self, **artifacts: Any) -> None:
        for name, value in artifacts.items():
            setattr(self, name, value)

    def __call__(self, *dependencies: Any, **named: Any) -> None:
        """The layer's work. A layer without a ``__call__`` of its own (only hooks, say) does nothing."""

    # ---- artifacts -----------------------------------------------------------------------------
    def shard(self, **iterables: Iterable[Any]) -> None:
        """Store each item of each iterable as its own artifact; downstream reads an Accessor."""
        shards: dict[str, list[Any]] = self.__dict__.setdefault("_shards", {})
        for name, values in iterables.items():
            if name in RESERVED or name.startswith("_"):
                raise AttributeError(f"cannot shard {name!r}: the name is reserved by Laminar")
            self.__dict__.pop(name, None)
            shards[name] = list(values)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RESERVED:
            raise AttributeError(
                f"{type(self).__name__}.{name} is set by Laminar and cannot be assigned; pick another name "
                f"for the artifact (reserved: {', '.join(sorted(RESERVED))})"
            )
        shards = self.__dict__.get("_shards")
        if shards and name in shards:
            del shards[name]
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: read the artifact from the datastore.
        context = self.__dict__.get("_context")
        if name.startswith("_") or context is None:
            raise AttributeError(
                f"{type(self).__name__!r} has no attribute {name!r}"
                + ("" if name.startswith("_") else " (this layer is not bound to an execution)")
            )
        return context.read(name)

    def _artifacts(self) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """The values and the shards assigned on this layer instance."""
        values = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return values, dict(self.__dict__.get("_shards", {}))

    # ---- what Laminar tells the layer ----------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def flow(self) -> FlowDefinition | None:
        return self._context.flow if self._context else None

    @property
    def execution(self) -> Execution | None:
        return self._context.execution if self._context else None

    @property
    def index(self) -> int | None:
        """This split's number in a foreach layer; ``None`` for an ordinary layer."""
        return self._context.index if self._context else None

    @property
    def splits(self) -> int | None:
        """How many splits this foreach layer has; ``None`` for an ordinary layer."""
        return self._context.splits if self._context else None

    @property
    def attempt(self) -> int:
        """0 on the first try, 1 on the first retry, ..."""
        return self._context.attempt if self._context else 0

    @property
    def configuration(self) -> Configuration:
        return self._context.configuration if self._context else Configuration()

    @property
    def state(self) -> LayerState:
        return LayerState(self)

    # ---- a layer equals its name, as in the earlier laminar (``"A" in datastore.list_layers(...)``) ----
    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.name == other
        if isinstance(other, Layer):
            return type(self) is type(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __lt__(self, other: object) -> bool:
        if isinstance(other, (str, Layer)):
            return self.name < (other if isinstance(other, str) else other.name)
        return NotImplemented

    def __repr__(self) -> str:
        return f"{self.name}(execution={self.execution!r}, index={self.index}, splits={self.splits})"


setattr(Layer, LAYER_MARKER, True)


class Parameters(Layer):
    """The layer every flow has: ``flow(foo=1)`` stores ``foo`` as an artifact of Parameters.

    Its artifacts are stored by the scheduler when the execution starts; it never runs. A subclass
    declares a flow's parameters (``lr: float = 0.01``), registered with ``@MyFlow.register``: they
    are checked before a run starts (``laminar._model.parameters``).
    """

    #: What a subclass declares; None on ``Parameters`` itself (any keyword is a parameter).
    __laminar_parameters__: ClassVar[Declaration | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from laminar._model.parameters import declare

        taken = RESERVED | {name for name in dir(Layer) if not name.startswith("_")}
        cls.__laminar_parameters__ = declare(cls, layer_names=frozenset(taken))

    @property
    def name(self) -> str:
        return "Parameters"  # declared or not, the layer a flow stores its parameters in
