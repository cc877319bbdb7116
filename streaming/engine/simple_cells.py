"""The cells with nothing to merge: their rows built column-wise, no Python object each.

In a batch over many groups most cells of an open window get exactly one partial (one
input partition saw the group, in one pane) and have no stored row to merge with. Such
a cell's row is its partial as it came: the sketch's bytes unchanged. :func:`single_open`
finds them among the merge stage's input in a few NumPy passes, and
:func:`sketch_table` builds their rows as Arrow columns; the merge stage
(:mod:`streaming.engine.reduce`) handles the other cells one by one. The rows are the
same as the one-by-one path would make (``tests/streaming/test_reduce.py`` compares
them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streaming.spec.model import Spec
from streaming.units import US


def _ints(col: Any, dtype: Any) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return np.asarray(col.fill_null(-1).to_numpy(zero_copy_only=False), dtype=dtype)


def cell_ids(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the rank of its combination of ``columns`` (integer arrays of one length)
    among the distinct ones, in lexicographic order; and the first row of each.

    Each column is ranked alone and folded into the running rank, which is ranked again,
    so the key stays below rows² and every sort is of plain int64 (a structured
    ``np.unique`` compares rows as bytes, several times slower)."""
    n = len(columns[0])
    key = np.zeros(n, dtype=np.int64)
    for i, col in enumerate(columns):
        values, rank = np.unique(col, return_inverse=True)
        key = key * values.size + rank.reshape(-1)
        if i < len(columns) - 1:
            key = np.unique(key, return_inverse=True)[1].reshape(-1)
    _, first, owner = np.unique(key, return_index=True, return_inverse=True)
    return owner.reshape(-1), first


def single_open(rows: pa.Table, partial_kind: str, spec: Spec, watermark_ms: int,
                with_sketch: bool) -> np.ndarray:
    """Mask of the ``partial_kind`` rows whose cell has no other row in ``rows`` and whose
    window the watermark has not closed."""
    n = rows.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    g = rows.column("g").combine_chunks()
    codes = pc.dictionary_encode(g).indices.to_numpy(zero_copy_only=False)
    w = _ints(rows.column("w"), np.int64)
    ws = _ints(rows.column("ws"), np.int64)
    keys = [w, _ints(rows.column("s"), np.int64), ws, codes] if with_sketch else [w, ws, codes]
    owner, first = cell_ids(*keys)
    once = np.bincount(owner, minlength=first.size)[owner] == 1
    kind = np.asarray(pc.equal(rows.column("kind"), partial_kind).to_numpy(
        zero_copy_only=False), dtype=bool)
    sizes = np.array([win.size_s * US for win in spec.windows], dtype=np.int64)
    ends = ws + sizes[w]
    return once & kind & (ends > watermark_ms * 1000)


def group_column(w: np.ndarray, keys: pa.Array, spec: Spec, typ: pa.DataType) -> pa.Array:
    """The ``group`` map column (group field -> value) of rows with group keys ``keys``
    (canonical JSON lists of strings or nulls) of windows ``w``.

    A key of one plain string (``["v"]``: no quote or backslash inside) is cut out of
    its text by Arrow; other keys are parsed as JSON, in one go."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    keys = keys.cast(pa.string())
    fields = [list(win.group_by) for win in spec.windows]
    per_row = np.array([len(f) for f in fields], dtype=np.int64)[w]
    offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    if per_row.size and per_row.max() == 1:
        one = np.flatnonzero(per_row == 1)
        names = pa.array(np.array([f[0] if f else "" for f in fields], dtype=object)[w[one]],
                         pa.string())
        mine = keys.take(pa.array(one)) if one.size < len(keys) else keys
        plain = pc.match_substring_regex(mine, r'^\["[^"\\]*"\]$').fill_null(False)
        items = pc.if_else(plain, pc.utf8_slice_codeunits(mine, 2, -2),
                           pa.nulls(len(mine), pa.string()))
        other = np.flatnonzero(~np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool))
        if other.size:
            parsed = orjson.loads("[" + ",".join(mine.take(pa.array(other)).to_pylist()) + "]")
            values = np.asarray(items.to_pylist(), dtype=object)
            values[other] = [row[0] for row in parsed]
            items = pa.array(values.tolist(), pa.string())
    else:
        parsed = orjson.loads("[" + ",".join(keys.to_pylist()) + "]") if len(keys) else []
        names = pa.array([name for wi in w.tolist() for name in fields[wi]], pa.string())
        items = pa.array([v for row in parsed for v in row], pa.string())
    out = pa.MapArray.from_arrays(pa.array(offsets), names, items)
    return out.cast(typ) if out.type != typ else out


def key_columns(rows: pa.Table, spec: Spec, schema: pa.Schema) -> dict[str, Any]:
    """The key columns of the rows' table rows: window, start, end, group."""
    w = _ints(rows.column("w"), np.int64)
    ws = _ints(rows.column("ws"), np.int64)
    sizes = np.array([win.size_s * US for win in spec.windows], dtype=np.int64)
    names = np.array([win.name for win in spec.windows], dtype=object)
    g = rows.column("g").combine_chunks().cast(pa.string())
    ts = schema.field("window_start").type
    return {"window_name": pa.array(names[w], pa.string()),
            "window_start": pa.array(ws, pa.int64()).cast(ts),
            "window_end": pa.array(ws + sizes[w], pa.int64()).cast(ts),
            "group_key": g,
            "group": group_column(w, g, spec, schema.field("group").type)}


