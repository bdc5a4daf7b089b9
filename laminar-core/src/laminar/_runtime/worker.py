"""The worker process of the process executor: runs splits it is sent, one at a time, until EOF.

A batch of splits (a list of tasks) runs one split after another, each one's answer sent as it ends.

Started as ``python -m laminar._runtime.worker RESULT_FD``, or forked from the template
(``laminar._runtime.template``), which enters :func:`serve` with the flow's modules imported. Tasks
arrive on stdin; outcomes go back on the file descriptor ``RESULT_FD``, so the layer's own stdout
and stderr stay the user's.
The flow arrives pickled once per worker, on its own as soon as the worker starts (a task of
``None``: the worker imports what the flow needs and answers ``ok``), and is reused for every split.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, BinaryIO

import cloudpickle

from laminar._runtime import environment, tracebacks, wire
from laminar._runtime.shipping import FlowUnpacker


def _send(out: Any, message: Any) -> None:
    out.write(wire.encode(message))
    out.flush()


def _error_message(error: BaseException) -> tuple[str, Any, str]:
    """The error pickled (the layer's frames ride along, see ``tracebacks.remember``), or its text."""
    tracebacks.remember(error)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        payload = cloudpickle.dumps(error, protocol=5)
        cloudpickle.loads(payload)
    except Exception:
        payload = None
    return (
        "error",
        payload,
        f"{type(error).__name__}: {error}\n\nTraceback in worker process {os.getpid()}:\n{text}",
    )


def main() -> None:
    environment.mark_worker()
    stdin = sys.stdin.buffer
    out = os.fdopen(int(sys.argv[1]), "wb")
    path, cwd = wire.read_message(stdin)
    sys.path[:] = path
    os.chdir(cwd)
    serve(stdin, out)


def serve(stdin: BinaryIO, out: BinaryIO) -> None:
    """Run the splits that arrive on ``stdin`` until EOF (a worker forked from the template starts here)."""
    from laminar._runtime.split import run_split, run_splits

    flows = FlowUnpacker()
    while True:
        try:
            token, flow_payload, task = wire.read_message(stdin)
        except EOFError:
            return
        owed = len(task) if isinstance(task, list) else 1  # answers due: one per split
        try:
            if flow_payload is not None:
                flows.clear()  # one flow at a time per worker
                flows.install(token, flow_payload)
            if task is None:  # sent the flow ahead of its first split: its modules are imported now
                flows.flow(token)
                _send(out, ("ok", None, None))
                continue
            if isinstance(task, list):  # a batch: each split's answer goes back as it ends
                for result in run_splits([flows.attach(token, each) for each in task]):
                    _send(
                        out,
                        _error_message(result) if isinstance(result, BaseException) else ("ok", result, None),
                    )
                    owed -= 1
                continue
            outcome = run_split(flows.attach(token, task))
        except BaseException as error:
            message = _error_message(error)
            for _ in range(owed):  # every split not answered yet meets the error
                _send(out, message)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                return
            continue
        _send(out, ("ok", outcome, None))


if __name__ == "__main__":
    main()
