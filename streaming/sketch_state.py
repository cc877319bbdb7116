"""Sketches per window x group: partials in one Arrow pass, merged into Delta ``sketches``.

Per micro-batch:

1. ``mapInArrow`` builds, per Spark partition, one partial sketch per
   (window, pane, group, sketch) with the vectorised grouped builders of the
   ``sketches`` package. Raw rows never leave the partition; only these small
   partials cross to the driver.
2. The driver merges the partials of each pane into every window containing it,
   then into a copy of the open row's sketch (:mod:`streaming.window_state`),
   unless that row already holds this batch id (a re-run after a crash).
3. One Delta overwrite of the open windows writes absolute bytes.

Merging is exact for HLL registers, Count-Min counters and Bloom bits, so the
stored bytes do not depend on how events were split into batches or partitions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streaming.spec import SketchSpec, Spec, WindowSpec
from streaming.window_state import (
    BatchWrite,
    Key,
    OpenRow,
    OpenWindows,
    load_open_rows,
    write_batch,
)

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


def batch_partials(valid: DataFrame, spec: Spec) -> dict[tuple, MergedSketch]:
    """This batch's sketches per window x group x sketch (empty when the spec has none)."""
    if not any(w.sketches for w in spec.windows):
        return {}
    # One task per batch: a Count-Min top-k candidate list built in one pass depends only
    # on the batch's items, while one merged from per-partition partials can depend on how
    # Spark split the batch (Kafka partitions, file splits) once the distinct items exceed
    # its capacity. So the bytes are the same whichever source fed the batch.
    rows = (partial_input(valid, spec).coalesce(1)
            .mapInArrow(make_partial_builder(spec), PARTIAL_DDL).collect())
    return merge_partials(rows, spec)


STAGING_DDL = (
    "window_name STRING, ws BIGINT, we BIGINT, group_key STRING, group_names STRING, "
    "sketch_name STRING, kind STRING, field STRING, bytes BINARY, estimate DOUBLE, "
    "lower_bound DOUBLE, upper_bound DOUBLE, "
    "top_k ARRAY<STRUCT<item: STRING, count: BIGINT>>, stats MAP<STRING, DOUBLE>, "
    "last_batch BIGINT, updated_us BIGINT, final BOOLEAN")


def _record(m: MergedSketch, last_batch: int, updated_us: int) -> tuple:
    est, lo, hi, top, stats = _describe(m.sketch_spec.kind, m.sketch)
    end_us = m.window_start_us + m.window.size_s * US
    return (m.window.name, m.window_start_us, end_us, m.group_key,
            json.dumps(list(m.window.group_by)), m.sketch_spec.name, m.sketch_spec.kind,
            m.sketch_spec.field, bytearray(m.sketch.to_bytes()), est, lo, hi, top, stats,
            last_batch, updated_us)


class SketchState:
    """The open rows of ``sketches`` and how a batch's partial sketches fold into them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.open = OpenWindows(spec)

    def load(self, spark: SparkSession, path: str) -> None:
        from pyspark.sql import functions as F

        import sketches

        windows = {w.name: w for w in self.spec.windows}
        rows = load_open_rows(spark, path).select(
            "window_name", F.unix_micros("window_start").alias("ws"),
            F.unix_micros("window_end").alias("we"), "group_key", "sketch_name", "kind",
            "field", "bytes", "estimate", "lower_bound", "upper_bound", "top_k", "stats",
            "last_batch", F.unix_micros("updated_at").alias("updated_us")).collect()
        self.open.rows = {}
        for r in rows:
            w = windows[r["window_name"]]
            sk = next(s for s in w.sketches if s.name == r["sketch_name"])
            key = (r["window_name"], int(r["ws"]), r["group_key"], r["sketch_name"])
            m = MergedSketch(w, sk, int(r["ws"]), r["group_key"],
                             sketches.from_bytes(bytes(r["bytes"])))
            top = None if r["top_k"] is None else [(t["item"], t["count"]) for t in r["top_k"]]
            record = (r["window_name"], int(r["ws"]), int(r["we"]), r["group_key"],
                      json.dumps(list(w.group_by)), r["sketch_name"], r["kind"], r["field"],
                      bytearray(r["bytes"]), r["estimate"], r["lower_bound"],
                      r["upper_bound"], top, r["stats"], int(r["last_batch"]),
                      int(r["updated_us"] or 0))
            self.open.rows[key] = OpenRow(m, int(r["last_batch"]), record)

    def fold(self, partials: dict[tuple, MergedSketch], batch_id: int,
             batch_ts_ms: int) -> dict[Key, OpenRow]:
        """New open rows for the keys this batch touches (the memory copy is not changed)."""
        updates: dict[Key, OpenRow] = {}
        for key, part in partials.items():
            current = self.open.get(key)
            if current is not None and current.last_batch >= batch_id:
                continue  # already holds this batch: a re-run after a crash
            if current is not None:
                sketch = current.value.sketch.copy()
                sketch.merge(part.sketch)
                part = MergedSketch(part.window, part.sketch_spec, part.window_start_us,
                                    part.group_key, sketch)
            updates[key] = OpenRow(part, batch_id, _record(part, batch_id, batch_ts_ms * 1000))
        return updates

    @staticmethod
    def to_table(staged: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        return staged.select(
            "window_name", F.timestamp_micros("ws").alias("window_start"),
            F.timestamp_micros("we").alias("window_end"), "group_key",
            F.map_from_arrays(F.from_json("group_names", "array<string>"),
                              F.from_json("group_key", "array<string>")).alias("group"),
            "sketch_name", "kind", "field", "bytes", "estimate", "lower_bound", "upper_bound",
            "top_k", "stats", "final", "last_batch",
            F.timestamp_micros("updated_us").alias("updated_at"))

    def write(self, spark: SparkSession, path: str, write: BatchWrite, app_id: str,
              batch_id: int) -> None:
        write_batch(spark, path, write, STAGING_DDL, self.to_table, app_id, batch_id)
        self.open.commit(write)
