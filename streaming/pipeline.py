"""The streaming job: source -> parse -> watermark -> per-batch writes to Delta.

One Spark query reads the source once. Each micro-batch (``foreachBatch``):

1. reads the batch's watermark and timestamp from Spark's offset log (fixed before
   the batch ran, so a re-run decides identically);
2. appends malformed records and records later than the watermark to
   ``quarantine`` (idempotent: Delta ``txnAppId``/``txnVersion`` = checkpoint id /
   batch id);
3. merges exact metrics into ``aggregates`` and sketches into ``sketches``
   (idempotent: a row already written by this batch id is skipped);
4. flags windows the watermark has passed as ``final``.

A crash at any point and a restart from the checkpoint re-runs the unfinished
batch with the same offsets and produces the same tables as a run without the
crash.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming import aggregates as agg
from streaming import sketch_state
from streaming.checkpoint import CheckpointInfo, CheckpointLock, batch_meta, open_checkpoint
from streaming.parse import parse_records, with_watermark
from streaming.source import raw_stream
from streaming.spec import Spec
from streaming.tables import TablePaths, ensure_tables

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

#: Fault injection for the crash tests: ``<point>@<batch_id>`` makes the driver
#: SIGKILL its own process group at that point of that batch.
CRASH_ENV = "STREAMSKETCH_CRASH_AT"
CRASH_POINTS = ("batch_start", "after_quarantine", "after_aggregates", "after_sketches",
                "after_final")


@dataclass
class BatchSummary:
    batch_id: int
    watermark_ms: int
    batch_timestamp_ms: int
    rows: int = 0
    valid: int = 0
    late: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    sketches: dict[tuple, Any] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    #: source (Kafka) timestamps of the batch's records, in 100 ms buckets:
    #: {bucket start in ms: records}; filled when the pipeline tracks latency
    source_ts_hist: dict[int, int] = field(default_factory=dict)
    committed_at: float = 0.0


def _maybe_crash(point: str, batch_id: int) -> None:
    target = os.environ.get(CRASH_ENV)
    if target and target == f"{point}@{batch_id}":
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)


class Pipeline:
    """Build and run the streaming query for a spec.

    Args:
        spark: the session (see :func:`streaming.session.build_session`).
        spec: the validated spec.
        on_batch: called with a :class:`BatchSummary` after each batch commits its writes.
    """

    def __init__(self, spark: SparkSession, spec: Spec, *,
                 on_batch: Callable[[BatchSummary], None] | None = None,
                 track_latency: bool = False) -> None:
        self.spark = spark
        self.spec = spec
        self.on_batch = on_batch
        self.lock = CheckpointLock(Path(spec.sink.checkpoint))
        self.checkpoint: CheckpointInfo | None = None
        self.tables: TablePaths | None = None
        self.query: StreamingQuery | None = None
        self._final_wm = -1
        self._batches_done = 0
        self.track_latency = track_latency

    @property
    def query_name(self) -> str:
        return f"streamsketch_{self.spec.digest()}"

    def prepare(self) -> None:
        """Lock the checkpoint, check it matches the spec, create missing tables."""
        self.lock.acquire()
        try:
            self.checkpoint = open_checkpoint(self.spec)
            self.tables = ensure_tables(self.spark, self.spec, self.checkpoint.checkpoint_id)
        except BaseException:
            self.lock.release()
            raise

    def stream(self) -> DataFrame:
        raw = raw_stream(self.spark, self.spec)
        return with_watermark(parse_records(raw, self.spec), self.spec)

    def start(self, *, available_now: bool = False) -> StreamingQuery:
        if self.checkpoint is None:
            self.prepare()
        assert self.checkpoint is not None
        writer = (self.stream().writeStream.queryName(self.query_name)
                  .foreachBatch(self._process_batch)
                  .option("checkpointLocation", str(self.checkpoint.query_dir)))
        if available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{int(self.spec.sink.trigger_s * 1000)} "
                                                   "milliseconds")
        self.query = writer.start()
        return self.query

    def run(self, *, available_now: bool = False, timeout: float | None = None) -> None:
        """Start and block until the query ends (available-now) or is interrupted."""
        query = self.start(available_now=available_now)
        try:
            query.awaitTermination(timeout)
        finally:
            self.stop()

    def stop(self, *, grace_s: float = 60.0) -> None:
        """Stop the query, letting a running micro-batch finish first (up to ``grace_s``).

        Interrupting a batch is safe (it re-runs from the checkpoint) but wastes it.
        """
        query = self.query
        if query is not None and query.isActive:
            done_before = self._batches_done
            deadline = time.monotonic() + grace_s
            # Stop between batches: when no trigger runs, or right after the running
            # batch has committed (with a backlog, batches run back to back).
            while time.monotonic() < deadline and query.isActive:
                if self._batches_done > done_before:
                    break
                try:
                    if not query.status.get("isTriggerActive"):
                        break
                except Exception:  # noqa: BLE001 - the query may end while we look
                    break
                time.sleep(0.05)
            query.stop()
        self.lock.release()

    # -- the micro-batch ---------------------------------------------------------
    def _process_batch(self, df: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        assert self.checkpoint is not None and self.tables is not None
        started = time.monotonic()
        phases: dict[str, float] = {}
        _maybe_crash("batch_start", batch_id)
        meta = batch_meta(self.checkpoint.query_dir, batch_id)
        wm = F.timestamp_millis(F.lit(meta.watermark_ms))
        late = F.col("_reason").isNull() & (F.col("event_time") < wm)
        reason = (F.when(late, F.concat(F.lit("late: event time is before the watermark "),
                                        wm.cast("string")))
                  .otherwise(F.col("_reason")))
        df = df.withColumn("_reason", reason).persist()
        try:
            counts = {r["_code"]: r["n"] for r in
                      df.groupBy(F.substring_index("_reason", ":", 1).alias("_code"))
                      .agg(F.count(F.lit(1)).alias("n")).collect()}
            summary = BatchSummary(batch_id, meta.watermark_ms, meta.timestamp_ms)
            summary.valid = int(counts.pop(None, 0))
            summary.late = int(counts.get("late", 0))
            summary.quarantined = {k: int(v) for k, v in counts.items()}
            summary.rows = summary.valid + sum(summary.quarantined.values())
            if self.track_latency:
                bucket = (F.floor(F.unix_millis("_source_ts") / 100) * 100).alias("b")
                summary.source_ts_hist = {
                    int(r["b"]): int(r["n"]) for r in
                    df.where(F.col("_source_ts").isNotNull()).groupBy(bucket)
                    .agg(F.count(F.lit(1)).alias("n")).collect()}
            t = time.monotonic()
            if summary.quarantined:
                self._write_quarantine(df.where(F.col("_reason").isNotNull()), batch_id)
            phases["quarantine"] = time.monotonic() - t
            _maybe_crash("after_quarantine", batch_id)
            valid = df.where(F.col("_reason").isNull())
            t = time.monotonic()
            agg_final = sk_final = False
            if summary.valid:
                agg.merge_aggregates(self.spark, self.tables.aggregates,
                                     agg.batch_aggregates(valid, self.spec, batch_id), self.spec,
                                     meta.watermark_ms)
                agg_final = True
            phases["aggregates"] = time.monotonic() - t
            _maybe_crash("after_aggregates", batch_id)
            t = time.monotonic()
            if summary.valid:
                merged = sketch_state.merge_sketches(
                    self.spark, self.tables.sketches, valid, self.spec, batch_id,
                    meta.watermark_ms)
                if merged is not None:
                    summary.sketches = merged
                    sk_final = True
            phases["sketches"] = time.monotonic() - t
            _maybe_crash("after_sketches", batch_id)
            t = time.monotonic()
            # A batch that wrote no MERGE still has to flag windows the watermark passed.
            if meta.watermark_ms > self._final_wm:
                if not agg_final:
                    agg.mark_final(self.spark, self.tables.aggregates, meta.watermark_ms)
                if not sk_final:
                    agg.mark_final(self.spark, self.tables.sketches, meta.watermark_ms)
                self._final_wm = meta.watermark_ms
            phases["final"] = time.monotonic() - t
            _maybe_crash("after_final", batch_id)
        finally:
            df.unpersist()
        summary.duration_s = time.monotonic() - started
        summary.phase_s = phases
        summary.committed_at = time.time()
        self._batches_done += 1
        if self.on_batch is not None:
            self.on_batch(summary)

    def _write_quarantine(self, bad: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        assert self.checkpoint is not None and self.tables is not None
        rows = bad.select(
            F.col("_key").alias("key"), F.col("_value").alias("value"),
            F.col("_topic").alias("topic"), F.col("_partition").cast("int").alias("partition"),
            F.col("_offset").cast("bigint").alias("offset"),
            F.col("_source_ts").alias("source_timestamp"),
            F.substring_index("_reason", ":", 1).alias("reason_code"),
            F.col("_reason").alias("reason"), F.col("event_time"),
            F.lit(batch_id).cast("bigint").alias("batch_id"),
            F.current_timestamp().alias("quarantined_at"))
        (rows.write.format("delta").mode("append")
         .option("txnAppId", f"streamsketch-quarantine-{self.checkpoint.checkpoint_id}")
         .option("txnVersion", batch_id)
         .save(self.tables.quarantine))
