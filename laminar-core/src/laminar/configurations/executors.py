"""Executors: where layer splits run. ``Thread`` and ``Process`` ship with core; Dask is a plugin."""

from laminar._runtime.executor import Executor
from laminar._runtime.process import Process
from laminar._runtime.thread import Thread

__all__ = ["Executor", "Process", "Thread"]
