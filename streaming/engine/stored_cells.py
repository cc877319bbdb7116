"""Cells with several rows (a window being compacted), merged column-wise with Arrow.

When the watermark closes a window, the merge stage reads its partial rows back, one
per batch that touched each cell, and merges them into one final row per cell. For
``aggregates`` that is a group-by: counts, exact sums (DECIMAL(38, 9), added as
integers by Arrow) and ``late_rows`` add, minima and maxima combine, ``last_batch``
takes the greatest; :func:`merge_metric_rows` runs it as one Arrow hash aggregation
over the stored rows and this batch's partials of the same cells. Stored rows travel
through Spark's shuffle packed into one fixed-width binary value each
(:func:`pack_metrics`; :func:`unpack_metrics` reads them back without a Python object per
row).

A file written by merge task p of n holds only cells Spark's shuffle sends to task p;
when a batch with n merge tasks compacts it, task p reads it itself
(:func:`task_rows`), told which task it is by a marker row (:func:`marker_frame`)
whose key :func:`spark_hash` (Spark's own partitioning hash) sends there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streaming.engine.aggregates import stored_columns
from streaming.engine.onepass import PASS_DDL, PASS_SCHEMA
from streaming.engine.simple_cells import group_column
from streaming.spec.model import Spec
from streaming.units import US

_WIDTH = {"long": 8, "double": 8, "decimal": 16}
_ARROW = {"long": pa.int64(), "double": pa.float64(), "decimal": pa.decimal128(38, 9)}


def packed_columns(spec: Spec) -> list[tuple[str, str]]:
    """The stored columns a packed row holds, in order: the metrics, then ``late_rows``."""
    return [*stored_columns(spec), ("late_rows", "long")]


def pack_metrics(rows: pa.Table, spec: Spec) -> pa.Array:
    """Each stored row's metric columns as one binary value: a validity byte per column,
    then each value little-endian (8 bytes; 16 for a decimal's unscaled integer)."""
    n = rows.num_rows
    cols = packed_columns(spec)
    valid = np.zeros((n, len(cols)), dtype=np.uint8)
    parts = [valid]
    for i, (name, typ) in enumerate(cols):
        col = (rows.column(name).combine_chunks() if name in rows.column_names
               else pa.nulls(n, _ARROW[typ]))
        if typ == "decimal":
            col = col.cast(_ARROW[typ])
        valid[:, i] = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8)
        if typ == "decimal":
            data = np.frombuffer(col.buffers()[1], dtype=np.uint8)
            parts.append(data[16 * col.offset:16 * (col.offset + n)].reshape(n, 16))
        else:
            filled = col.cast(_ARROW[typ]).fill_null(0).to_numpy(zero_copy_only=False)
            parts.append(np.ascontiguousarray(filled).view(np.uint8).reshape(n, 8))
    matrix = np.ascontiguousarray(np.hstack(parts))
    width = matrix.shape[1]
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n,
                                                 [None, pa.py_buffer(matrix.tobytes())])
    return fixed.cast(pa.binary())


def unpack_metrics(blobs: pa.Array, spec: Spec) -> dict[str, pa.Array]:
    """The columns :func:`pack_metrics` packed, from its binary values."""
    cols = packed_columns(spec)
    n = len(blobs)
    width = len(cols) + sum(_WIDTH[t] for _, t in cols)
    arr = blobs.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    matrix = data[offsets[0]:offsets[-1]].reshape(n, width)
    out = {}
    at = len(cols)
    for i, (name, typ) in enumerate(cols):
        size = _WIDTH[typ]
        valid = np.ascontiguousarray(matrix[:, i]).astype(bool)
        bits = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
        raw = pa.py_buffer(np.ascontiguousarray(matrix[:, at:at + size]).tobytes())
        out[name] = pa.Array.from_buffers(_ARROW[typ], n, [bits, raw])
        at += size
    return out


def _how(name: str) -> str:
    if name.startswith("min_"):
        return "min"
    if name.startswith("max_"):
        return "max"
    return "sum"


