"""Laminar: workflows as plain Python classes, run anywhere, every value kept.

``from laminar import Flow, Layer, Parameters, Execution`` (and ``Help``, for declared parameters). The public modules are this one,
:mod:`laminar.configurations` (datastores, executors, hooks, layers, serde, schedulers),
:mod:`laminar.types`, :mod:`laminar.errors`, :mod:`laminar.plugins` (for plugin authors) and
:mod:`laminar.testing`; every ``laminar._*`` module is internal.
"""

import importlib.metadata

from laminar._app.execution import Execution
from laminar._app.flow import Flow
from laminar._model.layer import Layer, Parameters
from laminar._model.parameters import Help

__all__ = ["Execution", "Flow", "Help", "Layer", "Parameters"]
try:
    __version__ = importlib.metadata.version("laminar-core")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
