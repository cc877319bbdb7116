"""The streaming job: raw records -> one pass per input partition -> merged where they meet.

One Spark query reads the source once. Each micro-batch (``foreachBatch``) is one
Spark job, and the driver does no work per window or group:

1. the driver fixes the batch's watermark (:mod:`streaming.engine.watermarks`) and
   takes its timestamp from Spark's offset log, both recorded before the batch ran, so
   a re-run decides identically; and it picks, from the tables' file statistics, the
   ``final=false`` files holding windows the watermark has closed
   (:func:`streaming.engine.table_files.select_files`);
2. the executors run the engine's one pass (:mod:`streaming.engine.onepass`) over
   every input partition in parallel: decode, validate, the late test, exact metric
   and sketch partials per window, quarantined records;
3. Spark shuffles the partials, with the stored rows of the files picked in 1, by
   (window, window start, group); each task merges its cells, writes them as Parquet
   files into the tables' folders, closed windows final and open ones as partial
   rows, and writes its quarantined records (:mod:`streaming.engine.reduce`);
4. the driver commits each changed table once, with delta-rs: the files added, the
   files compacted away, and the transaction (table and checkpoint, batch id).

A table that already holds the batch (a re-run after a crash) is left out of the job
and not committed again; each commit is atomic, so a crash at any point and a restart
from the checkpoint give the same tables as a run without the crash. A backfill feeds
its batches to :meth:`Pipeline.process`, which runs the same pass and merge stage
in-process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from streaming.engine import faults
from streaming.engine.agreement import (
    check_at_start,
    check_tables_exist,
    table_batches,
    tables_to_write,
)
from streaming.engine.checkpoint import (
    BatchMeta,
    CheckpointInfo,
    CheckpointLock,
    batch_meta,
    every_batch_from,
    last_batches,
    offset_gap,
    open_checkpoint,
    start_offsets,
)
from streaming.engine.memory import allocate_returnably, release_freed_memory
from streaming.engine.onepass import PASS_DDL, PASS_SCHEMA, PassContext, make_pass
from streaming.engine.reduce import (
    REDUCE_DDL,
    ReduceContext,
    empty_output,
    make_reduce,
    output_files,
    output_open_windows,
    output_views,
    reduce_rows,
)
from streaming.engine.source import raw_stream
from streaming.engine.stored_cells import make_stored_reader, marker_frame, read_stored
from streaming.engine.summary import BatchSummary, summarize
from streaming.engine.table_files import Selection, commit_files, file_bucket, select_files
from streaming.engine.tables import (
    QUARANTINE_SCHEMA,
    SKETCHES_SCHEMA,
    TablePaths,
    aggregates_schema,
    ensure_tables,
)
from streaming.engine.warmup import warm_workers
from streaming.engine.watermarks import WatermarkLog
from streaming.errors import CheckpointError
from streaming.spec.model import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

# kept importable from here for the fault tests
CRASH_ENV, CRASH_POINTS = faults.CRASH_ENV, faults.CRASH_POINTS

#: tables in the order a batch commits them
WRITE_ORDER = ("quarantine", "aggregates", "sketches")
#: the tables whose windows are compacted
COMPACTED = ("aggregates", "sketches")
#: tries of a batch's commit to a table that lost a race with ``streamsketch maintain``
WRITE_ATTEMPTS = 5
#: the columns of stored rows the merge stage reads back
_STORED_COLUMNS = {"sketches": ["window_name", "window_start", "group_key", "sketch_name",
                                "bytes", "last_batch"]}

#: a function that runs the one pass for a batch and returns its partial rows
Partials = Callable[[PassContext], pa.Table | pa.RecordBatch]
#: a function that runs a batch's (or a compaction's) job: the merge stage's output rows
Job = Callable[[ReduceContext, dict[str, Selection]], pa.Table]


class Pipeline:
    """Build and run the streaming query for a spec.

    Args:
        spark: the session (see :func:`streaming.runtime.session.build_session`); ``None`` for a
            backfill, which needs no JVM.
        spec: the validated spec.
        on_batch: called with a :class:`BatchSummary` after each batch commits its writes.
    """

    def __init__(self, spark: SparkSession | None, spec: Spec, *,
                 on_batch: Callable[[BatchSummary], None] | None = None,
                 track_latency: bool = False) -> None:
        allocate_returnably()  # the driver's batches too (see streaming.engine.memory)
        self.spark = spark
        self.spec = spec
        self.on_batch = on_batch
        self.lock = CheckpointLock(Path(spec.sink.checkpoint))
        self.checkpoint: CheckpointInfo | None = None
        self.tables: TablePaths | None = None
        self.query: StreamingQuery | None = None
        self.watermarks: WatermarkLog | None = None
        self._batches_done = 0
        self._marker_frames: dict[int, DataFrame] = {}
        self._warmup: Any = None
        self._offsets_expected = (-1, 0)
        self.every_from = 0
        self.track_latency = track_latency
        #: the closing watermark of the last batch (what a compaction at the end may close)
        self.closing_ms: int | None = None
        self._schemas = {"aggregates": aggregates_schema(spec), "sketches": SKETCHES_SCHEMA,
                         "quarantine": QUARANTINE_SCHEMA}

    @property
    def query_name(self) -> str:
        return f"streamsketch_{self.spec.digest()}"

    def app_id(self, table: str) -> str:
        """The Delta transaction id this checkpoint's writes to ``table`` carry."""
        assert self.checkpoint is not None
        return f"streamsketch-{table}-{self.checkpoint.checkpoint_id}"

    def prepare(self, *, planned: tuple[int, int] | None = None,
                recovering: bool = False) -> None:
        """Lock the checkpoint, check it matches the spec and the tables
        (:mod:`streaming.engine.agreement`; ``recovering``: tables behind are expected).

        ``planned`` is (last batch committed, last batch planned) of the checkpoint when
        the caller keeps its own log (a backfill); by default Spark's offset and commit
        logs say.
        """
        self.lock.acquire()
        try:
            self.checkpoint = open_checkpoint(self.spec)
            if planned is None:
                planned = last_batches(self.checkpoint.query_dir)
            check_tables_exist(self.spec, planned[0])
            self.tables = ensure_tables(self.spec, self.checkpoint.checkpoint_id)
            self.every_from = every_batch_from(self.checkpoint, planned[0])
            held = table_batches(self.tables.all(), self.app_id)
            check_at_start(self.spec, self.tables.all(), held,
                           (-1 if recovering else planned[0], planned[1]), self.every_from)
            self.watermarks = WatermarkLog(self.checkpoint.root / "watermarks", self.spec)
        except BaseException:
            self.lock.release()
            raise

    def stream(self) -> DataFrame:
        assert self.spark is not None
        return raw_stream(self.spark, self.spec)

    def start(self, *, available_now: bool = False) -> StreamingQuery:
        if self.checkpoint is None:
            self.prepare()
        assert self.checkpoint is not None
        if self._warmup is None and self.spark is not None:
            self._warmup = warm_workers(self.spark)
        writer = (self.stream().writeStream.queryName(self.query_name)
                  .foreachBatch(self.process_frame)
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
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not query.awaitTermination(1.0):
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            self.stop()

    @property
    def failed(self) -> bool:
        """Kept for callers that poll: a batch's failure now fails the query itself."""
        return False

    def stop(self, *, grace_s: float = 60.0) -> None:
        """Stop the query, letting a running micro-batch finish first (up to ``grace_s``),
        then compact the windows the last batch closed.

        Interrupting a batch is safe (it re-runs from the checkpoint) but wastes it.
        """
        query = self.query
        try:
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
            failed = query is not None and query.exception() is not None
            if not failed:
                self.compact()
        finally:
            if self._warmup is not None:
                self._warmup.end()
            self.lock.release()

    # -- the micro-batch ---------------------------------------------------------
    def _fix_batch(self, batch_id: int) -> tuple[int, int]:
        """The batch's watermark and timestamp, fixed when it first ran (and its offsets'
        expected count, for the summary)."""
        assert self.checkpoint is not None and self.watermarks is not None
        query_dir = self.checkpoint.query_dir
        meta = batch_meta(query_dir, batch_id)
        previous = None
        with contextlib.suppress(CheckpointError):  # an offset log may be cleaned up
            previous = (batch_meta(query_dir, batch_id - 1) if batch_id > 0 else
                        BatchMeta(-1, 0, 0, start_offsets(query_dir)))
        self._offsets_expected = offset_gap(previous, meta)
        return self.watermarks.for_batch(batch_id, meta.timestamp_ms), meta.timestamp_ms

    def process_frame(self, df: DataFrame, batch_id: int) -> None:
        """Run and write batch ``batch_id`` over the Kafka source's rows ``df`` (the
        query's ``foreachBatch``; a recovery's batch read of the same offsets)."""
        watermark_ms, timestamp_ms = self._fix_batch(batch_id)
        ctx = PassContext(self.spec, watermark_ms, timestamp_ms, self.track_latency)

        # a batch over no offsets (an idle topic) has no rows: no pass to run, and no
        # Spark job at all unless it closes windows whose stored files it compacts
        offsets, resets = self._offsets_expected
        no_rows = offsets == 0 and resets == 0

        def job(rctx: ReduceContext, selections: dict[str, Selection]) -> pa.Table:
            # the Kafka source's own rows, as they are: no projection (see source.py)
            parts = None if no_rows else df.mapInArrow(make_pass(ctx, kafka_rows=True),
                                                       PASS_DDL)
            return self._spark_merge(parts, rctx, selections)

        self._batch(job, batch_id, watermark_ms, timestamp_ms)

    def process(self, partials: Partials, batch_id: int, watermark_ms: int,
                timestamp_ms: int) -> BatchSummary:
        """Run and write one batch in this process (see the module docstring).

        ``watermark_ms`` and ``timestamp_ms`` must be the values fixed for this
        batch before it first ran, so that a re-run decides identically.
        """
        ctx = PassContext(self.spec, watermark_ms, timestamp_ms, self.track_latency)

        def job(rctx: ReduceContext, selections: dict[str, Selection]) -> pa.Table:
            passed = partials(ctx)
            if isinstance(passed, pa.RecordBatch):
                passed = pa.Table.from_batches([passed])
            return self._local_merge(passed, rctx, selections)

        return self._batch(job, batch_id, watermark_ms, timestamp_ms)

    # -- the merge stage, on Spark or in-process ------------------------------------
    def _stored_columns(self, table: str) -> list[str]:
        if table in _STORED_COLUMNS:
            return _STORED_COLUMNS[table]
        return ["window_name", "window_start", "group_key",
                *(c for c in self._schemas["aggregates"].names
                  if c not in ("window_name", "window_start", "window_end", "group_key",
                               "group", "final", "updated_at") and not c.startswith("avg_"))]

    def merge_partitions(self) -> int:
        """How many tasks merge a batch's cells: one per core Spark has."""
        assert self.spark is not None
        return max(1, int(self.spark.sparkContext.defaultParallelism))

    def _spark_merge(self, parts: DataFrame | None, rctx: ReduceContext,
                     selections: dict[str, Selection]) -> pa.Table:
        """The merge stage as one Spark job: the pass's partials and the rows of the
        stored files a batch compacts meet by (window, start, group) in one of ``n``
        tasks. A stored file a merge task of ``n`` wrote (:func:`file_bucket`) holds cells
        of that task only: the task reads it itself; other files go through the shuffle."""
        assert self.spark is not None and self.tables is not None
        n = self.merge_partitions()
        frames = [] if parts is None else [parts]
        stored: dict[str, dict[int, list[str]]] = {}
        for name, sel in selections.items():
            shuffled = []
            for path in sorted(sel.files):
                bucket = file_bucket(path)
                if bucket is not None and bucket[1] == n:
                    stored.setdefault(name, {}).setdefault(bucket[0], []).append(path)
                else:
                    shuffled.append(path)
            if not shuffled:
                continue
            root = self.tables.all()[name]
            frames.append(self.spark.read.parquet(*[os.path.join(root, p) for p in shuffled])
                          .select(*[f"`{c}`" for c in self._stored_columns(name)])
                          .mapInArrow(make_stored_reader(self.spec, name), PASS_DDL))
        if not frames and not stored:
            return empty_output()
        if n not in self._marker_frames:
            self._marker_frames[n] = marker_frame(self.spark, n)
        frames.append(self._marker_frames[n])
        rctx = replace(rctx, buckets=n, stored=stored,
                       stored_columns={name: self._stored_columns(name) for name in stored})
        union = functools.reduce(lambda a, b: a.unionByName(b), frames)
        merged = (union.repartition(n, "w", "ws", "g")
                  .mapInArrow(make_reduce(rctx), REDUCE_DDL))
        return merged.toArrow()

    def _local_merge(self, passed: pa.Table | None, rctx: ReduceContext,
                     selections: dict[str, Selection]) -> pa.Table:
        assert self.tables is not None
        frames = [] if passed is None else [passed.select(PASS_SCHEMA.names)
                                            .cast(PASS_SCHEMA)]
        for name, sel in selections.items():
            root = self.tables.all()[name]
            frames += [read_stored(self.spec, name, root, p, self._stored_columns(name))
                       for p in sorted(sel.files)]
        if not frames:
            return empty_output()
        return reduce_rows(pa.concat_tables(frames), rctx)

    # -- one batch: plan, job, commits ---------------------------------------------
    def _batch(self, job: Job, batch_id: int, watermark_ms: int,
               timestamp_ms: int) -> BatchSummary:
        assert self.checkpoint is not None and self.tables is not None
        started = time.monotonic()
        cpu_started = time.process_time()
        phases: dict[str, float] = {}
        faults.maybe_crash("batch_start", batch_id)
        paths = self.tables.all()
        todo = tables_to_write({t: paths[t] for t in WRITE_ORDER},
                               table_batches(paths, self.app_id), batch_id, self.every_from)
        summary: BatchSummary | None = None
        for _attempt in range(1, WRITE_ATTEMPTS + 1):
            t = time.monotonic()
            selections = {name: select_files(paths[name], watermark_ms)
                          for name in COMPACTED if name in todo}
            rctx = ReduceContext(
                self.spec, batch_id, timestamp_ms, watermark_ms,
                {name: sel.final_before_ms for name, sel in selections.items()},
                {name: paths[name] for name in todo})
            phases["plan"] = phases.get("plan", 0.0) + time.monotonic() - t
            t = time.monotonic()
            out = job(rctx, selections)
            phases["job"] = phases.get("job", 0.0) + time.monotonic() - t
            faults.maybe_crash("written", batch_id)
            if summary is None:
                summary = self._summary(out, batch_id, watermark_ms, timestamp_ms)
                summary.closing_ms = (watermark_ms if self.watermarks is None
                                      else self.watermarks.closing(batch_id, summary))
                if self.watermarks is not None:
                    self.watermarks.record(batch_id, summary)
            todo = self._commit(out, selections, todo, batch_id, phases)
            if not todo:
                break
        else:
            raise CheckpointError(
                f"batch {batch_id}: the commits to {', '.join(todo)} lost a race with "
                f"another writer {WRITE_ATTEMPTS} times (is `streamsketch maintain` running "
                "in a loop?)")
        assert summary is not None
        self.closing_ms = summary.closing_ms
        summary.duration_s = time.monotonic() - started
        summary.driver_cpu_s = time.process_time() - cpu_started
        summary.phase_s = phases
        summary.committed_at = time.time()
        self._batches_done += 1
        if self.on_batch is not None:
            self.on_batch(summary)
        release_freed_memory()
        return summary

    def _commit(self, out: pa.Table, selections: dict[str, Selection], todo: list[str],
                batch_id: int, phases: dict[str, float]) -> list[str]:
        """Commit each table of ``todo``; returns those that lost a race (to run again)."""
        from deltalake.exceptions import CommitFailedError

        assert self.tables is not None
        paths = self.tables.all()
        files = output_files(out)
        retry = []
        for name in WRITE_ORDER:
            if name not in todo:
                faults.maybe_crash(f"after_{name}", batch_id)
                continue
            # every table records every batch, changed or not (see agreement.py)
            added = files.get(name, [])
            removed = selections[name].files if name in selections else {}
            faults.maybe_crash(f"in_{name}", batch_id)
            faults.maybe_fail(f"in_{name}", batch_id)
            t = time.monotonic()
            try:
                commit_files(paths[name], self._schemas[name], added, removed,
                             app_id=self.app_id(name), batch_id=batch_id,
                             partitioned=name in COMPACTED)
            except CommitFailedError:
                retry.append(name)  # ``maintain`` compacted a file this batch replaces
                continue
            finally:
                phases[f"write_{name}"] = (phases.get(f"write_{name}", 0.0)
                                           + time.monotonic() - t)
            faults.maybe_crash(f"after_{name}", batch_id)
        return retry

    def compact(self) -> int:
        """Compact the windows the last batch closed (at the end of a run): one row each.

        Returns the number of files replaced. Changes no value a reader sees, so it
        carries no batch id; skipped when another writer got in first.
        """
        from deltalake.exceptions import CommitFailedError

        if self.closing_ms is None or self.tables is None:
            return 0
        closing_ms, self.closing_ms = self.closing_ms, None  # once per batch
        paths = self.tables.all()
        selections = {name: select_files(paths[name], closing_ms) for name in COMPACTED}
        selections = {n: s for n, s in selections.items() if s.files}
        if not selections:
            return 0
        rctx = ReduceContext(self.spec, -1, int(time.time() * 1000), closing_ms,
                             {n: s.final_before_ms for n, s in selections.items()},
                             {n: paths[n] for n in selections})
        if self.spark is not None:
            out = self._spark_merge(None, rctx, selections)
        else:
            out = self._local_merge(None, rctx, selections)
        files = output_files(out)
        replaced = 0
        for name, sel in selections.items():
            try:
                commit_files(paths[name], self._schemas[name], files.get(name, []), sel.files,
                             app_id=None, batch_id=None, partitioned=True)
                replaced += len(sel.files)
            except CommitFailedError:
                continue
        return replaced

    def _summary(self, out: pa.Table, batch_id: int, watermark_ms: int,
                 timestamp_ms: int) -> BatchSummary:
        expected, resets = self._offsets_expected
        self._offsets_expected = (-1, 0)
        kind = out.column("kind")
        stats = out.filter(pc.equal(kind, "p")).column("b").to_pylist()
        summary = summarize(stats, batch_id, watermark_ms, timestamp_ms,
                            offsets_expected=expected, offset_resets=resets)
        summary.views = output_views(out.filter(pc.equal(kind, "v")), self.spec)
        summary.open_windows = output_open_windows(out.filter(pc.equal(kind, "o")), self.spec)
        return summary
