"""Arrow IPC and Parquet protocols for pandas DataFrames and Arrow tables.

Both are *safe*: reading parses Arrow or Parquet and runs no code the stored bytes choose (pyarrow
reads no pickled extension types since 14.0.1, the least version this distribution accepts), so a
datastore opened untrusted reads them. Laminar stores their bytes as written (``compress = False``):
an artifact is an ordinary ``.arrows`` stream or ``.parquet`` file that pyarrow, pandas, polars or
DuckDB open as they are. Which of the two a value was stored as is recorded with it, so readers need
no configuration.

Each refuses, when writing, a frame Arrow would give back as something else: column labels that are
not unique strings, and columns Arrow cannot type (pyarrow's error says which). A frame's index is
kept (pandas metadata in the schema); ``DataFrame.attrs`` are not.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from laminar.plugins import Protocol

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where a value is written or read, not here: every Laminar process loads this
# module through the plugin's entry point (to read what these protocols stored), and importing
# pyarrow would cost each of them its import time (docs/performance.md), the scripts, the `laminar`
# command and worker processes alike, whether they ever touch a columnar value or not.

#: Schema metadata saying what was stored, so a pandas frame reads back as one and a Table as a Table.
KIND = b"laminar.kind"
PANDAS, TABLE = b"pandas.DataFrame", b"pyarrow.Table"


def _to_table(value: Any, protocol: str) -> pa.Table:
    import pyarrow as pa

    if isinstance(value, pa.Table) and type(value) is pa.Table:
        return value.replace_schema_metadata({**(value.schema.metadata or {}), KIND: TABLE})
    import pandas

    if type(value) is not pandas.DataFrame:
        raise TypeError(f"{protocol} stores pandas.DataFrame and pyarrow.Table, not {type(value).__name__}")
    columns = value.columns
    if isinstance(columns, pandas.MultiIndex) or not all(type(label) is str for label in columns):
        raise TypeError(
            f"{protocol} cannot store a DataFrame whose column labels are not all str (they would read "
            f"back as str): {list(columns)[:5]!r}"
        )
    if not columns.is_unique:
        raise TypeError(f"{protocol} cannot store a DataFrame with duplicate column labels")
    try:
        table = pa.Table.from_pandas(value)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise TypeError(f"{protocol} cannot store this DataFrame as Arrow columns: {error}") from None
    return table.replace_schema_metadata({**(table.schema.metadata or {}), KIND: PANDAS})


def _from_table(table: pa.Table) -> Any:
    metadata = table.schema.metadata or {}
    if metadata.get(KIND) == PANDAS:
        return table.to_pandas()
    if KIND in metadata:  # the Table as it was given: without the mark Laminar added
        rest = {key: item for key, item in metadata.items() if key != KIND}
        return table.replace_schema_metadata(rest or None)
    return table


def _buffer_from(file: BinaryIO, size: int) -> pa.Buffer:
    """All ``size`` bytes of ``file`` in one fresh Arrow buffer (Arrow reads it without copying)."""
    import pyarrow as pa

    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        got = file.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            raise ValueError(f"the stream ends after {filled} of the {size} bytes recorded")
        filled += got
    return buffer


class _Columnar(Protocol[Any]):
    """What the Arrow protocols share: stored as written, read whole into one Arrow buffer."""

    safe = True
    compress = False

    def load(self, file: BinaryIO) -> Any:
        import pyarrow as pa

        return self._read(pa.py_buffer(file.read()))

    def gather(self, file: BinaryIO, size: int) -> Callable[[], Any] | None:
        buffer = _buffer_from(file, size)
        return lambda: self._read(buffer)

    def _read(self, buffer: pa.Buffer) -> Any:
        raise NotImplementedError

    def dumps(self, value: Any) -> bytes:
        file = io.BytesIO()
        self.dump(value, file)
        return file.getvalue()

    def loads(self, data: bytes) -> Any:
        import pyarrow as pa

        return self._read(pa.py_buffer(data))


class ArrowIPC(_Columnar):
    """A DataFrame or Table as an Arrow IPC stream (``pyarrow.ipc.open_stream`` reads it).

    The fastest columnar form: no encoding, and a large one is read in one pass into one buffer the
    columns are read from without copying (a DataFrame then costs one conversion to pandas). Bytes
    as large as the data; pass ``compression="zstd"`` (or ``"lz4"``) for Arrow's own buffer
    compression, which every Arrow reader undoes.
    """

    def __init__(self, compression: str | None = None) -> None:
        self.compression = compression

    @property
    def name(self) -> str:
        return "laminar_arrow.ipc"

    def dump(self, value: Any, file: BinaryIO) -> None:
        import pyarrow.ipc

        table = _to_table(value, self.name)
        options = pyarrow.ipc.IpcWriteOptions(compression=self.compression)
        with pyarrow.ipc.new_stream(file, table.schema, options=options) as writer:
            writer.write_table(table)

    def _read(self, buffer: pa.Buffer) -> Any:
        import pyarrow.ipc

        with pyarrow.ipc.open_stream(buffer) as reader:
            return _from_table(reader.read_all())


class Parquet(_Columnar):
    """A DataFrame or Table as a Parquet file (``pyarrow.parquet.read_table`` reads it).

    The most widely read and usually the smallest form (columns encoded and compressed, zstd by
    default), at the cost of encoding on write and decoding on read: slower than Arrow IPC.
    """

    def __init__(self, compression: str | None = "zstd") -> None:
        self.compression = compression

    @property
    def name(self) -> str:
        return "laminar_arrow.parquet"

    def dump(self, value: Any, file: BinaryIO) -> None:
        import pyarrow.parquet as pq

        pq.write_table(_to_table(value, self.name), file, compression=self.compression or "none")

    def _read(self, buffer: pa.Buffer) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return _from_table(pq.read_table(pa.BufferReader(buffer)))
