"""A table's rows as a reader sees them: one row per cell, partial rows merged.

An open window holds a row per batch that touched a cell (``final`` false); a closed
one holds one row per cell (docs/architecture.md). :func:`merged_cells` merges the
rows of each cell from the table's own columns, without the spec: counts, sums and
``late_rows`` add, ``min_``/``max_`` combine, ``avg_f`` is ``sum_f / n_f``, sketch
bytes merge (they describe themselves) and their estimate, bounds, top-k and stats
are computed again (a partial row stores none). A cell is ``final`` when any of its rows
is.

Example:
    >>> import pyarrow as pa
    >>> rows = pa.table({"window_name": ["m", "m"], "window_start": [0, 0],
    ...                  "group_key": ["[]", "[]"], "count": [2, 3], "max_x": [1.5, 0.5],
    ...                  "final": [False, False], "last_batch": [0, 1]})
    >>> merged_cells(rows).select(["count", "max_x", "last_batch"]).to_pylist()
    [{'count': 5, 'max_x': 1.5, 'last_batch': 1}]
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

KEY = ("window_name", "window_start", "group_key")


def _combine(column: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if column.startswith("min_"):
        return min(a, b)
    if column.startswith("max_") or column in ("final", "last_batch", "updated_at"):
        return max(a, b)
    return a + b


def _merge_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    skip = (*KEY, "window_end", "group")
    for r in rows[1:]:
        for c, v in r.items():
            if c not in skip and not c.startswith("avg_"):
                out[c] = _combine(c, out.get(c), v)
    for c in out:
        if c.startswith("avg_"):
            s, n = out.get(f"sum_{c[4:]}"), out.get(f"n_{c[4:]}")
            out[c] = float(s) / n if s is not None and n else None
    return out


def _merge_sketches(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import sketches
    from streaming.engine.sketch_state import describe

    rows = sorted(rows, key=lambda r: r["bytes"])
    out = dict(rows[0])
    sketch = sketches.from_bytes(rows[0]["bytes"])
    for r in rows[1:]:
        sketch.merge(sketches.from_bytes(r["bytes"]))
        for c in ("final", "last_batch", "updated_at"):
            if c in r:
                out[c] = _combine(c, out.get(c), r[c])
    est, lo, hi, top, stats = describe(out["kind"], sketch)
    out.update(bytes=sketch.to_bytes(), estimate=est, lower_bound=lo, upper_bound=hi,
               top_k=None if top is None else [{"item": i, "count": c} for i, c in top],
               stats=list(stats.items()))
    return out


def merged_cells(rows: pa.Table) -> pa.Table:
    """One row per cell of ``aggregates`` or ``sketches`` rows (any other table as it is)."""
    names = rows.column_names
    if not all(k in names for k in KEY):
        return rows
    is_sketch = "bytes" in names and "sketch_name" in names
    key = (*KEY, "sketch_name") if is_sketch else KEY
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows.to_pylist():
        cells.setdefault(tuple(r[k] for k in key), []).append(r)
    if is_sketch:
        # a partial row keeps no estimate: described again, as a merged one is
        out = [v[0] if len(v) == 1 and v[0].get("estimate") is not None
               else _merge_sketches(v) for v in cells.values()]
    elif all(len(v) == 1 for v in cells.values()):
        return rows
    else:
        out = [v[0] if len(v) == 1 else _merge_metrics(v) for v in cells.values()]
    return pa.Table.from_pylist(out, schema=rows.schema)
