"""Declared parameters: a ``Parameters`` subclass with annotated attributes, checked before a run.

``class Training(Parameters): lr: Annotated[float, Help("learning rate")] = 0.01`` declares a
parameter ``lr``. Declaring reads only the names and defaults (reserved names are refused then); the
types are resolved, and Pydantic imported, the first time a value is checked, so flows that declare
nothing never import Pydantic. Values are checked as Pydantic's lax mode does (``"3"`` is an int,
``1`` a float), which is also how the command line's text is read.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from laminar.errors import ConfigurationError, FlowDefinitionError

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class Help:
    """A declared parameter's help, shown by ``laminar run FILE --help``:
    ``lr: Annotated[float, Help("learning rate")] = 0.01``."""

    text: str


#: Keywords of ``flow(...)`` and ``Execution.run``, and options of ``laminar run``: a parameter named
#: so could not be given.
CALL_KEYWORDS = frozenset(
    {
        "execution",
        "parameters",
        "resume",
        "reuse",
        "force",
        "datastore",
        "executor",
        "param",
        "params",
        "file",
    }
)


class _Required:
    """The default of a parameter declared without one: the same object when unpickled."""

    def __reduce__(self) -> str:
        return "_NO_DEFAULT"

    def __repr__(self) -> str:
        return "<required>"


_NO_DEFAULT = _Required()


@dataclass(frozen=True)
class Field:
    """One declared parameter: its name, type, default and help."""

    name: str
    annotation: Any
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    @property
    def type_text(self) -> str:
        return type_text(self.annotation)

    @property
    def default_text(self) -> str:
        """The default as it is written on a command line (JSON for lists, dicts and settings)."""
        import pydantic

        if self.required:
            return ""
        if self.compound:
            return pydantic.TypeAdapter(self.annotation).dump_json(self.default).decode()
        value = pydantic.TypeAdapter(self.annotation).dump_python(self.default, mode="json")
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    def json_value(self, value: Any) -> Any:
        """``value`` as JSON data, as the JSON Schema describes it."""
        import pydantic

        return pydantic.TypeAdapter(self.annotation).dump_python(value, mode="json")

    @property
    def compound(self) -> bool:
        """Whether its text on the command line is JSON (lists, dicts, nested settings)."""
        return _compound(self.annotation)


class Declaration:
    """What a ``Parameters`` subclass declares, taken from the class when it is defined."""

    def __init__(self, owner: type, defaults: Mapping[str, Any]) -> None:
        self.owner = owner
        self._defaults = dict(defaults)

    def __getstate__(self) -> dict[str, Any]:
        # A class shipped to workers by value takes its declaration along: not the Pydantic model
        # built from it (made again where it is needed).
        return {"owner": self.owner, "_defaults": self._defaults}

    @cached_property
    def fields(self) -> dict[str, Field]:
        """Each parameter, in declaration order (a base class's first), with its type resolved."""
        try:
            hints = typing.get_type_hints(
                self.owner, localns={"Declaration": Declaration}, include_extras=True
            )
        except Exception as error:
            raise FlowDefinitionError(
                f"the types of parameters class {self.owner.__name__} cannot be resolved: "
                f"{type(error).__name__}: {error}"
            ) from None
        found: dict[str, Field] = {}
        for name in self._defaults:
            annotation, help = _split_help(hints[name])
            found[name] = Field(name, annotation, self._defaults[name], help)
        return found

    @cached_property
    def model(self) -> type[BaseModel]:
        """A Pydantic model of the declared class: it checks and converts values."""
        import pydantic

        definitions: dict[str, Any] = {
            name: (
                field.annotation,
                pydantic.Field(... if field.required else field.default, description=field.help or None),
            )
            for name, field in self.fields.items()
        }
        config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        model: type[BaseModel] = pydantic.create_model(self.owner.__name__, __config__=config, **definitions)
        return model

    def validate(self, values: Mapping[str, Any], *, flow: str) -> dict[str, Any]:
        """``values`` checked and converted, defaults filled in; one ``ConfigurationError`` naming
        each parameter that is unknown, missing or of the wrong type."""
        import pydantic

        try:
            checked = self.model.model_validate(dict(values))
        except pydantic.ValidationError as error:
            raise ConfigurationError(self._problems(error, values, flow=flow)) from None
        return {name: getattr(checked, name) for name in self.fields}

    def parse_text(self, name: str, text: str, *, flow: str) -> Any:
        """A command line's ``text`` for parameter ``name``: JSON for lists, dicts and nested
        settings, the text itself otherwise (converted as its type says, by ``validate``)."""
        field = self.fields[name]
        if not field.compound:
            return text
        try:
            return json.loads(text)
        except ValueError as error:
            raise ConfigurationError(
                f"parameter {name!r} of flow {flow}: got {text!r}, expected {field.type_text} as JSON "
                f"({error})"
            ) from None

    def _problems(self, error: Any, values: Mapping[str, Any], *, flow: str) -> str:
        problems = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            top = str(problem["loc"][0]) if problem["loc"] else ""
            if problem["type"] == "missing" and top in self.fields and len(problem["loc"]) == 1:
                problems.append(
                    f"parameter {where!r} of flow {flow} is required: give a {self.fields[top].type_text}"
                )
            elif problem["type"] == "extra_forbidden" and len(problem["loc"]) == 1:
                problems.append(
                    f"flow {flow} has no parameter {where!r} (given {_shown(problem['input'])}); its "
                    f"parameters are {', '.join(self.fields) or 'none'}"
                )
            else:
                expected = self.fields[top].type_text if top in self.fields else "?"
                given = _shown(problem["input"])
                problems.append(
                    f"parameter {where!r} of flow {flow}: got {given}, expected {expected} "
                    f"({problem['msg'].rstrip('.')})"
                )
        return "; ".join(problems)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the declared class; empty for a type JSON Schema cannot describe."""
        try:
            schema: dict[str, Any] = self.model.model_json_schema()
        except Exception:  # a type of the user's own that Pydantic takes but cannot describe
            return {}
        return schema

    def stored(self) -> str:
        """What an execution stores of the declaration: the class, each parameter's type, the
        JSON Schema (compact JSON)."""
        return json.dumps(
            {
                "class": self.owner.__name__,
                "types": {name: field.type_text for name, field in self.fields.items()},
                "schema": self.schema(),
            },
            separators=(",", ":"),
            sort_keys=True,
            default=str,
        )


def declare(owner: type, *, layer_names: frozenset[str]) -> Declaration:
    """Read ``owner``'s declared parameters: their names and defaults (taken off the class, so a
    layer reads the stored values). A name in ``layer_names`` (what a layer is told, its methods),
    a keyword of a run, or a private name is refused here, when the class is defined."""
    defaults: dict[str, Any] = {}
    for base in reversed(owner.__mro__):
        declared = base.__dict__.get("__laminar_parameters__")
        if isinstance(declared, Declaration) and base is not owner:
            defaults.update(declared._defaults)
    reserved = layer_names | CALL_KEYWORDS
    for name, annotation in inspect.get_annotations(owner).items():
        if isinstance(annotation, str) and annotation.replace("typing.", "").startswith("ClassVar"):
            continue
        if typing.get_origin(annotation) is typing.ClassVar:  # type: ignore[comparison-overlap]
            continue
        if name.startswith("_"):
            raise FlowDefinitionError(
                f"parameter {name!r} of {owner.__name__} starts with '_'; parameters are public names"
            )
        if name in reserved:
            raise FlowDefinitionError(
                f"parameter {name!r} of {owner.__name__} has a name reserved by Laminar (a keyword of "
                f"flow(...) or `laminar run`, or what a layer is told: {', '.join(sorted(reserved))}); "
                "choose another name"
            )
        defaults[name] = owner.__dict__.get(name, _NO_DEFAULT)
        if name in owner.__dict__:
            delattr(owner, name)  # read through the layer, from the execution, not the class default
    return Declaration(owner, defaults)


def _split_help(annotation: Any) -> tuple[Any, str]:
    """``Annotated[float, Help("...")]`` -> ``(float, "...")``; other metadata is kept."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, ""
    base, *metadata = typing.get_args(annotation)
    helps = [item.text for item in metadata if isinstance(item, Help)]
    rest = [item for item in metadata if not isinstance(item, Help)]
    arguments = (base, *rest)
    kept = typing.Annotated[arguments] if rest else base
    return kept, " ".join(helps)


def _compound(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return any(
            _compound(argument) for argument in typing.get_args(annotation) if argument is not type(None)
        )
    if origin is typing.Annotated:
        return _compound(typing.get_args(annotation)[0])
    if origin in (list, tuple, dict, set, frozenset) or annotation in (list, tuple, dict, set, frozenset):
        return True
    if isinstance(annotation, type):
        import dataclasses

        return dataclasses.is_dataclass(annotation) or hasattr(annotation, "model_fields")
    return False


def type_text(annotation: Any) -> str:
    """A type as a user wrote it: ``float``, ``list[int]``, ``Literal['west', 'east']``, ``Color``."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation).replace("typing.", "")
    for module in ("pathlib.", "datetime.", "builtins."):
        text = text.replace(module, "")
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"
