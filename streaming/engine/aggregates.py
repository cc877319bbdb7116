"""Exact windowed metrics per window x group: how partial values merge into a row.

Windows are aligned to the epoch like Spark's ``window()``. A sliding window of
size S and slide L is the union of S/L consecutive panes (tumbling windows of
size L): each event is aggregated once into its pane (in the engine's one pass,
:mod:`streaming.engine.onepass`), and the pane's partial is sent to every window
containing it, where the merge stage (:mod:`streaming.engine.reduce`, on the
executors) adds it up.

A partial's values travel as JSON: ``count``, ``late_rows``, ``n_f`` (non-null
counts), ``sum_f`` as a string of an integer count of 1e-9 (exact, any size),
``min_f`` and ``max_f``. Counts and sums add, min/max combine. A stored row of
``aggregates`` read back for compaction is turned into the same form
(:meth:`AggregateCells.stored_values`), so a window's rows from several batches merge
like the partials of one. Sums are DECIMAL(38,9) in the table: each value is rounded
half up to 9 decimals from its shortest decimal form and the sums are added as
integers of 1e-9, so they are exact and do not depend on the order or batching of
events.
"""

from __future__ import annotations

import decimal
import functools
from typing import Any

import orjson

from streaming.spec.model import Spec
from streaming.units import US

_DECIMAL = decimal.Context(prec=38, traps=[decimal.Overflow, decimal.InvalidOperation])


def stored_columns(spec: Spec) -> list[tuple[str, str]]:
    """Metric columns that are kept and merged (``avg_f`` is derived from sum and n)."""
    return [(c, t) for c, t in spec.metric_columns() if not c.startswith("avg_")]


def _kind(column: str) -> str:
    return "min" if column.startswith("min_") else "max" if column.startswith("max_") else "add"


def _combine(kind: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if kind == "min":
        return min(a, b)
    if kind == "max":
        return max(a, b)
    return a + b


@functools.lru_cache(maxsize=1 << 12)
def group_map(group_by: tuple[str, ...], group_key: str) -> tuple[tuple[str, str | None], ...]:
    """The ``group`` map column of a row: group field -> value.

    One shared (immutable) value per group: a batch spanning months holds a record per
    window and group, and would otherwise hold as many copies of the same few groups.
    """
    return tuple(zip(group_by, orjson.loads(group_key), strict=True))


def parse_values(blob: bytes) -> dict[str, Any]:
    """A partial's JSON values, sums as Python ints of 1e-9."""
    part = orjson.loads(blob)
    for c, v in part.items():
        if c.startswith("sum_") and v is not None:
            part[c] = int(v)
    return part


class AggregateCells:
    """How the partial metrics of one (window, group) merge, and the row they make."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.cols = stored_columns(spec)
        self.kinds = {c: _kind(c) for c, _ in self.cols}
        self.kinds["late_rows"] = "add"
        self.metric_names = [c for c, _ in spec.metric_columns()]

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The values of several partials of one cell, merged (any order: exact)."""
        out = dict(parts[0])
        for part in parts[1:]:
            for c, v in part.items():
                out[c] = _combine(self.kinds.get(c, "add"), out.get(c), v)
        return out

    def rows(self) -> AggregateRows:
        """An empty set of table rows to add cells to."""
        return AggregateRows(self)

    def stored_values(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored row's metrics in the partials' form (sums as integers of 1e-9)."""
        values: dict[str, Any] = {}
        for c, _ in self.cols:
            v = row.get(c)
            if c.startswith("sum_") and v is not None:
                v = int(decimal.Decimal(v).scaleb(9, _DECIMAL))
            values[c] = v
        values["late_rows"] = row.get("late_rows") or 0
        return values

    def stored_json(self, row: dict[str, Any]) -> bytes:
        """:meth:`stored_values` as a partial's JSON (sums as strings)."""
        values = self.stored_values(row)
        for c, v in values.items():
            if c.startswith("sum_") and v is not None:
                values[c] = str(v)
        return orjson.dumps(values)


class AggregateRows:
    """Rows of ``aggregates`` (without ``final``), added cell by cell, built column-wise."""

    def __init__(self, cells: AggregateCells) -> None:
        self.metric_names = cells.metric_names
        self.cols: dict[str, list[Any]] = {c: [] for c in (
            "window_name", "window_start", "window_end", "group_key", "group",
            *cells.metric_names, "late_rows", "last_batch")}
        self._groups: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.cols["window_name"])

    def add(self, window: Any, start_us: int, group: str, values: dict[str, Any],
            last_batch: int) -> None:
        cols = self.cols
        cols["window_name"].append(window.name)
        cols["window_start"].append(start_us)
        cols["window_end"].append(start_us + window.size_s * US)
        cols["group_key"].append(group)
        cached = self._groups.get(group)
        if cached is None:
            cached = self._groups[group] = list(zip(window.group_by, orjson.loads(group),
                                                    strict=True))
        cols["group"].append(cached)
        for c in self.metric_names:
            if c.startswith("avg_"):
                fld = c[4:]
                s, n = values.get(f"sum_{fld}"), values.get(f"n_{fld}")
                v = float(_DECIMAL.scaleb(decimal.Decimal(s), -9)) / n if (
                    s is not None and n) else None
            elif c.startswith("sum_"):
                v = values.get(c)
                v = None if v is None else _DECIMAL.scaleb(decimal.Decimal(v), -9)
            else:
                v = values.get(c)
            cols[c].append(v)
        cols["late_rows"].append(values.get("late_rows") or 0)
        cols["last_batch"].append(last_batch)

    def table(self, schema: Any, updated_us: int) -> Any:
        """The rows as a ``pyarrow.Table`` of ``schema`` (``final`` left out)."""
        import pyarrow as pa

        n = len(self)
        arrays = []
        for field in schema:
            if field.name == "updated_at":
                arrays.append(pa.array([updated_us] * n, field.type))
            else:
                arrays.append(pa.array(self.cols[field.name], field.type))
        return pa.Table.from_arrays(arrays, schema=schema)
