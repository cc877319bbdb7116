"""The streaming job: raw records -> one pass per input partition -> per-batch writes to Delta.

One Spark query reads the source once. Each micro-batch (``foreachBatch``):

1. fixes the batch's watermark (:mod:`streaming.engine.watermarks`) and takes its timestamp
   from Spark's offset log, both recorded before the batch ran, so a re-run decides
   identically;
2. runs the engine's one pass (:mod:`streaming.engine.onepass`) over every input partition
   in parallel (``mapInArrow`` over the raw Kafka records): decode, validate, the late
   test, exact metric and sketch partials, quarantined records; only those small rows
   reach the driver;
3. appends the quarantined records to ``quarantine``;
4. merges the partials into the open windows kept in driver memory (a row that
   already holds this batch id is skipped) and flags as ``final`` the windows that
   every later batch's watermark has passed (:meth:`WatermarkLog.closing`: known once
   the batch has run, so a batch spanning months writes its windows once, final, and
   keeps none of them);
5. rewrites the windows it changed in ``aggregates`` and in ``sketches``.

Steps 4 and 5 of a batch with a small pass output run behind: the output is saved in
the checkpoint and a thread writes it while Spark runs the next batch's pass
(:mod:`streaming.engine.write_behind`; a restart finishes it from the file).

Each write is one delta-rs commit that records (table and checkpoint, batch id), and
none is made for a table the batch did not change. A crash at any point and a restart
from the checkpoint re-runs the unfinished batch with the same offsets and produces
the same tables as a run without the crash. A backfill feeds its batches to
:meth:`Pipeline.process` with the same pass, run in-process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streaming.engine import aggregates as agg
from streaming.engine import faults, sketch_state
from streaming.engine.checkpoint import (
    CheckpointInfo,
    CheckpointLock,
    batch_meta,
    last_batches,
    offset_gap,
    open_checkpoint,
)
from streaming.engine.memory import release_freed_memory
from streaming.engine.onepass import PASS_DDL, PassContext, PassRows, make_pass, pass_rows
from streaming.engine.source import raw_stream
from streaming.engine.summary import BatchSummary, summarize
from streaming.engine.tables import (
    QUARANTINE_SCHEMA,
    TablePaths,
    commit,
    committed_batch,
    ensure_tables,
)
from streaming.engine.watermarks import WatermarkLog
from streaming.engine.window_state import Key
from streaming.engine.write_behind import OVERLAP_MAX_BYTES, WriteBehind
from streaming.errors import CheckpointError
from streaming.spec.model import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

# kept importable from here for the fault tests
CRASH_ENV, CRASH_POINTS = faults.CRASH_ENV, faults.CRASH_POINTS


#: a function that runs the one pass for a batch and returns its partial rows
Partials = Callable[[PassContext], pa.Table]


@dataclass
class Scanned:
    """A batch whose pass has run and whose writes are still to do."""

    #: the pass's rows (the quarantined records among them); let go once written
    table: pa.Table | None
    rows: PassRows  #: its partial rows, by kind
    summary: BatchSummary
    phases: dict[str, float]
    started: float  #: ``time.monotonic()`` when the batch started


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
        self.spark = spark
        self.spec = spec
        self.on_batch = on_batch
        self.lock = CheckpointLock(Path(spec.sink.checkpoint))
        self.checkpoint: CheckpointInfo | None = None
        self.tables: TablePaths | None = None
        self.query: StreamingQuery | None = None
        self.aggregates = agg.AggregateState(spec)
        self.sketches = sketch_state.SketchState(spec)
        self.watermarks: WatermarkLog | None = None
        #: batches finished behind the next one's pass (set up with the checkpoint)
        self.behind: WriteBehind | None = None
        self._batches_done = 0
        self._offsets_expected = (-1, 0)
        self.track_latency = track_latency

    @property
    def query_name(self) -> str:
        return f"streamsketch_{self.spec.digest()}"

    def app_id(self, table: str) -> str:
        """The Delta transaction id this checkpoint's writes to ``table`` carry."""
        assert self.checkpoint is not None
        return f"streamsketch-{table}-{self.checkpoint.checkpoint_id}"

    def prepare(self, *, planned: tuple[int, int] | None = None) -> None:
        """Lock the checkpoint, check it matches the spec and the tables, load open rows.

        ``planned`` is (last batch committed, last batch planned) of the checkpoint when
        the caller keeps its own log (a backfill); by default Spark's offset and commit
        logs say.
        """
        self.lock.acquire()
        try:
            self.checkpoint = open_checkpoint(self.spec)
            if planned is None:
                planned = last_batches(self.checkpoint.query_dir)
            self._check_tables_exist(planned)
            self.tables = ensure_tables(self.spec, self.checkpoint.checkpoint_id)
            self._check_tables_agree(planned)
            self.watermarks = WatermarkLog(self.checkpoint.root / "watermarks", self.spec)
            self.behind = WriteBehind(self.checkpoint.root / "pending")
            self.aggregates.load(self.tables.aggregates)
            self.sketches.load(self.tables.sketches)
            self._finish_pending()
        except BaseException:
            self.lock.release()
            raise

    def _finish_pending(self) -> None:
        """Finish the batches Spark committed whose writes a crash cut short."""
        assert self.behind is not None
        for batch_id in self.behind.pending():
            watermark_ms, timestamp_ms = self._fix_batch(batch_id)
            self.finish(self.scan(lambda _ctx, b=batch_id: self.behind.load(b), batch_id,
                                  watermark_ms, timestamp_ms))
            self.behind.drop(batch_id)

    def _check_tables_exist(self, planned: tuple[int, int]) -> None:
        """Refuse to recreate tables under a checkpoint that has committed batches."""
        from streaming.engine.tables import is_delta, table_paths

        committed, _ = planned
        if committed < 0:
            return
        missing = [name for name, path in table_paths(self.spec).all().items()
                   if not is_delta(path)]
        if missing:
            raise CheckpointError(
                f"checkpoint {self.spec.sink.checkpoint} has committed batches up to "
                f"{committed}, but no {', '.join(missing)} table under {self.spec.sink.path} "
                "(deleted, or [sink] path changed): starting over there would lose what the "
                "checkpoint already consumed. Restore the tables or the old path, or delete "
                "the checkpoint too to start fresh")

    def _check_tables_agree(self, planned: tuple[int, int]) -> None:
        """Refuse tables that hold batches the checkpoint never planned."""
        assert self.tables is not None
        _, last_planned = planned
        for name, path in self.tables.all().items():
            done = committed_batch(path, self.app_id(name))
            if done is not None and done > last_planned:
                where = ("holds no batch" if last_planned < 0
                         else f"ends at batch {last_planned}")
                raise CheckpointError(
                    f"table {path} holds batch {done} of checkpoint "
                    f"{self.spec.sink.checkpoint}, but the checkpoint {where}: its query "
                    "state was deleted or restored from an older copy, and going on would "
                    "skip or double-count events. Restore the checkpoint and the tables "
                    "together, or delete both (tables and checkpoint) to start fresh")

    def stream(self) -> DataFrame:
        assert self.spark is not None
        return raw_stream(self.spark, self.spec)

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
        """Start and block until the query ends (available-now) or is interrupted.

        Raises :class:`~streaming.engine.write_behind.BatchWriteError` if a batch's
        writes failed after Spark committed it.
        """
        query = self.start(available_now=available_now)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not query.awaitTermination(1.0):
                if self.failed or (deadline is not None and time.monotonic() > deadline):
                    break
        finally:
            self.stop()

    @property
    def failed(self) -> bool:
        """Whether a batch's writes failed behind the query (:meth:`stop` raises it)."""
        return self.behind is not None and self.behind.failed

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
        try:
            if self.behind is not None:
                self.behind.wait()  # the batch behind ends its writes (or raises)
        finally:
            self.lock.release()

    # -- the micro-batch ---------------------------------------------------------
    def _fix_batch(self, batch_id: int) -> tuple[int, int]:
        """The batch's watermark and timestamp, fixed when it first ran (and its offsets'
        expected count, for the summary)."""
        assert self.checkpoint is not None and self.watermarks is not None
        meta = batch_meta(self.checkpoint.query_dir, batch_id)
        previous = None
        if batch_id > 0:
            with contextlib.suppress(CheckpointError):  # an offset log may be cleaned up
                previous = batch_meta(self.checkpoint.query_dir, batch_id - 1)
        self._offsets_expected = offset_gap(previous, meta)
        return self.watermarks.for_batch(batch_id, meta.timestamp_ms), meta.timestamp_ms

    def _process_batch(self, df: DataFrame, batch_id: int) -> None:
        assert self.behind is not None and self.checkpoint is not None
        self.behind.check()  # a batch behind failed: this one must not commit
        watermark_ms, timestamp_ms = self._fix_batch(batch_id)

        def partials(ctx: PassContext) -> pa.Table:
            # the Kafka source's own rows, as they are: no projection (see source.py)
            return df.mapInArrow(make_pass(ctx, kafka_rows=True), PASS_DDL).toArrow()

        scanned = self.scan(partials, batch_id, watermark_ms, timestamp_ms)
        assert scanned.table is not None
        if scanned.table.nbytes > OVERLAP_MAX_BYTES:
            self.behind.wait()
            self.finish(scanned)
            return
        # see streaming.engine.write_behind: the writes overlap the next batch's pass
        self.behind.save(batch_id, scanned.table)
        faults.maybe_crash("after_pending", batch_id)
        committed = self.checkpoint.query_dir / "commits" / str(batch_id)

        def finish_behind() -> None:
            faults.maybe_crash_when("behind", batch_id, committed.exists)
            faults.maybe_fail("behind", batch_id)
            self.finish(scanned)

        self.behind.submit(batch_id, finish_behind)

    def process(self, partials: Partials, batch_id: int, watermark_ms: int,
                timestamp_ms: int) -> BatchSummary:
        """Run and write one batch (see the module docstring).

        ``watermark_ms`` and ``timestamp_ms`` must be the values fixed for this
        batch before it first ran, so that a re-run decides identically.
        """
        return self.finish(self.scan(partials, batch_id, watermark_ms, timestamp_ms))

    def scan(self, partials: Partials, batch_id: int, watermark_ms: int,
             timestamp_ms: int) -> Scanned:
        """The batch's pass, and what it tells: the summary, the closing watermark.

        Records the partitions' state after the batch, which fixes the next batch's
        watermark (a re-run of this batch computes the same).
        """
        assert self.checkpoint is not None and self.tables is not None
        started = time.monotonic()
        phases: dict[str, float] = {}
        faults.maybe_crash("batch_start", batch_id)
        ctx = PassContext(self.spec, watermark_ms, timestamp_ms, self.track_latency)
        t = time.monotonic()
        table = partials(ctx)
        phases["read"] = time.monotonic() - t
        t = time.monotonic()
        rows = pass_rows(table)
        summary = self._summary(rows.stats, batch_id, watermark_ms, timestamp_ms)
        summary.closing_ms = (watermark_ms if self.watermarks is None
                              else self.watermarks.closing(batch_id, summary))
        if self.watermarks is not None:
            self.watermarks.record(batch_id, summary)
        phases["merge"] = time.monotonic() - t
        return Scanned(table, rows, summary, phases, started)

    def finish(self, scanned: Scanned) -> BatchSummary:
        """Merge a scanned batch into the windows and write the tables."""
        summary, phases = scanned.summary, scanned.phases
        sk_updates = self._write_tables(scanned)
        # rows made final keep no live sketch, but the newest window's (see fold)
        summary.sketches = {k: row.value for k, row in sk_updates.items()
                            if row.value is not None}
        summary.duration_s = time.monotonic() - scanned.started
        summary.phase_s = phases
        summary.committed_at = time.time()
        self._batches_done += 1
        if self.on_batch is not None:
            self.on_batch(summary)
        release_freed_memory()
        return summary

    def _summary(self, stats_rows: list[bytes], batch_id: int, watermark_ms: int,
                 timestamp_ms: int) -> BatchSummary:
        expected, resets = self._offsets_expected
        self._offsets_expected = (-1, 0)
        return summarize(stats_rows, batch_id, watermark_ms, timestamp_ms,
                         offsets_expected=expected, offset_resets=resets)

    def _write_tables(self, scanned: Scanned) -> dict:
        """The batch's writes; returns the sketch rows it changed.

        Each write is idempotent on its own (see the module docstring), so after a
        crash any prefix of them may have committed and the re-run completes the
        rest.
        """
        assert self.checkpoint is not None and self.tables is not None
        rows, summary, phases = scanned.rows, scanned.summary, scanned.phases
        tables = self.tables
        batch_id, wm_ms, ts_ms = summary.batch_id, summary.watermark_ms, summary.batch_timestamp_ms

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            t = time.monotonic()
            try:
                return fn()
            finally:
                phases[name] = phases.get(name, 0.0) + time.monotonic() - t

        found: dict[str, bool] = {}

        def written(name: str, path: str) -> bool:
            """Whether this batch's commit to ``name`` is in the table (a re-run); asked
            before this batch writes the table, so the answer is read once."""
            if name not in found:
                found[name] = committed_batch(path, self.app_id(name)) == batch_id
            return found[name]

        if summary.quarantined and not written("quarantine", tables.quarantine):
            faults.maybe_crash("in_quarantine", batch_id)
            timed("write_quarantine", lambda: commit(
                tables.quarantine, _quarantine_table(scanned.table, batch_id),
                app_id=self.app_id("quarantine"), batch_id=batch_id))
        faults.maybe_crash("after_quarantine", batch_id)
        # the pass's table held the quarantined records; the partials are in ``rows``
        scanned.table = None

        def table_write(name: str, state: Any, path: str, updates: dict,
                        closed: dict) -> None:
            write = state.open.plan(updates, summary.closing_ms, closed)
            if write:
                if written(name, path):
                    raise CheckpointError(
                        f"table {path} already holds batch {batch_id}, yet the batch still "
                        f"changes {len(write.rows)} of its rows: the open rows loaded at "
                        "start do not match the table; refusing to skip or repeat the write")
                faults.maybe_crash(f"in_{name}", batch_id)
                timed(f"write_{name}",
                      lambda: state.write(path, write, self.app_id(name), batch_id))
            faults.maybe_crash(f"after_{name}", batch_id)

        def closed_rows(state: Any, name: str, path: str, keys: Iterable[Key]) -> dict:
            # windows closed before this batch are reached only by late rows folded in
            # (late = "update"): read their rows back to update them. A re-run of a batch
            # the table already holds also reads back the rows that batch finalised (they
            # left memory, not the table), so that it finds nothing left to change.
            cutoff = summary.closing_ms if written(name, path) else wm_ms
            return state.load_closed(path, state.open.closed(keys, cutoff))

        # the pass's rows are dropped once merged: a batch spanning months has many
        agg_partials = timed("aggregates", lambda: self.aggregates.window_partials(rows.metrics))
        rows.metrics = []
        agg_closed = timed("aggregates", lambda: closed_rows(
            self.aggregates, "aggregates", tables.aggregates, agg_partials))
        agg_updates = timed("aggregates", lambda: self.aggregates.fold(
            agg_partials, batch_id, ts_ms, agg_closed))
        agg_partials.clear()
        table_write("aggregates", self.aggregates, tables.aggregates, agg_updates, agg_closed)

        def fold_sketches() -> tuple[dict, dict]:
            keys = sketch_state.partial_keys(rows.sketches, self.spec)
            closed = closed_rows(self.sketches, "sketches", tables.sketches, keys)
            keep = sketch_state.newest_windows(keys, ts_ms * 1000)
            del keys
            merged = sketch_state.iter_merged(rows.sketches, self.spec)
            rows.sketches = []  # the merge holds them, and lets them go pane by pane
            return self.sketches.fold(merged, batch_id, ts_ms, closed,
                                      closing_ms=summary.closing_ms, keep_live=keep), closed

        sk_updates, sk_closed = timed("sketches", fold_sketches)
        table_write("sketches", self.sketches, tables.sketches, sk_updates, sk_closed)
        return sk_updates


def _quarantine_table(table: pa.Table, batch_id: int) -> pa.Table:
    """The quarantined records of a batch as rows of the ``quarantine`` table."""
    import pyarrow.compute as pc

    q = table.filter(pc.equal(table.column("kind"), "q"))
    n = q.num_rows
    reason = q.column("reason")
    code = pc.list_element(pc.split_pattern(reason, ":", max_splits=1), 0)
    now_us = int(time.time() * 1_000_000)
    return pa.table({
        "key": q.column("key"), "value": q.column("b"), "topic": q.column("topic"),
        "partition": q.column("part"), "offset": q.column("off"),
        "source_timestamp": q.column("src_ts"), "reason_code": code, "reason": reason,
        "event_time": q.column("et").cast(pa.timestamp("us", tz="UTC")),
        "batch_id": pa.array([batch_id] * n, pa.int64()),
        "quarantined_at": pa.array([now_us] * n, pa.timestamp("us", tz="UTC")),
    }, schema=QUARANTINE_SCHEMA)
