"""Sketches per window x group: partials in one Arrow pass, merged into Delta ``sketches``.

Per micro-batch:

1. ``mapInArrow`` builds, per Spark partition, one partial sketch per
   (window, pane, group, sketch) with the vectorised grouped builders of the
   ``sketches`` package. Raw rows never leave the partition; only these small
   partials cross to the driver.
2. The driver merges the partials of each pane into every window containing it,
   then into the stored sketch read back from Delta, unless that stored row was
   already written by this batch id (a re-run after a crash).
3. One Delta MERGE writes absolute bytes with ``last_batch`` guarding it.

Merging is exact for HLL registers, Count-Min counters and Bloom bits, so the
stored bytes do not depend on how events were split into batches or partitions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streaming.spec import SketchSpec, Spec, WindowSpec

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

US = 1_000_000
PARTIAL_DDL = ("window_idx INT, pane_us BIGINT, group_key STRING, sketch_idx INT, "
               "bytes BINARY")


def partial_input(valid: DataFrame, spec: Spec) -> DataFrame:
    """The columns the partial builder needs: event time, per-window group keys, fields."""
    from pyspark.sql import functions as F

    from streaming.aggregates import group_key_col

    cols = [F.unix_micros("event_time").alias("_et_us")]
    for i, w in enumerate(spec.windows):
        if w.sketches:
            cols.append(group_key_col(w).alias(f"_gk{i}"))
    fields = sorted({s.field for w in spec.windows for s in w.sketches})
    cols += [F.col(f"`{f}`") for f in fields]
    return valid.select(*cols)


def make_partial_builder(spec: Spec):
    """The function run by ``mapInArrow``: all Arrow batches of a partition -> partials."""
    windows = [(i, w) for i, w in enumerate(spec.windows) if w.sketches]

    def build(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        collected = list(batches)
        if not collected:
            return
        table = pa.Table.from_batches(collected)
        if table.num_rows == 0:
            return
        et = table.column("_et_us").to_numpy().astype(np.int64, copy=False)
        out: dict[str, list] = {"window_idx": [], "pane_us": [], "group_key": [],
                                "sketch_idx": [], "bytes": []}
        for wi, w in windows:
            slide = w.slide_s * US
            panes = et - np.mod(et, slide)
            gk = table.column(f"_gk{wi}").to_numpy(zero_copy_only=False)
            pane_codes, pane_uniques = _factorize_pairs(panes, gk)
            n_groups = len(pane_uniques)
            for si, sk in enumerate(w.sketches):
                values = table.column(sk.field).combine_chunks()
                built = sk.sketch_class.from_groups(pane_codes, values, n_groups,
                                                    **sk.param_dict)
                for g, sketch in enumerate(built):
                    if sketch.is_empty():
                        continue
                    out["window_idx"].append(wi)
                    out["pane_us"].append(int(pane_uniques[g][0]))
                    out["group_key"].append(pane_uniques[g][1])
                    out["sketch_idx"].append(si)
                    out["bytes"].append(sketch.to_bytes())
        yield pa.RecordBatch.from_pydict(out, schema=pa.schema([
            ("window_idx", pa.int32()), ("pane_us", pa.int64()), ("group_key", pa.string()),
            ("sketch_idx", pa.int32()), ("bytes", pa.binary())]))

    return build


def _factorize_pairs(panes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, list]:
    """Codes for (pane, group key) pairs, and the pairs in code order."""
    import pandas as pd

    key_codes, key_uniques = pd.factorize(keys, use_na_sentinel=False)
    pane_codes, pane_uniques = pd.factorize(panes)
    combined = pane_codes.astype(np.int64) * max(len(key_uniques), 1) + key_codes
    codes, uniq = pd.factorize(combined)
    nk = max(len(key_uniques), 1)
    pairs = [(int(pane_uniques[c // nk]), key_uniques[c % nk]) for c in uniq]
    return codes.astype(np.int64), pairs


@dataclass
class MergedSketch:
    window: WindowSpec
    sketch_spec: SketchSpec
    window_start_us: int
    group_key: str
    sketch: Any


def merge_partials(partials: list[Any], spec: Spec) -> dict[tuple, MergedSketch]:
    """Combine partial rows (from :func:`make_partial_builder`) into per-window sketches."""
    import sketches

    merged: dict[tuple, MergedSketch] = {}
    for row in partials:
        w = spec.windows[row["window_idx"]]
        sk = w.sketches[row["sketch_idx"]]
        part = sketches.from_bytes(bytes(row["bytes"]))
        n = w.size_s // w.slide_s
        for i in range(n):
            ws = int(row["pane_us"]) - i * w.slide_s * US
            key = (w.name, ws, row["group_key"], sk.name)
            entry = merged.get(key)
            if entry is None:
                merged[key] = MergedSketch(w, sk, ws, row["group_key"], part.copy())
            else:
                entry.sketch.merge(part)
    return merged


def _describe(kind: str, sketch: Any) -> tuple[float | None, float | None, float | None,
                                                list | None, dict[str, float]]:
    if kind == "hll":
        return (float(sketch.estimate()), float(sketch.lower_bound(2)),
                float(sketch.upper_bound(2)), None,
                {"relative_error": float(sketch.relative_error())})
    if kind == "cms":
        top = [(str(item), int(count)) for item, count in sketch.top()]
        return (float(sketch.total), None, None, top,
                {"total": float(sketch.total), "error_bound": float(sketch.error_bound())})
    if kind == "bloom":
        return (float(sketch.estimate()), None, None, None,
                {"fill_ratio": float(sketch.fill_ratio()),
                 "expected_fpr": float(sketch.expected_fpr())})
    return (float(sketch.estimate()), float(sketch.lower_bound(2)),
            float(sketch.upper_bound(2)), None, {})


def merge_sketches(spark: SparkSession, path: str, valid: DataFrame, spec: Spec,
                   batch_id: int, watermark_ms: int) -> dict[tuple, MergedSketch] | None:
    """Build this batch's partials, fold them into the stored sketches, MERGE the result.

    Returns the merged sketches, or None when nothing was written (so the caller
    still has to flag final windows).
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    import sketches
    from streaming.aggregates import final_condition

    if not any(w.sketches for w in spec.windows):
        return None
    partial_rows = (partial_input(valid, spec)
                    .mapInArrow(make_partial_builder(spec), PARTIAL_DDL)
                    .collect())
    merged = merge_partials(partial_rows, spec)
    if not merged:
        return None
    by_window: dict[str, set[int]] = defaultdict(set)
    for (wname, ws, _, _), _m in merged.items():
        by_window[wname].add(ws)
    cond = None
    for wname, starts in by_window.items():
        # constant timestamps (folded to literals), so Delta can skip files by their
        # min/max statistics instead of reading every stored sketch
        stamps = [F.timestamp_micros(F.lit(us)) for us in sorted(starts)]
        c = (F.col("window_name") == wname) & F.col("window_start").isin(*stamps)
        cond = c if cond is None else (cond | c)
    existing = (spark.read.format("delta").load(path).where(cond)
                .select("window_name", F.unix_micros("window_start").alias("ws"), "group_key",
                        "sketch_name", "bytes", "last_batch").collect())
    done = set()
    for row in existing:
        key = (row["window_name"], row["ws"], row["group_key"], row["sketch_name"])
        if key not in merged:
            continue
        if row["last_batch"] >= batch_id:
            done.add(key)  # this batch was already applied before a crash
            continue
        stored = sketches.from_bytes(bytes(row["bytes"]))
        stored.merge(merged[key].sketch)
        merged[key].sketch = stored
    records = []
    for key, m in merged.items():
        if key in done:
            continue
        est, lo, hi, top, stats = _describe(m.sketch_spec.kind, m.sketch)
        end_us = m.window_start_us + m.window.size_s * US
        records.append((m.window.name, m.window_start_us, end_us,
                        m.group_key, m.sketch_spec.name, m.sketch_spec.kind, m.sketch_spec.field,
                        bytearray(m.sketch.to_bytes()), est, lo, hi, top, stats, batch_id,
                        json.dumps(list(m.window.group_by))))
    if not records:
        return None
    src = spark.createDataFrame(records, (
        "window_name STRING, ws BIGINT, we BIGINT, group_key STRING, sketch_name STRING, "
        "kind STRING, field STRING, bytes BINARY, estimate DOUBLE, lower_bound DOUBLE, "
        "upper_bound DOUBLE, top_k ARRAY<STRUCT<item: STRING, count: BIGINT>>, "
        "stats MAP<STRING, DOUBLE>, last_batch BIGINT, group_names STRING"))
    src = src.select(
        "window_name", F.timestamp_micros("ws").alias("window_start"),
        F.timestamp_micros("we").alias("window_end"), "group_key",
        F.map_from_arrays(F.from_json("group_names", "array<string>"),
                          F.from_json("group_key", "array<string>")).alias("group"),
        "sketch_name", "kind", "field", "bytes", "estimate", "lower_bound", "upper_bound",
        "top_k", "stats", F.lit(False).alias("final"), "last_batch",
        F.current_timestamp().alias("updated_at"))
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(src.alias("s"), "t.window_name = s.window_name AND t.window_start = s.window_start "
            "AND t.group_key = s.group_key AND t.sketch_name = s.sketch_name")
     .whenMatchedUpdateAll(condition="t.last_batch < s.last_batch")
     .whenNotMatchedInsertAll()
     .whenNotMatchedBySourceUpdate(condition=final_condition(watermark_ms),
                                   set={"final": "true"})
     .execute())
    return merged
