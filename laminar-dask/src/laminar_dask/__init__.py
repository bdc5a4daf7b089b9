"""Run Laminar layer splits as Dask tasks: ``Flow(executor=Dask("tcp://host:8786"))`` or ``"dask://…"``."""

from laminar_dask.executor import Dask

__all__ = ["Dask"]
