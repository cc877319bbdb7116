"""How many windows a query merged: cells, not rows.

A closed window has one row per (window, group) cell in the result tables; an open one
has a row per batch that touched the cell (docs/architecture.md). The counts a query
reports (``windows``, ``windows_merged``) are of cells.
"""

from __future__ import annotations

from typing import Any


class CellCount:
    """Counts the cells (window, group) of the sketch rows a query merges: a closed
    window has one row per cell, an open one a row per batch that touched it."""

    COLUMNS = ("window_start", "group_key", "final")

    def __init__(self) -> None:
        self.final = 0
        self.open: set[tuple[Any, Any]] = set()

    def add(self, rows: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        final = rows["final"].combine_chunks()
        # null counts as not final; no Python value becomes an Arrow one here (pyarrow
        # imports pandas for that, a quarter of a query's time)
        done = pc.and_kleene(final, pc.is_valid(final)) if final.null_count else final
        finals = pc.sum(done).as_py() or 0
        self.final += finals
        if finals == rows.num_rows:
            return
        # the few rows of open windows; only the key columns are filtered (pyarrow
        # cannot filter binary or string views, such as the sketch bytes DataFusion gives)
        rest = rows.select(["window_start", "group_key"])
        if rest.schema.field("group_key").type == pa.string_view():
            rest = rest.set_column(1, "group_key", rest["group_key"].cast(pa.large_string()))
        rest = rest.filter(pc.invert(done))
        if rest.num_rows:
            self.open.update(zip(rest["window_start"].to_pylist(),
                                 rest["group_key"].to_pylist(), strict=True))

    @property
    def count(self) -> int:
        return self.final + len(self.open)


def windows_per_group(rows: Any, *, by_group: bool) -> list[int]:
    """Distinct window starts per group (in :func:`combine`'s group order), or overall."""
    import numpy as np

    from streaming.query.metric_sums import group_codes
    from streaming.query.read import micros

    if rows.num_rows == 0:
        return [] if by_group else [0]
    starts = micros(rows["window_start"].combine_chunks())
    if by_group:
        codes, _, n = group_codes(rows)
    else:
        codes, n = np.zeros(rows.num_rows, dtype=np.int64), 1
    # distinct (group, start) pairs as one int64 each: start's rank among the starts,
    # offset by the group (a 1-D sort; np.unique over pairs sorts rows as bytes, slowly)
    values, rank = np.unique(starts.astype(np.int64), return_inverse=True)
    # (sorted and compared: NumPy 2's bare np.unique hashes large arrays, far slower)
    pairs = np.sort(codes.astype(np.int64) * values.size + rank.reshape(-1))
    if pairs.size > 1:
        pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
    return np.bincount(pairs // values.size, minlength=n).tolist()
