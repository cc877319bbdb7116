"""The result tables as Spark reads them, the way a reader must: one row per cell.

An open window holds a row per batch that touched a cell, merged on read
(docs/architecture.md); a closed window holds exactly one final row per cell, which
:func:`spark_cells` checks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def spark_cells(spark, path: str, window: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``aggregates`` or ``sketches`` read by Spark, partial rows merged; each with
    ``ws`` (window start, µs) and ``end_ms`` (window end, ms) added."""
    from streaming.engine.cells import merged_cells
    from streaming.engine.window_state import epoch_us

    df = spark.read.format("delta").load(path)
    if window is not None:
        df = df.where(df.window_name == window)
    raw = df.toArrow()
    key = [c for c in ("window_name", "window_start", "group_key", "sketch_name")
           if c in raw.column_names]
    finals = Counter(tuple(r[c] for c in key) for r in raw.select([*key, "final"]).to_pylist()
                     if r["final"])
    twice = [k for k, n in finals.items() if n > 1]
    assert not twice, f"closed windows stored twice: {twice[:3]}"
    rows = merged_cells(raw).to_pylist()
    for r in rows:
        r["ws"] = epoch_us(r["window_start"])
        r["end_ms"] = epoch_us(r["window_end"]) // 1000
    return rows
