"""The exception classes of the earlier laminar, kept so that code catching them still works.

Every error Laminar raises on purpose derives from one of these (see :mod:`laminar.errors` for the
precise classes): ``except FlowError`` still catches a duplicate layer or a bad configuration.
"""

from __future__ import annotations


class FlowError(Exception):
    """A flow's definition or configuration is invalid (cycle, duplicate layer, bad option, unknown plugin)."""


class LayerError(Exception):
    """A layer could not run or could not store what it produced."""


class ExecutionError(Exception):
    """An execution could not be stored or read (a storage failure, a damaged or missing record)."""


class SchedulerError(Exception):
    """The scheduler could not run an execution as asked (an executor broke its contract)."""


__all__ = ["ExecutionError", "FlowError", "LayerError", "SchedulerError"]
