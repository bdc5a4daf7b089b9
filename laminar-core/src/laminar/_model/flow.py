"""A flow's definition: its registry of layers, ``register``, and its plan (the checked DAG).

Pure: declaring a flow and registering layers touches no plugin, storage or runtime. Running a flow
(``Flow.__init__``, ``__call__``, the execution guard) is the application's, in ``laminar._app.flow``,
whose ``Flow`` subclasses this one and is the class users import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from laminar._model.execution import Execution
from laminar._model.layer import Layer, Parameters
from laminar._model.layer_options import Catch, Configuration, Container, ForEach, Retry
from laminar._model.plan import Plan, plan_of
from laminar._names import validate
from laminar.errors import FlowDefinitionError

if TYPE_CHECKING:
    from laminar._model.parameters import Declaration
    from laminar._runtime.wiring import FlowConfiguration

L = TypeVar("L", bound=type[Layer])


@dataclass
class LayerDefinition:
    """A layer as registered to one flow: its class and its configuration there."""

    layer: type[Layer]
    configuration: Configuration = field(default_factory=Configuration)


class FlowDefinition:
    """A workflow's definition: ``class MyFlow(Flow): ...``, then ``@MyFlow.register`` its layers."""

    registry: ClassVar[dict[str, LayerDefinition]] = {"Parameters": LayerDefinition(Parameters)}
    #: Where the flow stores and runs; set by the application when a flow object is made.
    configuration: FlowConfiguration
    #: Set (in its own class body) on each class users subclass but never register layers to.
    _framework_base: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        validate(cls.__name__, what="flow name")
        merged: dict[str, LayerDefinition] = {}
        origin: dict[str, str] = {}
        for base in cls.__bases__:
            if not (isinstance(base, type) and issubclass(base, FlowDefinition)):
                continue
            for name, definition in base.registry.items():
                if name == "Parameters" and definition.layer is Parameters and name in merged:
                    continue  # a flow that declares none takes the other's declared parameters
                if name == "Parameters" and merged.get(name, definition).layer is Parameters:
                    merged[name] = definition
                    origin[name] = base.__name__
                    continue
                if name in merged and merged[name] != definition:
                    if merged[name].layer is definition.layer:
                        raise FlowDefinitionError(
                            f"Duplicate layer added: {cls.__name__} merges layer {name} registered with different "
                            "configurations in "
                            f"{origin[name]} ({merged[name].configuration}) and {base.__name__} "
                            f"({definition.configuration}); register it the same way in both"
                        )
                    raise FlowDefinitionError(
                        f"Duplicate layer added: {cls.__name__} merges two layers named {name!r}: "
                        f"{_where(merged[name].layer)} from "
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
        reuse: bool = True,
        inputs: Sequence[str] = (),
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
        reuse: bool = True,
        inputs: Sequence[str] = (),
    ) -> L | Callable[[L], L]:
        """Add a layer to this flow: ``@MyFlow.register`` or ``@MyFlow.register(retry=Retry(3))``."""
        if is_framework_base(cls):
            raise FlowDefinitionError("register layers on a subclass of Flow: class MyFlow(Flow): ...")
        configuration = Configuration(
            catch=catch,
            container=container or Container(),
            foreach=foreach,
            retry=retry or Retry(),
            reuse=reuse,
            inputs=tuple(inputs) if not isinstance(inputs, str) else inputs,  # type: ignore[arg-type]
        )

        def add(layer: L) -> L:
            if not (isinstance(layer, type) and issubclass(layer, Layer)):
                raise FlowDefinitionError(f"{cls.__name__}.register takes a Layer subclass, got {layer!r}")
            if issubclass(layer, Parameters):
                return declare_parameters(layer)
            name = validate(layer.__name__, what="layer name")
            if name in cls.registry:
                raise FlowDefinitionError(
                    f"Duplicate layer added: {cls.__name__} already has a layer named {name!r} "
                    f"({_where(cls.registry[name].layer)}); "
                    f"cannot also register {_where(layer)}. Rename one of them."
                )
            cls.registry = {**cls.registry, name: LayerDefinition(layer, configuration)}
            return layer

        def declare_parameters(layer: L) -> L:
            # The flow's parameters, declared: they take the place of the plain Parameters layer.
            if layer is Parameters or configuration != Configuration():
                raise FlowDefinitionError(
                    f"{cls.__name__}.register takes a subclass of Parameters to declare the flow's parameters "
                    f"(class {cls.__name__}Parameters(Parameters): lr: float = 0.01), without options"
                )
            current = cls.registry["Parameters"].layer
            if current is not Parameters and current is not layer:
                raise FlowDefinitionError(
                    f"flow {cls.__name__} already declares its parameters with {_where(current)}; "
                    f"cannot also declare {_where(layer)}. Declare them in one class"
                )
            cls.registry = {**cls.registry, "Parameters": LayerDefinition(layer)}
            return layer

        return add(layer) if layer is not None else add

    @classmethod
    def declared_parameters(cls) -> Declaration | None:
        """The flow's declared parameters (``laminar._model.parameters``); None when it declares
        none, and any keyword is a parameter."""
        layer = cls.registry["Parameters"].layer
        return layer.__laminar_parameters__ if issubclass(layer, Parameters) else None

    # ---- instances -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def layer_names(self) -> list[str]:
        """The flow's layers, each after its dependencies."""
        return list(self.plan.order)

    @cached_property
    def plan(self) -> Plan:
        """Validate the DAG (dependencies, cycles, annotations) and analyse every layer once."""
        return plan_of(type(self), base=FlowDefinition)

    def execution(self, id: str) -> Execution:
        """The execution ``id`` of this flow. The application's Flow returns one that can run and read."""
        return Execution(flow=self, id=id)

    def __repr__(self) -> str:
        return f"{self.name}()"


def _where(layer: type) -> str:
    return f"{layer.__module__}.{layer.__qualname__}"


def is_framework_base(cls: type) -> bool:
    """``FlowDefinition`` and the application's ``Flow``: classes users subclass, never register to."""
    return "_framework_base" in cls.__dict__
