"""The streaming job: source -> parse -> watermark -> per-batch writes to Delta.

One Spark query reads the source once. Each micro-batch (``foreachBatch``):

1. reads the batch's watermark and timestamp from Spark's offset log (fixed before
   the batch ran, so a re-run decides identically);
2. appends malformed records and records later than the watermark to
   ``quarantine`` (idempotent: Delta ``txnAppId``/``txnVersion`` = checkpoint id /
   batch id);
3. folds exact metrics and sketches into the open windows kept in driver memory
   (a row that already holds this batch id is skipped) and flags the windows the
   watermark has passed as ``final``;
4. writes the open windows of ``aggregates`` and of ``sketches``, one Delta commit
   each (idempotent: ``txnAppId``/``txnVersion``; see :mod:`streaming.window_state`).

A crash at any point and a restart from the checkpoint re-runs the unfinished
batch with the same offsets and produces the same tables as a run without the
crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming import aggregates as agg
from streaming import sketch_state
from streaming.checkpoint import (
    CheckpointInfo,
    CheckpointLock,
    batch_meta,
    offset_gap,
    open_checkpoint,
)
from streaming.errors import CheckpointError
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
                # armed when that table's Delta write starts; the kill lands inside it
                # after STREAMSKETCH_CRASH_DELAY_MS (default 300)
                "in_quarantine", "in_aggregates", "in_sketches")
CRASH_DELAY_ENV = "STREAMSKETCH_CRASH_DELAY_MS"


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
    #: the latest event time of the batch's parsed records (late ones included), in ms:
    #: what Spark's watermark advances by
    max_event_ms: int | None = None
    #: Kafka offsets in the batch's range that delivered no record (data aged out by
    #: retention or deleted, with failOnDataLoss off; also transaction markers or
    #: compaction, which lose nothing), and partitions whose offsets went backwards
    offset_gap: int = 0
    offset_resets: int = 0


def _kill_now() -> None:
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def _maybe_crash(point: str, batch_id: int) -> None:
    target = os.environ.get(CRASH_ENV)
    if not target or target != f"{point}@{batch_id}":
        return
    if point.startswith("in_"):
        delay = float(os.environ.get(CRASH_DELAY_ENV, "300")) / 1000
        timer = threading.Timer(delay, _kill_now)
        timer.daemon = True
        timer.start()
        return
    _kill_now()


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
        self.aggregates = agg.AggregateState(spec)
        self.sketches = sketch_state.SketchState(spec)
        self._batches_done = 0
        self._offsets_expected = (-1, 0)
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
            self.aggregates.load(self.spark, self.tables.aggregates)
            self.sketches.load(self.spark, self.tables.sketches)
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
        assert self.checkpoint is not None
        meta = batch_meta(self.checkpoint.query_dir, batch_id)
        previous = None
        if batch_id > 0:
            with contextlib.suppress(CheckpointError):  # an offset log may be cleaned up
                previous = batch_meta(self.checkpoint.query_dir, batch_id - 1)
        expected, resets = offset_gap(previous, meta)
        self._offsets_expected = (expected, resets)
        self.process(df, batch_id, meta.watermark_ms, meta.timestamp_ms)

    def process(self, df: DataFrame, batch_id: int, watermark_ms: int,
                timestamp_ms: int) -> BatchSummary:
        """Write one batch of parsed records (see the module docstring).

        ``watermark_ms`` and ``timestamp_ms`` must be the values fixed for this
        batch before it first ran, so that a re-run decides identically.
        """
        from pyspark.sql import functions as F

        assert self.checkpoint is not None and self.tables is not None
        started = time.monotonic()
        phases: dict[str, float] = {}
        _maybe_crash("batch_start", batch_id)
        wm = F.timestamp_millis(F.lit(watermark_ms))
        late = F.col("_reason").isNull() & (F.col("event_time") < wm)
        reason = (F.when(late, F.concat(F.lit("late: event time is before the watermark "),
                                        wm.cast("string")))
                  .otherwise(F.col("_reason")))
        df = df.withColumn("_reason", reason)
        bad = F.col("_reason").isNotNull()
        # Raw key and value are kept only where quarantine needs them.
        fields = [F.col(f"`{n}`") for n, _ in self.spec.events.fields]
        df = df.select(F.when(bad, F.col("_key")).alias("_key"),
                       F.when(bad, F.col("_value")).alias("_value"),
                       "_topic", "_partition", "_offset", "_source_ts", "_reason", "event_time",
                       *fields).persist()
        summary_hist: dict[int, int] = {}
        try:
            t = time.monotonic()
            code = F.substring_index("_reason", ":", 1).alias("_code")
            # source timestamps in 100 ms buckets, for the latency benchmark, in the same pass
            bucket = (F.floor(F.unix_millis("_source_ts") / 100) * 100).alias("_bucket")
            by_code = (df.groupBy(code, *([bucket] if self.track_latency else []))
                       .agg(F.count(F.lit(1)).alias("n"),
                            F.max(F.unix_millis("event_time")).alias("max_ms")).collect())
            counts: dict[str | None, int] = {}
            for r in by_code:
                counts[r["_code"]] = counts.get(r["_code"], 0) + int(r["n"])
                if self.track_latency and r["_bucket"] is not None:
                    b = int(r["_bucket"])
                    summary_hist[b] = summary_hist.get(b, 0) + int(r["n"])
            summary = BatchSummary(batch_id, watermark_ms, timestamp_ms)
            summary.source_ts_hist = summary_hist
            summary.max_event_ms = max((int(r["max_ms"]) for r in by_code
                                        if r["max_ms"] is not None), default=None)
            summary.valid = int(counts.pop(None, 0))
            summary.late = int(counts.get("late", 0))
            summary.quarantined = {str(k): int(v) for k, v in counts.items()}
            summary.rows = summary.valid + sum(summary.quarantined.values())
            expected, summary.offset_resets = self._offsets_expected
            self._offsets_expected = (-1, 0)
            if expected >= 0:
                summary.offset_gap = max(0, expected - summary.rows)
            phases["read"] = time.monotonic() - t
            sk_updates = self._write_tables(df, summary, phases)
        finally:
            df.unpersist()
        summary.sketches = {k: row.value for k, row in sk_updates.items()}
        summary.duration_s = time.monotonic() - started
        summary.phase_s = phases
        summary.committed_at = time.time()
        self._batches_done += 1
        if self.on_batch is not None:
            self.on_batch(summary)
        return summary

    def _write_tables(self, df: DataFrame, summary: BatchSummary,
                      phases: dict[str, float]) -> dict:
        """The batch's three writes; returns the sketch rows it changed.

        Each write is idempotent on its own (see the module docstring), so after a
        crash any prefix of them may have committed and the re-run completes the
        rest. (Run in threads side by side they were slower on 2 cores: the fixed
        cost of a Delta commit is CPU on the driver, not waiting.)
        """
        from pyspark.sql import functions as F

        assert self.checkpoint is not None and self.tables is not None
        tables, app = self.tables, self.checkpoint.checkpoint_id
        batch_id, wm_ms, ts_ms = summary.batch_id, summary.watermark_ms, summary.batch_timestamp_ms
        bad = F.col("_reason").isNotNull()
        valid = df.where(~bad)

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            t = time.monotonic()
            try:
                return fn()
            finally:
                phases[name] = time.monotonic() - t

        def quarantine() -> None:
            if summary.quarantined:
                _maybe_crash("in_quarantine", batch_id)
                timed("quarantine", lambda: self._write_quarantine(df.where(bad), batch_id))
            _maybe_crash("after_quarantine", batch_id)

        def table(name: str, state: Any, path: str, compute: Callable[[], dict]) -> dict:
            updates = timed(name, compute) if summary.valid else {}
            write = state.open.plan(updates, wm_ms)
            if write:
                _maybe_crash(f"in_{name}", batch_id)
                timed(f"write_{name}", lambda: state.write(
                    self.spark, path, write, f"streamsketch-{name}-{app}", batch_id))
            _maybe_crash(f"after_{name}", batch_id)
            return updates

        quarantine()
        table("aggregates", self.aggregates, tables.aggregates,
              lambda: self.aggregates.fold(agg.batch_aggregates(valid, self.spec).collect(),
                                           batch_id, ts_ms))
        return table("sketches", self.sketches, tables.sketches,
                     lambda: self._sketch_updates(valid, batch_id, ts_ms))

    def _sketch_updates(self, valid: DataFrame, batch_id: int, timestamp_ms: int) -> dict:
        """This batch's new open rows of ``sketches`` (the benchmark's JVM variant swaps it)."""
        return self.sketches.fold(sketch_state.batch_partials(valid, self.spec), batch_id,
                                  timestamp_ms)

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
