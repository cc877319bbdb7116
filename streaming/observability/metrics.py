"""Every Prometheus metric of the service (the scrape-time ones in :mod:`.scrape`).

Three feeds, one registry:

* :meth:`PipelineMetrics.listener` - a ``StreamingQueryListener`` that only
  updates in-memory metrics (throughput, batch latency, consumer lag, watermark,
  query up/failed). It does no I/O and takes no lock a batch holds.
* :meth:`PipelineMetrics.on_batch` - called after every micro-batch with the
  pipeline's ``BatchSummary``: late and quarantined rows, per-phase seconds, open
  sketch state, the current window's sketches, Delta commits and live files.
* a custom collector that computes, at scrape time, what depends on "now" or on
  a sketch (watermark lag, distinct estimates and bounds, top-k, Bloom fill).

Nothing is registered in the process-global registry and importing the module
starts nothing: the entrypoint builds a :class:`PipelineMetrics`, attaches it to
a pipeline and calls :meth:`PipelineMetrics.serve`. docs/metrics.md lists every
metric.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> m = PipelineMetrics(CollectorRegistry())
    >>> b"streamsketch_late_rows_total{" in generate_latest(m.registry)
    False
    >>> from streaming.engine.summary import BatchSummary
    >>> m.on_batch(BatchSummary(0, 0, 0, rows=3, valid=2, late=1, quarantined={"late": 1}))
    >>> b'streamsketch_late_rows_total{query="default"} 1.0' in generate_latest(m.registry)
    True
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pyspark.sql.streaming.listener import StreamingQueryListener

from streaming.engine.decode import REASONS
from streaming.observability.delta_log import DeltaLogCounter
from streaming.observability.scrape import NS, ScrapeCollector, WindowView

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streaming.engine.pipeline import Pipeline
    from streaming.engine.summary import BatchSummary
    from streaming.observability.server import SnapshotServer

#: input partitions exported by name (bounded label cardinality)
MAX_PARTITION_LABELS = 64

log = logging.getLogger(__name__)

BATCH_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
#: a /metrics exposition is rendered at most this often; scrapes in between get it again
SCRAPE_CACHE_S = 0.5


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _offsets_behind(latest: str | None, end: str | None) -> int | None:
    """Sum over partitions of latest - end offsets (Kafka offset JSON), or None."""
    try:
        lat, cur = json.loads(latest or "null"), json.loads(end or "null")
    except ValueError:
        return None
    if not isinstance(lat, dict) or not isinstance(cur, dict):
        return None
    behind = 0
    for topic, parts in lat.items():
        done = cur.get(topic, {})
        if not isinstance(parts, dict) or not isinstance(done, dict):
            return None
        for p, off in parts.items():
            if p in done:
                behind += max(0, int(off) - int(done[p]))
    return behind


# -- per-query state kept by on_batch -----------------------------------------------
@dataclass
class _QueryState:
    #: (window, start) -> (window end, partial rows, their bytes)
    open_entries: dict[tuple, tuple[int, int, int]] = field(default_factory=dict)
    windows_seen: set[str] = field(default_factory=set)
    delta: dict[str, DeltaLogCounter] = field(default_factory=dict)


class PipelineMetrics:
    """All metrics of one service process, in one registry.

    Args:
        registry: where to register; a fresh ``CollectorRegistry`` when None (never
            the process-global default registry).
        top_k_labels: at most this many top-k series (rank 1..k) per Count-Min sketch.

    Example:
        >>> m = PipelineMetrics()
        >>> m.registry is not None and m.top_k_labels
        10
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 top_k_labels: int = 10) -> None:
        if top_k_labels < 1:
            raise ValueError(f"top_k_labels must be >= 1, got {top_k_labels}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.top_k_labels = top_k_labels
        r, q = self.registry, ("query",)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = q) -> Gauge:
            return Gauge(f"{NS}_{name}", doc, labels, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = q) -> Counter:
            return Counter(f"{NS}_{name}", doc, labels, registry=r)

        # listener-fed
        self.query_up = gauge("query_up", "1 while the streaming query runs, else 0")
        self.query_failed = gauge("query_failed",
                                  "1 if the query's last run ended with an exception")
        self.query_failures = counter("query_failures_total",
                                      "Query runs that ended with an exception")
        self.query_starts = counter("query_starts_total", "Query (re)starts")
        self.last_progress = gauge("query_last_progress_timestamp_seconds",
                                   "Unix time of the last progress or idle event (alive)")
        self.input_rate = gauge("input_rows_per_second",
                                "Rows/s arriving from the source in the last batch")
        self.processed_rate = gauge("processed_rows_per_second",
                                    "Rows/s processed in the last batch")
        self.input_rows = counter("input_rows_total", "Rows read from the source")
        self.batch_rows = gauge("batch_input_rows", "Rows in the last micro-batch")
        self.batch_duration = Histogram(f"{NS}_batch_duration_seconds",
                                        "Wall time of a micro-batch (trigger to commit)", q,
                                        buckets=BATCH_BUCKETS, registry=r)
        self.trigger_duration = gauge("trigger_operation_seconds",
                                      "Seconds the last trigger spent per Spark operation",
                                      ("query", "operation"))
        self.last_batch_id = gauge("last_batch_id", "Id of the last completed batch")
        self.consumer_lag = gauge("consumer_lag_offsets",
                                  "Kafka offsets behind latest, summed over partitions",
                                  ("query", "source"))
        self.consumer_lag_max = gauge("consumer_max_partition_lag_offsets",
                                      "Kafka offsets behind latest of the worst partition",
                                      ("query", "source"))
        self.watermark = gauge("watermark_timestamp_seconds", "Event-time watermark (Unix time)")
        self.partition_event_time = gauge(
            "partition_event_time_seconds",
            "Latest event time read from an input partition (Unix time); the watermark is "
            f"the minimum over active partitions minus the delay (first {MAX_PARTITION_LABELS} "
            "partitions by name)", (*q, "partition"))
        self.watermark_delay = gauge("watermark_delay_seconds",
                                     "Configured watermark delay of the spec")
        # on_batch-fed
        self.batches = counter("batches_total", "Micro-batches whose writes committed")
        self.valid_rows = counter("valid_rows_total", "Rows aggregated into windows")
        self.late_rows = counter("late_rows_total",
                                 "Rows later than the watermark: quarantined (reason=late), "
                                 "or folded into their closed windows under late = update")
        self.offset_gap = counter("source_offset_gap_records_total",
                                  "Kafka offsets a batch covered that delivered no record: "
                                  "data lost to retention or deletion with failOnDataLoss "
                                  "off (transaction markers and compaction also leave gaps)")
        self.offset_resets = counter("source_offset_resets_total",
                                     "Partitions whose offsets went backwards between two "
                                     "batches (topic deleted and recreated)")
        self.quarantined = counter("quarantined_records_total",
                                   "Records written to the quarantine table, by reason code",
                                   ("query", "reason"))
        self.phase_seconds = Histogram(f"{NS}_batch_phase_seconds",
                                       "Seconds of one phase of the batch function",
                                       ("query", "phase"), buckets=PHASE_BUCKETS, registry=r)
        self.state_entries = gauge("state_entries",
                                   "Open (not yet final) window x group x sketch entries",
                                   ("query", "window"))
        self.state_bytes = gauge("state_bytes", "Serialized bytes of the open sketch entries",
                                 ("query", "window"))
        self.errors = counter("metrics_errors_total",
                              "Exceptions swallowed by the metrics code (never the pipeline)",
                              ("where",))
        self.renders = counter("metrics_renders_total",
                               "Expositions rendered for the metrics server (one serves "
                               "every scrape within 0.5 s)", ())
        for where in ("listener", "on_batch", "scrape", "server"):
            self.errors.labels(where)
        # state shared with the scrape: published by reference swap under a tiny lock
        self._publish_lock = threading.Lock()
        self._views: dict[tuple[str, str, str], WindowView] = {}
        self._delta_values: dict[tuple[str, str], tuple[int, int | None]] = {}
        self._watermarks: dict[str, float] = {}
        self._names: dict[str, str] = {}  # query id -> name (idle/terminated carry no name)
        # serialises on_batch calls; the scrape never takes it
        self._batch_lock = threading.Lock()
        self._queries: dict[str, _QueryState] = {}
        self._listener: StreamingQueryListener | None = None
        self._spark: SparkSession | None = None
        r.register(ScrapeCollector(self))

    # -- listener ------------------------------------------------------------------
    def listener(self) -> StreamingQueryListener:
        """A new listener feeding these metrics (register it with ``spark.streams``)."""
        return _MetricsListener(self)

    def _query_of(self, qid: Any, name: str | None = None) -> str:
        key = str(qid)
        if name:
            self._names[key] = name
            return name
        return self._names.get(key, key)

    def _started(self, qid: Any, name: str | None) -> None:
        q = self._query_of(qid, name)
        self.query_up.labels(q).set(1)
        self.query_failed.labels(q).set(0)
        self.query_failures.labels(q)
        self.query_starts.labels(q).inc()
        self.last_progress.labels(q).set(time.time())

    def _progress(self, p: Any) -> None:
        q = self._query_of(p.id, p.name)
        self.query_up.labels(q).set(1)
        self.last_progress.labels(q).set(time.time())
        self.last_batch_id.labels(q).set(p.batchId)
        rows = int(p.numInputRows or 0)
        self.input_rows.labels(q).inc(rows)
        self.batch_rows.labels(q).set(rows)
        self.input_rate.labels(q).set(_finite(p.inputRowsPerSecond) or 0.0)
        self.processed_rate.labels(q).set(_finite(p.processedRowsPerSecond) or 0.0)
        if p.batchDuration is not None and p.batchDuration >= 0:
            self.batch_duration.labels(q).observe(p.batchDuration / 1000.0)
        for op, ms in (p.durationMs or {}).items():
            self.trigger_duration.labels(q, op).set(float(ms) / 1000.0)
        for src in p.sources or ():
            desc = str(src.description)
            behind = _offsets_behind(src.latestOffset, src.endOffset)
            metrics = src.metrics or {}
            worst = _finite(metrics.get("maxOffsetsBehindLatest"))
            if behind is None and worst is not None:
                behind = int(worst)
            if behind is not None:
                self.consumer_lag.labels(q, desc).set(behind)
            if worst is not None:
                self.consumer_lag_max.labels(q, desc).set(worst)

    def _idle(self, qid: Any) -> None:
        q = self._query_of(qid)
        self.last_progress.labels(q).set(time.time())
        self.input_rate.labels(q).set(0.0)
        self.processed_rate.labels(q).set(0.0)

    def _terminated(self, qid: Any, exception: str | None) -> None:
        q = self._query_of(qid)
        self.query_up.labels(q).set(0)
        if exception:
            self.query_failures.labels(q).inc()
            self.query_failed.labels(q).set(1)

    # -- batches -------------------------------------------------------------------
    def on_batch(self, summary: BatchSummary, *, query: str = "default",
                 tables: Mapping[str, str] | None = None) -> None:
        """Record one committed micro-batch; never raises (errors are counted).

        Args:
            summary: the pipeline's ``BatchSummary``.
            query: the ``query`` label (``attach`` passes the pipeline's query name).
            tables: Delta tables to count commits and files of, name -> path.
        """
        try:
            with self._batch_lock:
                self._observe(summary, query, tables or {})
        except Exception:  # noqa: BLE001 - metrics must never fail a batch
            self.errors.labels("on_batch").inc()
            log.warning("metrics: on_batch failed", exc_info=True)

    def _observe(self, s: BatchSummary, q: str, tables: Mapping[str, str]) -> None:
        st = self._queries.get(q)
        if st is None:
            st = self._queries[q] = _QueryState()
            for reason in REASONS:
                self.quarantined.labels(q, reason)
        self.batches.labels(q).inc()
        if s.watermark_ms > 0:
            wm = s.watermark_ms / 1000.0
            self.watermark.labels(q).set(wm)
            with self._publish_lock:
                self._watermarks[q] = wm
        for part, ms in sorted(s.partition_event_ms.items())[:MAX_PARTITION_LABELS]:
            self.partition_event_time.labels(q, part).set(ms / 1000.0)
        self.valid_rows.labels(q).inc(s.valid)
        self.late_rows.labels(q).inc(s.late)
        self.offset_gap.labels(q).inc(s.offset_gap)
        self.offset_resets.labels(q).inc(s.offset_resets)
        for reason, n in s.quarantined.items():
            self.quarantined.labels(q, reason if reason in REASONS else "other").inc(n)
        for phase, secs in s.phase_s.items():
            self.phase_seconds.labels(q, phase).observe(secs)
        self._observe_state(st, s, q)
        views = self._current_windows(s, q)
        delta = {}
        for name, path in tables.items():
            counter = st.delta.setdefault(name, DeltaLogCounter(path))
            delta[(q, name)] = counter.refresh()
        with self._publish_lock:
            self._views = {**self._views, **views}
            self._delta_values = {**self._delta_values, **delta}

    def _observe_state(self, st: _QueryState, s: BatchSummary, q: str) -> None:
        """Open state: the partial rows written for windows the watermark has not closed
        (they are merged into one row each once it does)."""
        for (wname, start), (end_us, n, nbytes) in s.open_windows.items():
            _, have_n, have_b = st.open_entries.get((wname, start), (0, 0, 0))
            st.open_entries[(wname, start)] = (end_us, have_n + n, have_b + nbytes)
            st.windows_seen.add(wname)
        cutoff = s.watermark_ms * 1000
        st.open_entries = {k: v for k, v in st.open_entries.items() if v[0] > cutoff}
        totals = {w: [0, 0] for w in st.windows_seen}
        for (wname, _), (_, n, nbytes) in st.open_entries.items():
            totals[wname][0] += n
            totals[wname][1] += nbytes
        for wname, (n, nbytes) in totals.items():
            self.state_entries.labels(q, wname).set(n)
            self.state_bytes.labels(q, wname).set(nbytes)

    def _current_windows(self, s: BatchSummary, q: str) -> dict[tuple[str, str, str], WindowView]:
        """New views for the (window, sketch) pairs this batch touched in their newest window.

        The newest window is the one with the latest start not after the batch
        time (a stray future event does not hijack it). A batch's sketch of it holds
        that batch's events only: it is merged into the view of the same window.
        """
        out = {}
        for (wname, sname), (ws, kind, sketch) in s.views.items():
            old = self._views.get((q, wname, sname))
            if old is not None and old.start_us > ws:
                continue
            if old is not None and old.start_us == ws:
                merged = sketch.copy()
                merged.merge(old.union)
                sketch = merged
            out[(q, wname, sname)] = WindowView(q, wname, sname, kind, ws, {"*": sketch})
        return out

    # -- wiring --------------------------------------------------------------------
    def attach(self, spark: SparkSession, pipeline: Pipeline) -> PipelineMetrics:
        """Register the listener and chain :meth:`on_batch` onto ``pipeline.on_batch``.

        The previous callback still runs, after this one. Returns self.
        """
        if self._listener is None:
            self._listener = self.listener()
            spark.streams.addListener(self._listener)
            self._spark = spark
        query = pipeline.query_name
        self.watermark_delay.labels(query).set(pipeline.spec.events.watermark_s)
        previous: Callable[[BatchSummary], None] | None = pipeline.on_batch

        def on_batch(summary: BatchSummary) -> None:
            tables = pipeline.tables.all() if pipeline.tables is not None else None
            self.on_batch(summary, query=query, tables=tables)
            if previous is not None:
                previous(summary)

        pipeline.on_batch = on_batch
        return self

    def detach(self) -> None:
        """Remove the listener :meth:`attach` registered (the batch hook stays)."""
        if self._listener is not None and self._spark is not None:
            self._spark.streams.removeListener(self._listener)
        self._listener = self._spark = None

    def published(self) -> tuple[dict[tuple[str, str, str], WindowView],
                                  dict[tuple[str, str], tuple[int, int | None]],
                                  dict[str, float]]:
        """The last published snapshot: window views, Delta log counts, watermarks."""
        with self._publish_lock:
            return self._views, self._delta_values, dict(self._watermarks)

    def serve(self, host: str, port: int) -> SnapshotServer:
        """Serve ``/metrics`` of this registry on ``host:port`` from a child process.

        The driver renders at most once per :data:`SCRAPE_CACHE_S` however many scrapers
        ask; accepting and answering them happens in the child (see
        :mod:`streaming.observability.server`). Port 0 picks a free port
        (``server.server_port``); ``server.shutdown()`` stops it.

        Raises:
            ConfigError: the address cannot be bound (e.g. the port is in use).
        """
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from streaming.observability.server import SnapshotServer

        registry = self.registry

        def render() -> bytes:
            self.renders.inc()
            return generate_latest(registry)

        return SnapshotServer(render, host, port, content_type=CONTENT_TYPE_LATEST,
                              max_age=SCRAPE_CACHE_S,
                              on_error=self.errors.labels("server").inc)


def _sketch_nbytes(sketch: Any) -> int:
    """Serialized size: what the entry's row in the Delta ``sketches`` table holds."""
    return len(sketch.to_bytes())


class _MetricsListener(StreamingQueryListener):
    """Updates :class:`PipelineMetrics` from query events: in-memory only, no I/O."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self._m = metrics

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - never break Spark's listener bus
            self._m.errors.labels("listener").inc()

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 - Spark's API
        self._guard(self._m._started, event.id, event.name)

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        self._guard(self._m._progress, event.progress)

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        self._guard(self._m._idle, event.id)

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        self._guard(self._m._terminated, event.id, event.exception)
