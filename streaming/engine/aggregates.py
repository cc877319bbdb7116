"""Exact windowed metrics per window x group, merged into Delta ``aggregates``.

Windows are aligned to the epoch like Spark's ``window()``. A sliding window of
size S and slide L is the union of S/L consecutive panes (tumbling windows of
size L): each event is aggregated once into its pane (in the engine's one pass,
:mod:`streaming.engine.onepass`), and panes are combined into windows on the driver, so a
sliding window costs little more than a tumbling one.

The driver adds a batch's partials into the open rows
(:mod:`streaming.engine.window_state`): counts and sums add, min/max combine. A row
already holding batch N (``last_batch >= N``) is left alone when batch N runs again
after a crash. Sums are DECIMAL(38,9): each value is rounded half up to 9 decimals
from its shortest decimal form and the sums are added as integers of 1e-9, so they
are exact and do not depend on the order or batching of events.
"""

from __future__ import annotations

import decimal
import functools
import json
from collections.abc import Iterable
from typing import Any

import orjson

from streaming.engine.onepass import MetricPartial
from streaming.engine.tables import aggregates_schema, commit, read_table
from streaming.engine.window_state import (
    BatchWrite,
    OpenRow,
    OpenWindows,
    WindowKey,
    closed_predicate,
    epoch_us,
    record_of,
    rows_table,
    windows_predicate,
)
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
    if isinstance(a, decimal.Decimal):
        return _DECIMAL.add(a, b)
    return a + b


@functools.lru_cache(maxsize=1 << 16)
def group_map(group_by: tuple[str, ...], group_key: str) -> tuple[tuple[str, str | None], ...]:
    """The ``group`` map column of a row: group field -> value.

    One shared (immutable) value per group: a batch spanning months holds a record per
    window and group, and would otherwise hold as many copies of the same few groups.
    """
    return tuple(zip(group_by, json.loads(group_key), strict=True))


class AggregateState:
    """The open rows of ``aggregates`` and how a batch's partial metrics fold into them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.cols = stored_columns(spec)
        self.kinds = {c: _kind(c) for c, _ in self.cols}
        self.open = OpenWindows(spec)
        self.windows = {w.name: w for w in spec.windows}
        self.schema = aggregates_schema(spec)
        self.metric_names = [c for c, _ in spec.metric_columns()]

    def _record(self, key: WindowKey, values: dict[str, Any], last_batch: int,
                updated_us: int) -> tuple:
        w = self.windows[key.window]
        rec: dict[str, Any] = {"window_name": key.window, "window_start": key.start_us,
                               "window_end": key.start_us + w.size_s * US,
                               "group_key": key.group, "group": group_map(w.group_by, key.group)}
        for c in self.metric_names:
            if c.startswith("avg_"):
                fld = c[4:]
                s, n = values.get(f"sum_{fld}"), values.get(f"n_{fld}")
                rec[c] = float(s) / n if s is not None and n else None
            else:
                rec[c] = values.get(c)
        rec["late_rows"] = values.get("late_rows") or 0
        rec["last_batch"] = last_batch
        rec["updated_at"] = updated_us
        return record_of(rec, self.schema)

    def _rows(self, path: str, where: str) -> dict[WindowKey, OpenRow]:
        out = {}
        for r in read_table(path, where).to_pylist():
            ws = epoch_us(r["window_start"])
            key = WindowKey(r["window_name"], ws, r["group_key"])
            values = {c: r[c] for c, _ in self.cols}
            values["late_rows"] = r.get("late_rows") or 0
            updated = epoch_us(r["updated_at"]) if r["updated_at"] is not None else 0
            out[key] = OpenRow(values, int(r["last_batch"]),
                               self._record(key, values, int(r["last_batch"]), updated))
        return out

    def load(self, path: str) -> None:
        self.open.rows = self._rows(path, "NOT final")

    def load_closed(self, path: str, windows: set[tuple[str, int]]) -> dict[WindowKey, OpenRow]:
        """The final rows of ``windows``, for late rows to update (``late = "update"``)."""
        return self._rows(path, closed_predicate(windows)) if windows else {}

    def window_partials(self, rows: Iterable[MetricPartial]) -> dict[WindowKey, dict[str, Any]]:
        """Pane partials of the one pass (``kind = "m"``) -> this batch's values per window."""
        panes: dict[tuple[int, int, str], dict[str, Any]] = {}
        for r in rows:
            key = (r.window, r.pane, r.group)
            part = orjson.loads(r.values)
            for c in list(part):
                if c.startswith("sum_") and part[c] is not None:
                    part[c] = int(part[c])
            have = panes.get(key)
            panes[key] = part if have is None else {
                c: _combine(self.kinds.get(c, "add"), have.get(c), v) for c, v in part.items()}
        out: dict[WindowKey, dict[str, Any]] = {}
        for (wi, pane, g), part in sorted(panes.items()):
            w = self.spec.windows[wi]
            for i in range(w.size_s // w.slide_s):
                key = WindowKey(w.name, pane - i * w.slide_s * US, g)
                have = out.get(key)
                out[key] = dict(part) if have is None else {
                    c: _combine(self.kinds.get(c, "add"), have.get(c), part.get(c))
                    for c in set(have) | set(part)}
        for values in out.values():
            for c in list(values):
                if c.startswith("sum_") and values[c] is not None:
                    values[c] = _DECIMAL.scaleb(decimal.Decimal(values[c]), -9)
        return out

    def fold(self, partials: dict[WindowKey, dict[str, Any]], batch_id: int, batch_ts_ms: int,
             closed: dict[WindowKey, OpenRow] | None = None) -> dict[WindowKey, OpenRow]:
        """New rows for the keys this batch touches (the memory copy is not changed).

        ``closed`` holds rows of closed windows read back for late rows.
        """
        updates: dict[WindowKey, OpenRow] = {}
        updated_us = batch_ts_ms * 1000
        for key, part in partials.items():
            current = self.open.get(key) or (closed or {}).get(key)
            if current is not None and current.last_batch >= batch_id:
                continue  # already holds this batch: a re-run after a crash
            values = {c: part.get(c) for c, _ in self.cols}
            values["late_rows"] = part.get("late_rows") or 0
            if current is not None:
                values = {c: _combine(self.kinds.get(c, "add"), current.value.get(c), v)
                          for c, v in values.items()}
            updates[key] = OpenRow(values, batch_id,
                                   self._record(key, values, batch_id, updated_us))
        return updates

    def write(self, path: str, write: BatchWrite, app_id: str, batch_id: int) -> None:
        table = rows_table(write, self.schema)
        commit(path, table, app_id=app_id, batch_id=batch_id,
               predicate=windows_predicate(write.windows))
        self.open.commit(write)
