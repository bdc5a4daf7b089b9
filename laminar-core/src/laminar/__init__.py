"""Laminar: workflows as plain Python classes, run anywhere, every value kept.

``from laminar import Flow, Layer, Parameters, Execution``
"""

from laminar._model.execution import Execution
from laminar._model.flow import Flow
from laminar._model.layer import Layer, Parameters

__all__ = ["Execution", "Flow", "Layer", "Parameters"]
__version__ = "0.1.0"
