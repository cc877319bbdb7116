"""Exact windowed metrics per window x group, merged into Delta ``aggregates``.

Windows are aligned to the epoch like Spark's ``window()``. A sliding window of
size S and slide L is the union of S/L consecutive panes (tumbling windows of
size L): each event is aggregated once into its pane, and panes are combined
into windows, so a sliding window costs little more than a tumbling one.

Spark computes each micro-batch's partial metrics per window x group; the
driver adds them into the open rows (:mod:`streaming.window_state`): counts and
sums add, min/max combine. A row already holding batch N (``last_batch >= N``)
is left alone when batch N runs again after a crash. Sums are DECIMAL(38,9),
added as Python decimals with 38 digits of precision, so they are exact and do
not depend on the order or batching of events.
"""

from __future__ import annotations

import decimal
import json
from typing import TYPE_CHECKING, Any

from streaming.spec import Spec, WindowSpec
from streaming.window_state import (
    BatchWrite,
    Key,
    OpenRow,
    OpenWindows,
    load_open_rows,
    write_batch,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

US = 1_000_000


def group_key_col(window: WindowSpec) -> Column:
    """Canonical JSON array of the group values (``[]`` when ungrouped)."""
    from pyspark.sql import functions as F

    if not window.group_by:
        return F.lit("[]")
    return F.to_json(F.array(*[F.col(f"`{g}`").cast("string") for g in window.group_by]))


def group_map_col(window: WindowSpec, key_col: str = "group_key") -> Column:
    from pyspark.sql import functions as F

    if not window.group_by:
        return F.create_map().cast("map<string,string>")
    names = F.array(*[F.lit(g) for g in window.group_by])
    return F.map_from_arrays(names, F.from_json(F.col(key_col), "array<string>"))


def pane_start_us(window: WindowSpec) -> Column:
    from pyspark.sql import functions as F

    slide = window.slide_s * US
    et = F.unix_micros("event_time")
    return et - F.pmod(et, F.lit(slide))


def _window_rows(valid: DataFrame, window: WindowSpec, spec: Spec) -> DataFrame:
    from pyspark.sql import functions as F

    # column -> (pane aggregate, how panes combine into a window)
    aggs: dict[str, tuple[Column, str]] = {"count": (F.count(F.lit(1)), "sum")}
    for m in window.metrics:
        if m.field is None:
            continue
        f = F.col(f"`{m.field}`")
        if m.func in ("sum", "avg"):
            aggs[f"sum_{m.field}"] = (F.sum(f.cast("decimal(38,9)")), "sum")
        if m.func == "avg":
            aggs[f"n_{m.field}"] = (F.count(f), "sum")
        if m.func in ("min", "max"):
            fn = F.min if m.func == "min" else F.max
            aggs[m.column] = (fn(f.cast("double")), m.func)
    wanted = {col: how for col, (_, how) in aggs.items()}
    unique_aggs = [agg.alias(col) for col, (agg, _) in aggs.items()]
    panes = (valid.select(pane_start_us(window).alias("_pane"), group_key_col(window)
                          .alias("group_key"), *[F.col(f"`{m.field}`") for m in window.metrics
                                                 if m.field])
             .groupBy("_pane", "group_key").agg(*unique_aggs))
    n = window.size_s // window.slide_s
    if n == 1:
        rows = panes.withColumnRenamed("_pane", "_ws")
    else:
        exploded = (panes.withColumn("_i", F.explode(F.sequence(F.lit(0), F.lit(n - 1))))
                    .withColumn("_ws", F.col("_pane") - F.col("_i").cast("bigint")
                                * F.lit(window.slide_s * US).cast("bigint")))
        combine = []
        for col, how in wanted.items():
            fn = {"sum": F.sum, "min": F.min, "max": F.max}[how]
            combine.append(fn(col).alias(col))
        rows = exploded.groupBy("_ws", "group_key").agg(*combine)
    select = [F.lit(window.name).alias("window_name"), F.col("_ws").alias("ws"),
              F.col("group_key")]
    for col, typ in stored_columns(spec):
        if col in wanted:
            select.append(F.col(col).cast(_cast(typ)).alias(col))
        else:
            select.append(F.lit(None).cast(_cast(typ)).alias(col))
    return rows.select(*select)


def stored_columns(spec: Spec) -> list[tuple[str, str]]:
    """Metric columns that are kept and merged (``avg_f`` is derived from sum and n)."""
    return [(c, t) for c, t in spec.metric_columns() if not c.startswith("avg_")]


def _cast(typ: str) -> str:
    return {"long": "bigint", "double": "double", "decimal": "decimal(38,9)"}[typ]


def batch_aggregates(valid: DataFrame, spec: Spec) -> DataFrame:
    """Partial metrics of this batch's valid events, one row per window x group.

    Columns: ``window_name``, ``ws`` (window start, epoch microseconds),
    ``group_key`` and every column of :func:`stored_columns`.
    """
    frames = [_window_rows(valid, w, spec) for w in spec.windows]
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out




_DECIMAL = decimal.Context(prec=38, traps=[decimal.Overflow, decimal.InvalidOperation])
_SQL = {"long": "BIGINT", "double": "DOUBLE", "decimal": "DECIMAL(38,9)"}


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


class AggregateState:
    """The open rows of ``aggregates`` and how a batch's partial metrics fold into them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.cols = stored_columns(spec)
        self.kinds = {c: ("min" if c.startswith("min_") else "max" if c.startswith("max_")
                          else "add") for c, _ in self.cols}
        self.open = OpenWindows(spec)
        self.windows = {w.name: w for w in spec.windows}
        self.staging_ddl = ", ".join(
            ["window_name STRING", "ws BIGINT", "we BIGINT", "group_key STRING",
             "group_names STRING"] + [f"`{c}` {_SQL[t]}" for c, t in self.cols]
            + ["last_batch BIGINT", "updated_us BIGINT", "final BOOLEAN"])

    def _record(self, key: Key, values: dict[str, Any], last_batch: int,
                updated_us: int) -> tuple:
        w = self.windows[key[0]]
        return (key[0], key[1], key[1] + w.size_s * US, key[2], json.dumps(list(w.group_by)),
                *[values[c] for c, _ in self.cols], last_batch, updated_us)

    def load(self, spark: SparkSession, path: str) -> None:
        from pyspark.sql import functions as F

        rows = load_open_rows(spark, path).select(
            "window_name", F.unix_micros("window_start").alias("ws"), "group_key",
            *[F.col(f"`{c}`") for c, _ in self.cols], "last_batch",
            F.unix_micros("updated_at").alias("updated_us")).collect()
        self.open.rows = {}
        for r in rows:
            key = (r["window_name"], int(r["ws"]), r["group_key"])
            values = {c: r[c] for c, _ in self.cols}
            self.open.rows[key] = OpenRow(values, int(r["last_batch"]),
                                          self._record(key, values, int(r["last_batch"]),
                                                       int(r["updated_us"] or 0)))

    def fold(self, partials: list[Any], batch_id: int, batch_ts_ms: int) -> dict[Key, OpenRow]:
        """New open rows for the keys this batch touches (the memory copy is not changed)."""
        updates: dict[Key, OpenRow] = {}
        for r in partials:
            key = (r["window_name"], int(r["ws"]), r["group_key"])
            current = self.open.get(key)
            if current is not None and current.last_batch >= batch_id:
                continue  # already holds this batch: a re-run after a crash
            values = {c: r[c] for c, _ in self.cols}
            if current is not None:
                values = {c: _combine(self.kinds[c], current.value[c], v)
                          for c, v in values.items()}
            updates[key] = OpenRow(values, batch_id,
                                   self._record(key, values, batch_id, batch_ts_ms * 1000))
        return updates

    def to_table(self, staged: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        cols: list[Any] = [
            "window_name", F.timestamp_micros("ws").alias("window_start"),
            F.timestamp_micros("we").alias("window_end"), "group_key",
            F.map_from_arrays(F.from_json("group_names", "array<string>"),
                              F.from_json("group_key", "array<string>")).alias("group")]
        for c, _ in self.spec.metric_columns():
            if c.startswith("avg_"):
                fld = c[4:]
                cols.append((F.col(f"`sum_{fld}`").cast("double") / F.col(f"`n_{fld}`"))
                            .alias(c))
            else:
                cols.append(F.col(f"`{c}`"))
        cols += ["final", "last_batch", F.timestamp_micros("updated_us").alias("updated_at")]
        return staged.select(*cols)

    def write(self, spark: SparkSession, path: str, write: BatchWrite, app_id: str,
              batch_id: int) -> None:
        write_batch(spark, path, write, self.staging_ddl, self.to_table, app_id, batch_id)
        self.open.commit(write)
