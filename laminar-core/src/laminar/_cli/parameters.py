"""An execution's parameters as the commands show them: each value with its type, and the JSON
Schema of the declared class its flow stored when it started (``laminar._model.parameters``)."""

from __future__ import annotations

import json
from typing import Any

from laminar import Execution
from laminar._cli.output import json_value


def declaration(execution: Execution) -> dict[str, Any] | None:
    """What the execution stored of its flow's declared parameters (class, types, JSON Schema);
    None for a flow that declared none, or a record that does not say."""
    metadata = execution.store.metadata()
    if metadata is None or metadata.parameters is None:
        return None
    try:
        found = json.loads(metadata.parameters)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def types(values: dict[str, Any], declared: dict[str, Any] | None) -> dict[str, str]:
    """Each parameter's type: as declared, else the type of the value it was given."""
    stored = declared.get("types", {}) if declared is not None else {}
    return {name: str(stored.get(name) or type(value).__name__) for name, value in values.items()}


def values_json(values: dict[str, Any], declared: dict[str, Any] | None) -> dict[str, Any]:
    """The values as JSON data: as the declared class's JSON Schema describes them (a path as its
    text, a date in ISO form, a model as an object), else plain JSON or a repr."""
    if declared is None:
        return {name: json_value(value) for name, value in values.items()}
    import pydantic_core

    found = {}
    for name, value in values.items():
        try:
            found[name] = pydantic_core.to_jsonable_python(value)
        except Exception:  # a type of the user's own that Pydantic cannot write as JSON
            found[name] = json_value(value)
    return found
