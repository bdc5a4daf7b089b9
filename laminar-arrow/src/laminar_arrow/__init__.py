"""Columnar, safe serialization protocols for Laminar: the ``laminar[arrow]`` extra.

Opt in per datastore::

    import laminar_arrow
    from laminar.configurations import datastores

    datastore = laminar_arrow.use(datastores.Local(".laminar"))

From then on that datastore stores pandas DataFrames and Arrow Tables as Arrow IPC streams (or
Parquet files, ``format="parquet"``) and numpy arrays as ``.npy`` files: files other tools read as
they are, read back without running code (so also from a store opened untrusted). Other values still
go through the default protocol. What those protocols stored reads back in any process where
laminar-arrow is installed, whatever its datastores opted into (the plugin registers them for
reading). See ``docs/protocols.md`` for the trade-offs.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from laminar.configurations.serde import Npy
from laminar.plugins import Datastore

from laminar_arrow.protocols import ArrowIPC, Parquet

__all__ = ["ArrowIPC", "Parquet", "use"]

D = TypeVar("D", bound=Datastore)


def use(
    datastore: D,
    *,
    format: Literal["ipc", "parquet"] = "ipc",
    compression: str | None = None,
    pandas: bool = True,
    arrow: bool = True,
    numpy: bool = True,
) -> D:
    """Store DataFrames and Tables in ``datastore`` as Arrow IPC or Parquet, numpy arrays as ``.npy``.

    ``compression`` is the format's own (``"zstd"``, ``"lz4"`` for IPC; Parquet defaults to
    ``"zstd"``), so the stored files stay readable by any Arrow or Parquet reader. ``pandas``,
    ``arrow`` and ``numpy`` choose which types are registered. Returns ``datastore``.
    """
    if format == "ipc":
        protocol: ArrowIPC | Parquet = ArrowIPC(compression)
    elif format == "parquet":
        protocol = Parquet(compression or "zstd")
    else:
        raise ValueError(f"laminar_arrow.use(format=...) takes 'ipc' or 'parquet', not {format!r}")
    types: list[type] = []
    if arrow:
        import pyarrow

        types.append(pyarrow.Table)
    if pandas:
        try:
            import pandas as pd
        except ImportError:
            pass  # no pandas: no DataFrames to store
        else:
            types.append(pd.DataFrame)
    registry = datastore.protocols
    if types:
        registry.add(types, protocol)
    if numpy:
        import numpy as np

        registry.add([np.ndarray], Npy())
    return datastore
