"""Executors: where layer splits run. ``Thread`` and ``Process`` ship with core; Dask is a plugin."""

from laminar.runtime.executor import Executor
from laminar.runtime.process import Process
from laminar.runtime.thread import Thread

__all__ = ["Executor", "Process", "Thread"]