def merge_metric_rows(parts: list[pa.Table], spec: Spec, schema: pa.Schema, now_us: int
                      ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One row per cell of the row-shaped tables ``parts`` (``schema`` plus an int8
    ``stored`` column), merged; with per row the window end (µs) and whether a stored
    row went into it."""
    rows = pa.concat_tables(parts)
    metrics = [name for name, _ in packed_columns(spec)]
    aggs = [(name, _how(name)) for name in metrics] + [("last_batch", "max"),
                                                       ("stored", "max")]
    keys = ["window_name", "window_start", "group_key"]
    merged = rows.group_by(keys, use_threads=False).aggregate(aggs)
    names = [w.name for w in spec.windows]
    w = np.asarray(pc.index_in(merged.column("window_name"), pa.array(names)).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    start = np.asarray(merged.column("window_start").cast(pa.int64()).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    sizes = np.array([win.size_s * US for win in spec.windows], dtype=np.int64)
    end = start + sizes[w]
    ts = schema.field("window_start").type
    cols: dict[str, Any] = {
        "window_name": merged.column("window_name"), "window_start": merged.column(
            "window_start"), "window_end": pa.array(end, pa.int64()).cast(ts),
        "group_key": merged.column("group_key"),
        "group": group_column(w, merged.column("group_key"), spec,
                              schema.field("group").type),
        "last_batch": merged.column("last_batch_max"),
        "updated_at": pa.array(np.full(len(end), now_us, dtype=np.int64)).cast(
            schema.field("updated_at").type)}
    for name in metrics:
        cols[name] = merged.column(f"{name}_{_how(name)}").cast(schema.field(name).type)
    for field in schema:
        if field.name.startswith("avg_"):  # as a single row's: float(exact sum) / n
            s = cols[f"sum_{field.name[4:]}"].to_pylist()
            k = cols[f"n_{field.name[4:]}"].to_pylist()
            cols[field.name] = pa.array([float(a) / b if a is not None and b else None
                                         for a, b in zip(s, k, strict=True)], field.type)
    stored = np.asarray(merged.column("stored_max").to_numpy(zero_copy_only=False)) > 0
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return table, end, stored


def stored_metric_rows(rows: pa.Table, spec: Spec, schema: pa.Schema, now_us: int
                       ) -> pa.Table:
    """Merge-stage ``A`` rows (stored rows, packed) as row-shaped tables: ``schema`` plus
    ``stored`` = 1."""
    from streaming.engine.simple_cells import key_columns

    n = rows.num_rows
    cols = key_columns(rows, spec, schema)
    cols.update(unpack_metrics(rows.column("b").combine_chunks(), spec))
    cols["last_batch"] = rows.column("off").combine_chunks().cast(pa.int64())
    cols["updated_at"] = pa.array(np.full(n, now_us, dtype=np.int64)).cast(
        schema.field("updated_at").type)
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema).append_column(
        "stored", pa.array(np.ones(n, dtype=np.int8)))


def stored_partials(spec: Spec, table: str, rows: pa.Table) -> pa.Table:
    """Rows of ``aggregates`` or ``sketches`` read back, as merge-stage input rows: ``A``
    (the metrics packed, :func:`pack_metrics`) or ``S`` (the sketch's bytes), their last
    batch in ``off``."""
    n = rows.num_rows
    names = pa.array([w.name for w in spec.windows])
    wi = pc.index_in(rows.column("window_name"), names).fill_null(-1).cast(pa.int32())
    start = rows.column("window_start").cast(pa.int64())
    cols: dict[str, Any] = {"w": wi, "ws": start, "pane": start,
                            "g": rows.column("group_key").cast(pa.string()),
                            "off": rows.column("last_batch").cast(pa.int64())}
    if table == "aggregates":
        cols["kind"] = pa.array(["A"] * n, pa.string())
        cols["b"] = pack_metrics(rows, spec)
    else:
        pairs = [f"{w.name}\x00{sk.name}" for w in spec.windows for sk in w.sketches]
        index = [si for w in spec.windows for si, _ in enumerate(w.sketches)]
        both = pc.binary_join_element_wise(rows.column("window_name").cast(pa.string()),
                                           rows.column("sketch_name").cast(pa.string()),
                                           "\x00")
        found = pc.index_in(both, pa.array(pairs, pa.string()))
        cols["s"] = pc.take(pa.array(index + [-1], pa.int32()),
                            found.fill_null(len(index)))
        cols["kind"] = pa.array(["S"] * n, pa.string())
        cols["b"] = rows.column("bytes").cast(pa.binary())
    arrays = []
    for f in PASS_SCHEMA:
        col = cols.get(f.name)
        if col is None:
            arrays.append(pa.nulls(n, f.type))
        else:
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            arrays.append(col.cast(f.type))
    out = pa.Table.from_arrays(arrays, schema=PASS_SCHEMA)
    if table != "aggregates":
        out = out.filter(pc.greater_equal(out.column("s"), 0))
    return out.filter(pc.greater_equal(out.column("w"), 0))


def make_stored_reader(spec: Spec, table: str):
    """The ``mapInArrow`` function turning stored rows (read by Spark) into partials."""

    def convert(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield from stored_partials(spec, table, pa.Table.from_batches([batch])
                                           ).to_batches()

    return convert


def read_stored(spec: Spec, table: str, root: str, path: str, columns: list[str]) -> pa.Table:
    """The rows of one stored file of ``table`` (``path`` relative to its folder ``root``)
    as merge-stage input rows (:func:`stored_partials`)."""
    import os

    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(root, path), columns=columns, partitioning=None)
    return stored_partials(spec, table, rows)


#: the kind of the one row per merge task the driver adds to a Spark job: its ``g`` is
#: one Spark's shuffle sends to task ``off``, so that every task runs (and reads its
#: stored files) even when no partial reaches it
MARKER = "k"


_M32 = 0xFFFFFFFF


def _mix(h: int, k: int) -> int:
    k = (k * 0xCC9E2D51) & _M32
    k = ((k << 15) | (k >> 17)) & _M32
    h ^= (k * 0x1B873593) & _M32
    h = ((h << 13) | (h >> 19)) & _M32
    return (h * 5 + 0xE6546B64) & _M32


def _fmix(h: int, length: int) -> int:
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def spark_hash(w: int, ws: int, g: str) -> int:
    """Spark's ``hash(w, ws, g)`` of an INT, a BIGINT and a STRING (Murmur3 x86 32,
    seed 42, each column's hash the next one's seed; a string's trailing bytes mixed
    one by one, sign-extended, as Spark does): what its hash partitioning takes modulo
    the number of partitions."""
    h = _fmix(_mix(42, w & _M32), 4)
    h = _fmix(_mix(_mix(h, ws & _M32), (ws >> 32) & _M32), 8)
    data = g.encode()
    aligned = len(data) - len(data) % 4
    seed = h
    for i in range(0, aligned, 4):
        seed = _mix(seed, int.from_bytes(data[i:i + 4], "little"))
    for byte in data[aligned:]:
        seed = _mix(seed, (byte - 256 if byte >= 128 else byte) & _M32)
    h = _fmix(seed, len(data))
    return h - (1 << 32) if h >= 1 << 31 else h


def marker_frame(spark: Any, n: int) -> Any:
    """One row per merge task (kind :data:`MARKER`, its index in ``off``) whose key
    Spark's shuffle sends to that task (:func:`spark_hash`), as an inline table of the
    JVM (no Python worker evaluates it)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(spark_hash(-1, 0, str(i)) % n, str(i))
        i += 1
    values = {"kind": lambda p, g: f"'{MARKER}'", "w": lambda p, g: "-1",
              "ws": lambda p, g: "0", "g": lambda p, g: f"'{g}'", "off": lambda p, g: str(p)}
    types = {f.name: ddl for f, ddl in zip(PASS_SCHEMA, _ddl_types(PASS_DDL), strict=True)}
    rows = ", ".join("(" + ", ".join(
        f"CAST({values[name](p, g) if name in values else 'NULL'} AS {types[name]})"
        for name in PASS_SCHEMA.names) + ")" for p, g in sorted(found.items()))
    return spark.sql(f"SELECT * FROM VALUES {rows} AS t({', '.join(PASS_SCHEMA.names)})")


def _ddl_types(ddl: str) -> list[str]:
    """The column types of a flat DDL string (``name TYPE, ...``)."""
    return [part.strip().split(" ", 1)[1] for part in ddl.split(",")]


def task_rows(table: pa.Table, rctx: Any) -> tuple[pa.Table, int]:
    """A Spark merge task's rows without its marker, with the rows of the stored files
    bucketed for it (read here, not shuffled); and which task it is. ``rctx``: the
    batch's :class:`streaming.engine.reduce.ReduceContext`."""
    is_marker = pc.equal(table.column("kind"), MARKER)
    found = set(table.filter(is_marker).column("off").to_pylist())
    if len(found) != 1:
        raise RuntimeError(f"a merge task got markers {sorted(found)}, not one: Spark's "
                           "shuffle did not place them as planned")
    bucket = int(found.pop())
    from pyspark import TaskContext

    task = TaskContext.get()
    if task is not None and task.partitionId() != bucket:
        raise RuntimeError(f"merge task {task.partitionId()} got the marker of task {bucket}")
    frames = [table.filter(pc.invert(is_marker)).select(PASS_SCHEMA.names).cast(PASS_SCHEMA)]
    for name, by_bucket in rctx.stored.items():
        frames += [read_stored(rctx.spec, name, rctx.paths[name], path,
                               rctx.stored_columns[name]) for path in by_bucket.get(bucket, [])]
    return pa.concat_tables(frames), bucket
