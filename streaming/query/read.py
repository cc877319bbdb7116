"""Read the rows a query needs from a Delta table, without a JVM.

delta-rs (the ``deltalake`` package) opens the table's current snapshot and its
DataFusion engine runs one ``SELECT`` with the window name, sketch name and time
range in the ``WHERE`` clause, so files and row groups whose statistics exclude
them are skipped and the sketch bytes are decoded only for matching rows. Tables
written by delta-spark and by delta-rs read alike.

Measured on a year of hourly windows x 16 groups x 3 sketches in one Parquet
file (``benchmarks/bench_query.py``): DataFusion's first statement costs ~0.2 s
in a fresh process (its engine starts), later ones a few ms; reading the same
rows with pyarrow straight from the Parquet files was 3x slower, because
pyarrow decodes every sketch's bytes in a row group before filtering.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming.errors import ConfigError
from streaming.units import sql_str

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class RowFilter:
    """Which rows of a result table a query reads.

    ``equal`` maps string columns to the value they must hold; ``start_us`` and
    ``end_us`` keep rows with ``window_start >= start`` and ``window_end <= end``
    (µs since the epoch, UTC).
    """

    equal: tuple[tuple[str, str], ...]
    start_us: int | None = None
    end_us: int | None = None


def to_us(t: dt.datetime | None) -> int | None:
    """A zone-aware time as µs since the epoch."""
    if t is None:
        return None
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def micros(column: Any) -> Any:
    """An Arrow timestamp column (any unit or zone) as int64 NumPy µs since the epoch."""
    import numpy as np
    import pyarrow as pa

    typ = column.type
    if not pa.types.is_timestamp(typ):
        raise ConfigError(f"expected a timestamp column, found {typ}")
    values = numpy_of(column)[0].astype(np.int64, copy=False)
    per_us = {"s": -1_000_000, "ms": -1000, "us": 1, "ns": 1000}[typ.unit]
    return values * -per_us if per_us < 0 else values // per_us


def arrow_of(values: Any) -> Any:
    """A NumPy bool or int64 array as an Arrow array, zero-copy.

    ``pa.array(numpy_array)`` would do, but it imports pandas on first use to check
    its argument (0.15 s of a query's half second).
    """
    import numpy as np
    import pyarrow as pa

    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), values.size, [None, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), values.size, [None, pa.py_buffer(values)])


def arrow_strings(values: list[str]) -> Any:
    """Python strings as an Arrow string array, without :func:`pa.array` (see :func:`arrow_of`)."""
    import numpy as np
    import pyarrow as pa

    raw = [v.encode("utf-8") for v in values]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in raw]))).astype(np.int32)
    return pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets),
                                       pa.py_buffer(b"".join(raw)))


def numpy_of(arr: Any) -> tuple[Any, Any]:
    """(values, valid) of a fixed-width Arrow array as NumPy; values at null slots are 0."""
    import numpy as np
    import pyarrow as pa

    typ = arr.type
    if pa.types.is_timestamp(typ):  # int64 underneath, whatever the unit
        typ = pa.int64()
    n = len(arr)
    if pa.types.is_boolean(typ):
        raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        values = np.unpackbits(raw, bitorder="little")[arr.offset:arr.offset + n].astype(bool)
    else:
        dtype = np.dtype(typ.to_pandas_dtype()) if not pa.types.is_decimal(typ) else None
        if dtype is None:
            raise ValueError(f"numpy_of: {typ} has no NumPy equivalent")
        values = np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset:arr.offset + n]
    if arr.null_count == 0:
        return values, np.ones(n, dtype=bool)
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, bitorder="little")[arr.offset:arr.offset + n].astype(bool)
    return np.where(valid, values, values.dtype.type(0)), valid


def plain(arr: Any) -> Any:
    """Dictionaries and string views (DataFusion's output types) as plain Arrow arrays.

    Binary views stay: :func:`streaming.engine.sketch_merge.merge_blobs` reads them as they
    are, where a cast would copy every sketch's bytes.
    """
    import pyarrow as pa

    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if typ == pa.string_view():
        return arr.cast(pa.string())
    return arr


class TableReader:
    """One Delta table's current snapshot, queried with delta-rs's DataFusion.

    Raises:
        ConfigError: if ``path`` holds no Delta table.
    """

    def __init__(self, path: str | Path) -> None:
        from deltalake import DeltaTable

        self.path = str(path)
        if not (Path(self.path) / "_delta_log").is_dir():
            raise ConfigError(f"no Delta table at {self.path}")
        self._table = DeltaTable(self.path)
        self._builder: Any = None

    def _query(self, sql: str) -> Any:
        from deltalake import QueryBuilder

        if self._builder is None:
            self._builder = QueryBuilder().register("t", self._table)
        return _arrow(self._builder.execute(sql))

    def stream(self, columns: Sequence[str], where: RowFilter) -> Iterator[Any]:
        """The selected rows as ``pyarrow.RecordBatch`` es, as DataFusion decodes them.

        Consuming a batch while the next ones are decoded (in DataFusion's threads)
        overlaps reading and merging.
        """
        import pyarrow as pa
        from deltalake import QueryBuilder

        if self._builder is None:
            self._builder = QueryBuilder().register("t", self._table)
        yield from pa.RecordBatchReader.from_stream(
            self._builder.execute(_select(columns, where)))

    def read(self, columns: Sequence[str], where: RowFilter, *,
             keys: Sequence[str] = ()) -> Any:
        """A ``pyarrow.Table`` of ``keys`` + ``columns`` for the rows ``where`` selects.

        Strings come back as plain ``string`` arrays, binary columns as DataFusion gives
        them (``binary_view``).
        """
        import pyarrow as pa

        wanted = list(dict.fromkeys([*keys, *columns]))
        table = self._query(_select(wanted, where))
        return pa.Table.from_arrays([plain(table[n]) for n in wanted], names=wanted)


def _select(columns: Sequence[str], where: RowFilter) -> str:
    cond = [f"{_ident(c)} = {sql_str(v)}" for c, v in where.equal]
    if where.start_us is not None:
        cond.append(f"window_start >= {_sql_time(where.start_us)}")
    if where.end_us is not None:
        cond.append(f"window_end <= {_sql_time(where.end_us)}")
    return (f"SELECT {', '.join(_ident(c) for c in columns)} FROM t"
            f" WHERE {' AND '.join(cond) or 'TRUE'}")


def _arrow(stream: Any) -> Any:
    """An Arrow C stream (delta-rs returns arro3 objects) as a ``pyarrow.Table``.

    ``pa.table()`` would do, but it imports pandas to check its argument (0.2 s).
    """
    import pyarrow as pa

    return pa.RecordBatchReader.from_stream(stream).read_all()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'



def _sql_time(us: int) -> str:
    """A UTC timestamp literal, to the microsecond."""
    t = _EPOCH + dt.timedelta(microseconds=us)
    return f"TIMESTAMP '{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z'"
