"""Exact windowed metrics per window x group, merged into Delta ``aggregates``.

Windows are aligned to the epoch like Spark's ``window()``. A sliding window of
size S and slide L is the union of S/L consecutive panes (tumbling windows of
size L): each event is aggregated once into its pane, and panes are combined
into windows, so a sliding window costs little more than a tumbling one.

Each micro-batch's partial metrics are merged into the table by a Delta MERGE
that adds counts and sums, and takes min/max. It is idempotent per batch id: a
row already updated by batch N (``last_batch >= N``) is left alone when batch N
runs again after a crash. Sums are DECIMAL(38,9), so they are exact and do not
depend on the order or batching of events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streaming.spec import Spec, WindowSpec

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


def _window_rows(valid: DataFrame, window: WindowSpec, spec: Spec, batch_id: int) -> DataFrame:
    from pyspark.sql import functions as F

    metric_cols = dict(spec.metric_columns())
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
    select = [
        F.lit(window.name).alias("window_name"),
        F.timestamp_micros("_ws").alias("window_start"),
        F.timestamp_micros(F.col("_ws") + F.lit(window.size_s * US)).alias("window_end"),
        F.col("group_key"),
        group_map_col(window).alias("group"),
    ]
    for col, typ in metric_cols.items():
        if col.startswith("avg_"):
            fld = col[4:]
            if f"sum_{fld}" in wanted:
                select.append((F.col(f"sum_{fld}").cast("double") / F.col(f"n_{fld}"))
                              .alias(col))
                continue
        if col in wanted:
            select.append(F.col(col).cast(_cast(typ)).alias(col))
        else:
            select.append(F.lit(None).cast(_cast(typ)).alias(col))
    select += [F.lit(False).alias("final"), F.lit(batch_id).cast("bigint").alias("last_batch"),
               F.current_timestamp().alias("updated_at")]
    return rows.select(*select)


def _cast(typ: str) -> str:
    return {"long": "bigint", "double": "double", "decimal": "decimal(38,9)"}[typ]


def batch_aggregates(valid: DataFrame, spec: Spec, batch_id: int) -> DataFrame:
    """Partial metrics of this batch's valid events, one row per window x group."""
    frames = [_window_rows(valid, w, spec, batch_id) for w in spec.windows]
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def merge_aggregates(spark: SparkSession, path: str, partial: DataFrame, spec: Spec,
                     watermark_ms: int) -> None:
    """Add ``partial`` into the aggregates table, once per batch id.

    The same MERGE flags untouched windows that the watermark has passed as final.
    """
    from delta.tables import DeltaTable

    sets: dict[str, str] = {}
    cols = dict(spec.metric_columns())
    for col in cols:
        t, s = f"t.`{col}`", f"s.`{col}`"
        if col.startswith("avg_"):
            continue
        if col == "count" or col.startswith("sum_") or col.startswith("n_"):
            sets[f"`{col}`"] = f"CASE WHEN {t} IS NULL THEN {s} WHEN {s} IS NULL THEN {t} " \
                               f"ELSE {t} + {s} END"
        elif col.startswith("min_"):
            sets[f"`{col}`"] = f"least({t}, {s})"
        elif col.startswith("max_"):
            sets[f"`{col}`"] = f"greatest({t}, {s})"
    for col in cols:
        if col.startswith("avg_"):
            fld = col[4:]
            sets[f"`{col}`"] = (f"CAST(({sets[f'`sum_{fld}`']}) AS DOUBLE) / "
                                f"({sets[f'`n_{fld}`']})")
    sets["last_batch"] = "s.last_batch"
    sets["updated_at"] = "s.updated_at"
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(partial.alias("s"), "t.window_name = s.window_name AND "
            "t.window_start = s.window_start AND t.group_key = s.group_key")
     .whenMatchedUpdate(condition="t.last_batch < s.last_batch", set=sets)
     .whenNotMatchedInsertAll()
     .whenNotMatchedBySourceUpdate(condition=final_condition(watermark_ms),
                                   set={"final": "true"})
     .execute())


def final_condition(watermark_ms: int) -> str:
    return f"NOT t.final AND t.window_end <= timestamp_millis({int(watermark_ms)})"


def mark_final(spark: SparkSession, path: str, watermark_ms: int) -> None:
    """Flag windows whose end the watermark has passed (idempotent)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    cutoff = F.timestamp_millis(F.lit(watermark_ms))
    table = DeltaTable.forPath(spark, path)
    table.update(condition=(~F.col("final")) & (F.col("window_end") <= cutoff),
                 set={"final": F.lit(True)})
