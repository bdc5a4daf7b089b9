"""Shipping a flow to worker processes: pickled once per execution, unpickled once per worker.

The process executor and the Dask executor both send each worker the pickled flow once, under a
token, and afterwards only small :class:`SplitTask` messages that travel without it; the worker
keeps the unpickled flow by token and puts it back into each task.
"""

from __future__ import annotations

import dataclasses
import io
import marshal
import threading
import types
import uuid
from collections import ChainMap
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

if TYPE_CHECKING:
    from laminar._model.flow import FlowDefinition
    from laminar._runtime.task import SplitTask


class PackedFlow(NamedTuple):
    token: str
    payload: bytes


def _code_from_marshal(data: bytes) -> types.CodeType:
    code: types.CodeType = marshal.loads(data)
    return code


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    """Code shipped with its file name, so a worker's tracebacks name the user's file and line.

    (cloudpickle renames shipped code to ``<dynamic-code>``; a worker runs the same interpreter as
    the scheduler, which is what ``marshal`` needs.)
    """
    return (_code_from_marshal, (marshal.dumps(code),))


class _FlowPickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


def dumps_flow(flow: FlowDefinition) -> bytes:
    """``flow`` pickled by cloudpickle, keeping the file names of the code it ships by value."""
    buffer = io.BytesIO()
    _FlowPickler(buffer, protocol=5).dump(flow)
    return buffer.getvalue()


class FlowPacker:
    """The sending side: one payload per flow object, so a flow is pickled once per execution."""

    def __init__(self) -> None:
        self._packed: dict[int, tuple[FlowDefinition, PackedFlow]] = {}

    def pack(self, flow: FlowDefinition) -> PackedFlow:
        found = self._packed.get(id(flow))
        if found is None or found[0] is not flow:
            found = (flow, PackedFlow(uuid.uuid4().hex, dumps_flow(flow)))
            self._packed[id(flow)] = found
        return found[1]


def without_flow(task: SplitTask) -> SplitTask:
    """``task`` as it travels to a worker that already holds its flow."""
    return dataclasses.replace(task, flow=None)  # type: ignore[arg-type]


class FlowNotInstalled(LookupError):
    """No flow is installed under that token in this worker."""


class FlowUnpacker:
    """The worker side: the flows installed by token, each unpickled on its first use."""

    def __init__(self) -> None:
        self._payloads: dict[str, bytes] = {}
        self._flows: dict[str, FlowDefinition] = {}
        self._lock = threading.Lock()

    def install(self, token: str, payload: bytes) -> None:
        with self._lock:
            self._payloads[token] = payload

    def remove(self, token: str) -> None:
        with self._lock:
            self._payloads.pop(token, None)
            self._flows.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._payloads.clear()
            self._flows.clear()

    def installed(self) -> list[str]:
        """The tokens installed, in the order they were."""
        return list(self._payloads)

    def unpacked(self) -> dict[str, FlowDefinition]:
        """The flows unpickled so far, by token."""
        return dict(self._flows)

    def flow(self, token: str) -> FlowDefinition:
        """The flow installed as ``token``; :class:`FlowNotInstalled` if none is.

        Whatever unpickling raises (importing the flow's module, say) passes through as it is.
        """
        flow = self._flows.get(token)
        if flow is not None:
            return flow
        with self._lock:
            flow = self._flows.get(token)
            if flow is None:
                payload = self._payloads.get(token)
                if payload is None:
                    raise FlowNotInstalled(token)
                flow = self._flows[token] = cloudpickle.loads(payload)
        return flow

    def attach(self, token: str, task: SplitTask) -> SplitTask:
        """Put the flow installed as ``token`` back into ``task``."""
        task.flow = self.flow(token)
        return task