def sketch_table(rows: pa.Table, spec: Spec, schema: pa.Schema, batch_id: int,
                 updated_us: int) -> pa.Table:
    """The ``sketches`` rows (``schema``, without ``final``) of single partials ``rows``:
    their bytes as they came, no estimate (a partial row's are merged on read)."""
    n = rows.num_rows
    cols = key_columns(rows, spec, schema)
    w = _ints(rows.column("w"), np.int64)
    s = _ints(rows.column("s"), np.int64)
    width = max(len(win.sketches) for win in spec.windows)
    meta = {}
    for wi, win in enumerate(spec.windows):
        for si, sk in enumerate(win.sketches):
            meta[wi * width + si] = (sk.name, sk.kind, sk.field)
    code = w * width + s
    for i, name in enumerate(("sketch_name", "kind", "field")):
        lookup = np.array([meta.get(c, ("",) * 3)[i] for c in range(len(spec.windows) * width)],
                          dtype=object)
        cols[name] = pa.array(lookup[code], pa.string())
    cols["bytes"] = rows.column("b").combine_chunks().cast(pa.binary())
    cols["last_batch"] = pa.array(np.full(n, batch_id, dtype=np.int64))
    cols["updated_at"] = pa.array(np.full(n, updated_us, dtype=np.int64)).cast(
        schema.field("updated_at").type)
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _decimal_column(unscaled: list[Any], typ: pa.DataType) -> pa.Array:
    """Exact sums (integers of 1e-9, or None) as a DECIMAL(38, 9) column: the integers are
    the decimal's own unscaled value, laid out as 128-bit two's complement."""
    import decimal

    ints = [0 if v is None else int(v) for v in unscaled]
    if ints and max(map(abs, ints)) >= 1 << 63:  # past 64 bits: the exact slow way
        ctx = decimal.Context(prec=38)
        return pa.array([None if v is None else ctx.scaleb(decimal.Decimal(int(v)), -9)
                         for v in unscaled], typ)
    low = np.array(ints, dtype=np.int64)
    words = np.empty((low.size, 2), dtype=np.int64)
    words[:, 0] = low
    words[:, 1] = np.where(low < 0, -1, 0)
    mask = pa.array([v is None for v in unscaled], pa.bool_())
    valid = pc.invert(mask).buffers()[1] if mask.true_count else None
    return pa.Array.from_buffers(typ, low.size, [valid, pa.py_buffer(words.tobytes())])


def metric_table(rows: pa.Table, spec: Spec, schema: pa.Schema, metric_names: list[str],
                 batch_id: int, updated_us: int) -> pa.Table:
    """The ``aggregates`` rows (``schema``, without ``final``) of single partials ``rows``:
    their metrics parsed from JSON in one go and laid out as columns."""
    import decimal

    n = rows.num_rows
    cols = key_columns(rows, spec, schema)
    blobs = rows.column("b").combine_chunks().to_pylist()
    values = orjson.loads(b"[" + b",".join(blobs) + b"]") if blobs else []
    ctx = decimal.Context(prec=38)
    for c in metric_names:
        typ = schema.field(c).type
        if c.startswith("avg_"):
            s, k = f"sum_{c[4:]}", f"n_{c[4:]}"
            cols[c] = pa.array([float(ctx.scaleb(decimal.Decimal(v[s]), -9)) / v[k]
                                if v.get(s) is not None and v.get(k) else None
                                for v in values], typ)
        elif c.startswith("sum_"):
            cols[c] = _decimal_column([v.get(c) for v in values], typ)
        else:
            cols[c] = pa.array([v.get(c) for v in values], typ)
    cols["late_rows"] = pa.array([v.get("late_rows") or 0 for v in values], pa.int64())
    cols["last_batch"] = pa.array(np.full(n, batch_id, dtype=np.int64))
    cols["updated_at"] = pa.array(np.full(n, updated_us, dtype=np.int64)).cast(
        schema.field("updated_at").type)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
