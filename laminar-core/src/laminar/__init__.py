"""Laminar: workflows as plain Python classes, run anywhere, every value kept.

``from laminar import Flow, Layer, Parameters, Execution`` (and ``Help``, for declared parameters). The public modules are this one,
:mod:`laminar.configurations` (datastores, executors, hooks, layers, serde, schedulers),
:mod:`laminar.types`, :mod:`laminar.errors`, :mod:`laminar.plugins` (for plugin authors) and
:mod:`laminar.testing`; every ``laminar._*`` module is internal.
"""

from typing import Any

from laminar._app.execution import Execution
from laminar._app.flow import Flow
from laminar._model.layer import Layer, Parameters
from laminar._model.parameters import Help

__all__ = ["Execution", "Flow", "Help", "Layer", "Parameters"]


def __getattr__(name: str) -> Any:
    """``laminar.__version__``, read from the installed metadata when asked for: ``importlib.metadata``
    is not imported by ``import laminar`` alone."""
    if name != "__version__":
        raise AttributeError(f"module 'laminar' has no attribute {name!r}")
    import importlib.metadata

    try:
        version = importlib.metadata.version("laminar-core")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version
