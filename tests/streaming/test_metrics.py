"""streaming.observability.metrics without a JVM: fake query events, real sketches,
a fake Delta log.

:func:`feed` drives every code path of :class:`PipelineMetrics`; the naming test
proves it leaves no metric without a sample, so tests/dashboards uses it to learn
which names the service exports.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sketches
from streaming.engine.summary import BatchSummary
from streaming.engine.window_state import SketchKey
from streaming.observability.delta_log import DeltaLogCounter
from streaming.observability.metrics import PipelineMetrics
from streaming.spec.windows import SketchSpec, WindowSpec

QUERY = "streamsketch_test"
QID = "8b6b9b39-2f5c-4a7e-9f1c-1b2b3c4d5e6f"
T0_MS = 1_795_000_000_000  # a batch timestamp (2026-11-19)
US = 1_000_000

HLL = SketchSpec("users", "hll", "user_id", (("precision", 12), ("seed", 0)))
CMS = SketchSpec("pages", "cms", "page", (("width", 272), ("depth", 4), ("top_k", 10),
                                           ("seed", 0)))
BLOOM = SketchSpec("seen", "bloom", "user_id", (("capacity", 10_000), ("error_rate", 0.01),
                                                ("seed", 0)))
QUANT = SketchSpec("amounts", "quantiles", "amount", (("relative_accuracy", 0.01),))
MINUTELY = WindowSpec("minutely", 60, 60, (), sketches=(HLL, CMS, BLOOM))
HOURLY = WindowSpec("hourly_by_country", 3600, 900, ("country",), sketches=(HLL, CMS, QUANT))


# -- fake inputs ----------------------------------------------------------------------
def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def started_event(qid: str = QID, name: str = QUERY):
    from pyspark.sql.streaming.listener import QueryStartedEvent

    return QueryStartedEvent.fromJson({"id": qid, "runId": str(uuid.uuid4()), "name": name,
                                       "timestamp": iso(T0_MS), "jobTags": []})


def progress_event(batch_id: int, *, rows: int = 1000, watermark_ms: int = T0_MS - 120_000,
                   end: tuple[int, int] = (100, 120), latest: tuple[int, int] = (150, 200),
                   qid: str = QID, name: str = QUERY, topic: str = "clicks"):
    """A progress event shaped like Spark 4.2's JSON for our Kafka -> foreachBatch query."""
    from pyspark.sql.streaming.listener import QueryProgressEvent

    behind = [lt - e for lt, e in zip(latest, end, strict=True)]
    return QueryProgressEvent.fromJson({"progress": {
        "id": qid, "runId": str(uuid.uuid4()), "name": name, "timestamp": iso(T0_MS),
        "batchId": batch_id, "batchDuration": 2500, "numInputRows": rows,
        "inputRowsPerSecond": 800.0, "processedRowsPerSecond": 1200.0,
        "durationMs": {"addBatch": 2300, "getBatch": 0, "latestOffset": 12, "queryPlanning": 40,
                       "triggerExecution": 2500, "walCommit": 30, "commitOffsets": 25},
        "eventTime": {"avg": iso(watermark_ms + 60_000), "max": iso(watermark_ms + 120_000),
                      "min": iso(watermark_ms), "watermark": iso(watermark_ms)},
        "stateOperators": [],
        "sources": [{
            "description": f"KafkaV2[Subscribe[{topic}]]",
            "startOffset": {topic: {"0": 0, "1": 0}},
            "endOffset": {topic: {"0": end[0], "1": end[1]}},
            "latestOffset": {topic: {"0": latest[0], "1": latest[1]}},
            "numInputRows": rows, "inputRowsPerSecond": 800.0, "processedRowsPerSecond": 1200.0,
            "metrics": {"avgOffsetsBehindLatest": str(sum(behind) / 2),
                        "maxOffsetsBehindLatest": str(max(behind)),
                        "minOffsetsBehindLatest": str(min(behind))}}],
        "sink": {"description": "ForeachBatchSink", "numOutputRows": -1},
    }})


def idle_event(qid: str = QID):
    from pyspark.sql.streaming.listener import QueryIdleEvent

    return QueryIdleEvent.fromJson({"id": qid, "runId": str(uuid.uuid4()),
                                    "timestamp": iso(T0_MS)})


def terminated_event(exception: str | None = None, qid: str = QID):
    from pyspark.sql.streaming.listener import QueryTerminatedEvent

    return QueryTerminatedEvent.fromJson({"id": qid, "runId": str(uuid.uuid4()),
                                          "exception": exception,
                                          "errorClassOnException": None})


class Cell:
    """One (window, group, sketch) cell of a batch, as the merge stage builds it."""

    def __init__(self, window: WindowSpec, sketch_spec: SketchSpec, window_start_us: int,
                 group_key: str, sketch: object) -> None:
        self.window, self.sketch_spec = window, sketch_spec
        self.window_start_us, self.group_key, self.sketch = window_start_us, group_key, sketch


def reduced(entries, ts_ms: int, watermark_ms: int) -> tuple[dict, dict]:
    """What the merge stage reports of a batch's cells: per (window, sketch) the union of
    the newest window's groups (start <= batch time), and per open window its rows."""
    newest: dict = {}
    for key, _m in entries:
        if key.start_us <= ts_ms * 1000:
            k = (key.window, key.sketch)
            newest[k] = max(newest.get(k, key.start_us), key.start_us)
    views: dict = {}
    open_windows: dict = {}
    for key, m in entries:
        k = (key.window, key.sketch)
        if newest.get(k) == key.start_us:
            if k in views:
                merged = views[k][2].copy()
                merged.merge(m.sketch)
                views[k] = (key.start_us, m.sketch_spec.kind, merged)
            else:
                views[k] = (key.start_us, m.sketch_spec.kind, m.sketch)
        end = key.start_us + m.window.size_s * US
        if end > watermark_ms * 1000:
            _, n, b = open_windows.get((key.window, key.start_us), (end, 0, 0))
            open_windows[(key.window, key.start_us)] = (end, n + 1, b + len(m.sketch.to_bytes()))
    return views, open_windows


def entry(window: WindowSpec, spec: SketchSpec, start_us: int, group: str, values) -> tuple:
    sk = spec.new() if spec.kind != "cms" else sketches.CountMinSketch(
        width=272, depth=4, top_k=10, seed=0)
    sk.update(values)
    return (SketchKey(window.name, start_us, group, spec.name),
            Cell(window, spec, start_us, group, sk))


#: input partitions of the fed batches and their latest event times
PARTITIONS = {"clickstream:0": T0_MS - 5_000, "clickstream:1": T0_MS - 1_000}


def summary(batch_id: int, *, watermark_ms: int = T0_MS - 120_000, ts_ms: int = T0_MS,
            entries: list[tuple] = (), valid: int = 900, late: int = 10,
            quarantined: dict | None = None) -> BatchSummary:
    q = {"invalid_json": 5, "late": late} if quarantined is None else quarantined
    s = BatchSummary(batch_id, watermark_ms, ts_ms, rows=valid + sum(q.values()), valid=valid,
                     late=late, quarantined=q, duration_s=2.0,
                     phase_s={"quarantine": 0.2, "aggregates": 0.7, "sketches": 0.9,
                              "final": 0.1})
    s.views, s.open_windows = reduced(entries, ts_ms, watermark_ms)
    s.partition_event_ms = dict(PARTITIONS)
    s.partitions = sorted(PARTITIONS)
    return s


def amounts(seed: int) -> np.ndarray:
    return np.round(np.random.default_rng(seed).lognormal(3.0, 1.0, 400), 2)


def clickstream_entries(start_ms: int, n_users: int = 500, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in rng.integers(0, n_users * 3, n_users)]
    pages = [f"/p/{i}" for i in rng.zipf(1.3, 3000) % 200]
    ws = start_ms * 1000
    hs = (start_ms - start_ms % 900_000) * 1000
    out = [entry(MINUTELY, HLL, ws, "[]", users), entry(MINUTELY, CMS, ws, "[]", pages),
           entry(MINUTELY, BLOOM, ws, "[]", users)]
    for i, country in enumerate(("US", "DE")):
        out += [entry(HOURLY, HLL, hs, f'["{country}"]', users[: n_users // 2]),
                entry(HOURLY, CMS, hs, f'["{country}"]', pages[:1000]),
                entry(HOURLY, QUANT, hs, f'["{country}"]', amounts(seed + i))]
    return out


def write_delta_log(root: Path, commits: list[list[dict]]) -> Path:
    log = root / "_delta_log"
    log.mkdir(parents=True, exist_ok=True)
    start = len(list(log.glob("*.json")))
    for i, actions in enumerate(commits, start=start):
        (log / f"{i:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    return root


def feed(m: PipelineMetrics, tmp_path: Path) -> None:
    """Every event kind and a batch touching every sketch kind and a Delta table."""
    table = write_delta_log(tmp_path / "sketches", [
        [{"protocol": {}}, {"metaData": {}}],
        [{"add": {"path": "a.parquet"}}, {"add": {"path": "b.parquet"}}],
        [{"remove": {"path": "a.parquet"}}, {"add": {"path": "c.parquet"}}]])
    lst = m.listener()
    lst.onQueryStarted(started_event())
    lst.onQueryProgress(progress_event(0))
    m.on_batch(summary(0, entries=clickstream_entries(T0_MS - 30_000)), query=QUERY,
               tables={"sketches": str(table)})
    lst.onQueryProgress(progress_event(1))
    lst.onQueryIdle(idle_event())
    lst.onQueryTerminated(terminated_event("boom"))
    m.watermark_delay.labels(QUERY).set(120)


def families(m: PipelineMetrics) -> dict:
    text = generate_latest(m.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_values(m: PipelineMetrics, name: str) -> list[tuple[dict, float]]:
    out = []
    for fam in families(m).values():
        out += [(s.labels, s.value) for s in fam.samples if s.name == name]
    return out


def value(m: PipelineMetrics, name: str, **labels) -> float:
    found = [v for lab, v in sample_values(m, name) if all(lab.get(k) == x
                                                          for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# -- conventions -------------------------------------------------------------------
TIME_WORDS = ("duration", "latency", "elapsed", "timestamp", "delay", "watermark_lag",
              "_time", "seconds_since")


def test_every_metric_follows_the_naming_conventions(tmp_path):
    m = PipelineMetrics(CollectorRegistry())
    feed(m, tmp_path)
    fams = families(m)
    assert len(fams) >= 30
    for name, fam in fams.items():
        samples = [s.name for s in fam.samples]
        assert name.startswith("streamsketch_"), name
        assert fam.documentation.strip(), f"{name} has no help text"
        for bad in ("_ms", "_milliseconds", "_minutes", "_hours", "_kb", "_mb"):
            assert bad + "_" not in name + "_", f"{name}: not a base unit"
        if fam.type == "counter":
            assert all(s.endswith(("_total", "_created")) for s in samples), (name, samples)
        else:
            assert not name.endswith("_total"), f"gauge/histogram named like a counter: {name}"
        base = name.removesuffix("_created")
        if any(w in base for w in TIME_WORDS) or fam.type == "histogram" and "row" not in base:
            assert base.endswith("_seconds"), f"time without _seconds: {name}"
        if name.endswith("_created"):
            continue  # client_python's creation time of a counter/histogram
        assert samples, f"the feed left {name} without a sample"


def test_importing_registers_and_starts_nothing():
    code = ("import threading, prometheus_client as p\n"
            "names = set(p.REGISTRY._names_to_collectors); n = threading.active_count()\n"
            "import streaming.observability.metrics\n"
            "assert set(p.REGISTRY._names_to_collectors) == names\n"
            "assert threading.active_count() == n\n"
            "m = streaming.observability.metrics.PipelineMetrics()\n"
            "assert set(p.REGISTRY._names_to_collectors) == names\n"
            "assert threading.active_count() == n\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "ok", out.stderr


# -- values ------------------------------------------------------------------------
def test_listener_feeds_throughput_lag_watermark_and_health():
    m = PipelineMetrics(CollectorRegistry())
    lst = m.listener()
    lst.onQueryStarted(started_event())
    assert value(m, "streamsketch_query_up", query=QUERY) == 1
    lst.onQueryProgress(progress_event(4, rows=1000, end=(100, 120), latest=(150, 200)))
    lst.onQueryProgress(progress_event(5, rows=500, end=(150, 200), latest=(160, 230)))
    assert value(m, "streamsketch_input_rows_total", query=QUERY) == 1500
    assert value(m, "streamsketch_batch_input_rows", query=QUERY) == 500
    assert value(m, "streamsketch_last_batch_id", query=QUERY) == 5
    assert value(m, "streamsketch_input_rows_per_second", query=QUERY) == 800
    assert value(m, "streamsketch_processed_rows_per_second", query=QUERY) == 1200
    assert value(m, "streamsketch_batch_duration_seconds_count", query=QUERY) == 2
    assert value(m, "streamsketch_batch_duration_seconds_sum", query=QUERY) == 5.0
    assert value(m, "streamsketch_trigger_operation_seconds", query=QUERY,
                 operation="addBatch") == 2.3
    src = "KafkaV2[Subscribe[clicks]]"
    assert value(m, "streamsketch_consumer_lag_offsets", query=QUERY, source=src) == 10 + 30
    assert value(m, "streamsketch_consumer_max_partition_lag_offsets", query=QUERY,
                 source=src) == 30
    # the watermark is the engine's own (per partition), so it comes with the batch
    m.on_batch(summary(5, watermark_ms=T0_MS - 120_000), query=QUERY)
    wm = value(m, "streamsketch_watermark_timestamp_seconds", query=QUERY)
    assert wm == (T0_MS - 120_000) / 1000
    lag = value(m, "streamsketch_watermark_lag_seconds", query=QUERY)
    assert abs(lag - (time.time() - wm)) < 5  # computed at scrape time
    for part, latest_ms in PARTITIONS.items():
        assert value(m, "streamsketch_partition_event_time_seconds", query=QUERY,
                     partition=part) == latest_ms / 1000
    lst.onQueryIdle(idle_event())  # idle events carry no name: mapped by query id
    assert value(m, "streamsketch_input_rows_per_second", query=QUERY) == 0
    lst.onQueryTerminated(terminated_event(None))
    assert value(m, "streamsketch_query_up", query=QUERY) == 0
    assert value(m, "streamsketch_query_failed", query=QUERY) == 0
    lst.onQueryStarted(started_event())
    lst.onQueryTerminated(terminated_event("java.lang.RuntimeException: boom"))
    assert value(m, "streamsketch_query_failed", query=QUERY) == 1
    assert value(m, "streamsketch_query_failures_total", query=QUERY) == 1
    assert value(m, "streamsketch_query_starts_total", query=QUERY) == 2
    assert value(m, "streamsketch_metrics_errors_total", where="listener") == 0


def test_on_batch_counts_rows_reasons_phases_and_open_state():
    m = PipelineMetrics(CollectorRegistry())
    ws = T0_MS - 30_000
    first = clickstream_entries(ws)
    m.on_batch(summary(0, entries=first, watermark_ms=0,
                       quarantined={"invalid_json": 5, "late": 10, "not_a_code": 1}),
               query=QUERY)
    m.on_batch(summary(1, entries=[], watermark_ms=T0_MS - 120_000), query=QUERY)
    assert value(m, "streamsketch_valid_rows_total", query=QUERY) == 1800
    assert value(m, "streamsketch_late_rows_total", query=QUERY) == 20
    assert value(m, "streamsketch_quarantined_records_total", query=QUERY, reason="late") == 20
    assert value(m, "streamsketch_quarantined_records_total", query=QUERY,
                 reason="invalid_json") == 10
    assert value(m, "streamsketch_quarantined_records_total", query=QUERY, reason="other") == 1
    # every reason code has a series from the first batch on (rate() needs it)
    assert value(m, "streamsketch_quarantined_records_total", query=QUERY,
                 reason="null_value") == 0
    assert value(m, "streamsketch_batch_phase_seconds_count", query=QUERY, phase="sketches") == 2
    assert value(m, "streamsketch_batches_total", query=QUERY) == 2
    nbytes = sum(len(e[1].sketch.to_bytes()) for e in first if e[0][0] == "minutely")
    assert value(m, "streamsketch_state_entries", query=QUERY, window="minutely") == 3
    assert value(m, "streamsketch_state_bytes", query=QUERY, window="minutely") == nbytes
    # 2 countries x 3 sketches (HLL, CMS, quantiles)
    assert value(m, "streamsketch_state_entries", query=QUERY, window="hourly_by_country") == 6
    # the watermark passes the minute's end: its entries are final, no longer open
    m.on_batch(summary(2, entries=[], watermark_ms=ws + 60_000), query=QUERY)
    assert value(m, "streamsketch_state_entries", query=QUERY, window="minutely") == 0
    assert value(m, "streamsketch_state_bytes", query=QUERY, window="minutely") == 0
    # 2 countries x 3 sketches (HLL, CMS, quantiles)
    assert value(m, "streamsketch_state_entries", query=QUERY, window="hourly_by_country") == 6


def test_current_window_merges_groups_and_follows_the_newest_window():
    m = PipelineMetrics(CollectorRegistry())
    hs = (T0_MS - T0_MS % 900_000) * 1000
    us = [entry(HOURLY, HLL, hs, '["US"]', [f"u{i}" for i in range(3000)])]
    de = [entry(HOURLY, HLL, hs, '["DE"]', [f"u{i}" for i in range(2000, 6000)])]
    m.on_batch(summary(0, entries=us), query=QUERY)
    m.on_batch(summary(1, entries=de), query=QUERY)  # US untouched: kept from batch 0
    merged = sketches.union(us[0][1].sketch, de[0][1].sketch)
    labels = {"query": QUERY, "window": "hourly_by_country", "sketch": "users"}
    est = value(m, "streamsketch_window_distinct_estimate", **labels)
    assert est == pytest.approx(merged.estimate())
    assert 5000 < est < 7000
    lo = value(m, "streamsketch_window_distinct_lower_bound", **labels)
    hi = value(m, "streamsketch_window_distinct_upper_bound", **labels)
    assert lo < est < hi and lo <= 6000 <= hi
    # an older window arriving late does not replace the newest one
    old = [entry(HOURLY, HLL, hs - 900 * US, '["US"]', ["x"])]
    m.on_batch(summary(2, entries=old), query=QUERY)
    assert value(m, "streamsketch_window_distinct_estimate", **labels) == est
    # a window starting after the batch time (a stray future event) is not "current"
    future = [entry(HOURLY, HLL, hs + 86_400 * US, '["US"]', ["y"])]
    m.on_batch(summary(3, entries=future), query=QUERY)
    assert value(m, "streamsketch_window_start_timestamp_seconds", **labels) == hs / US
    # the next window takes over, with only its own groups
    nxt = [entry(HOURLY, HLL, hs + 900 * US, '["FR"]', ["a", "b", "c"])]
    m.on_batch(summary(4, entries=nxt, ts_ms=T0_MS + 900_000), query=QUERY)
    assert value(m, "streamsketch_window_distinct_estimate", **labels) == pytest.approx(3, abs=.1)


def test_theta_and_datasketches_hll_report_distinct_counts():
    theta = SketchSpec("user_sets", "theta", "user_id", (("lg_k", 9),))
    ds_hll = SketchSpec("users_ds", "hll", "user_id", (("format", "datasketches"),
                                                       ("precision", 12)))
    window = WindowSpec("minutely", 60, 60, (), sketches=(theta, ds_hll))
    m = PipelineMetrics(CollectorRegistry())
    ws = (T0_MS - T0_MS % 60_000) * 1000
    values = [f"u{i}" for i in range(5000)]
    m.on_batch(summary(0, entries=[entry(window, theta, ws, "[]", values),
                                   entry(window, ds_hll, ws, "[]", values)]), query=QUERY)
    for name, spec in (("user_sets", theta), ("users_ds", ds_hll)):
        labels = {"query": QUERY, "window": "minutely", "sketch": name}
        est = value(m, "streamsketch_window_distinct_estimate", **labels)
        assert est == pytest.approx(spec.new().update(values).estimate())
        lo = value(m, "streamsketch_window_distinct_lower_bound", **labels)
        hi = value(m, "streamsketch_window_distinct_upper_bound", **labels)
        assert lo < est < hi and lo <= 5000 <= hi


def test_cms_and_bloom_values(tmp_path):
    m = PipelineMetrics(CollectorRegistry(), top_k_labels=3)
    entries = clickstream_entries(T0_MS - 30_000)
    m.on_batch(summary(0, entries=entries), query=QUERY)
    cms = dict(entries)[("minutely", (T0_MS - 30_000) * 1000, "[]", "pages")].sketch
    labels = {"query": QUERY, "window": "minutely"}
    assert value(m, "streamsketch_window_cms_items", sketch="pages", **labels) == cms.total
    assert value(m, "streamsketch_window_cms_error_bound_items", sketch="pages",
                 **labels) == pytest.approx(cms.error_bound())
    top = sorted((int(lab["rank"]), lab["item"], v) for lab, v in
                 sample_values(m, "streamsketch_window_top_item_count")
                 if lab["window"] == "minutely")
    assert [(r, i, float(c)) for r, (i, c) in enumerate(cms.top(3), start=1)] == top
    bloom = dict(entries)[("minutely", (T0_MS - 30_000) * 1000, "[]", "seen")].sketch
    assert value(m, "streamsketch_window_bloom_fill_ratio", sketch="seen",
                 **labels) == pytest.approx(bloom.fill_ratio())
    assert value(m, "streamsketch_window_bloom_false_positive_ratio", sketch="seen",
                 **labels) == pytest.approx(bloom.expected_fpr())


def test_quantile_values_merge_the_groups_of_the_newest_window():
    m = PipelineMetrics(CollectorRegistry())
    m.on_batch(summary(0, entries=clickstream_entries(T0_MS - 30_000)), query=QUERY)
    # both countries' amounts, merged; the exact quantile by the lower rank definition
    both = np.sort(np.concatenate([amounts(0), amounts(1)]))
    series = {lab["quantile"]: v for lab, v in sample_values(m, "streamsketch_window_quantile")
              if lab["sketch"] == "amounts"}
    assert set(series) == {"0.5", "0.95", "0.99"}
    for q in (0.5, 0.95, 0.99):
        exact = both[int(np.floor(q * (both.size - 1)))]
        assert abs(series[f"{q:g}"] - exact) <= 0.01 * exact


# -- bounded cardinality ---------------------------------------------------------------
def test_heavy_hitter_churn_keeps_series_bounded():
    """100,000 distinct heavy hitters churning over 200 batches: k series per CMS, always.

    The sketches track 2k heavy hitters: the label limit k, not the sketch, bounds it.
    """
    k = 5
    m = PipelineMetrics(CollectorRegistry(), top_k_labels=k)
    rng = np.random.default_rng(3)
    baseline = None
    seen_items: set[str] = set()
    for b in range(200):
        ws = (T0_MS + (b // 5) * 60_000) * 1000  # a new window every 5 batches
        ts = T0_MS + (b // 5) * 60_000 + 30_000
        items = np.array([f"item-{b * 500 + i}" for i in range(500)])  # 500 new per batch
        counts = rng.integers(1, 1_000, 500)
        spec = SketchSpec("pages", "cms", "page", ())
        es = []
        for g in range(3):  # groups churn too: new group keys every batch
            sk = sketches.CountMinSketch(width=272, depth=4, top_k=2 * k, seed=0)
            sk.update(items, counts)
            w = WindowSpec("w", 60, 60, ("g",), sketches=(spec,))
            es.append((SketchKey(w.name, ws, f'["g{b}-{g}"]', "pages"),
                       Cell(w, spec, ws, f'["g{b}-{g}"]', sk)))
        m.on_batch(summary(b, entries=es, ts_ms=ts, watermark_ms=ts - 90_000), query=QUERY)
        if b % 10 and b != 199:
            continue
        text = generate_latest(m.registry).decode()
        fams = list(text_string_to_metric_families(text))
        top = [s for f in fams for s in f.samples if s.name == "streamsketch_window_top_item_count"]
        assert len(top) == k, len(top)
        assert sorted(int(s.labels["rank"]) for s in top) == list(range(1, k + 1))
        current = {s.labels["item"] for s in top}
        window_first_item = (b // 5) * 5 * 500  # items of older windows must be gone
        assert all(int(i.split("-")[1]) >= window_first_item for i in current), "stale item"
        seen_items |= current
        n_series = sum(len(f.samples) for f in fams)
        baseline = n_series if baseline is None else baseline
        assert n_series <= baseline + k, (b, n_series, baseline)
        assert value(m, "streamsketch_state_entries", query=QUERY, window="w") <= 3 * 5 * 2
    assert len(seen_items) > 5 * k  # items did churn through the labels


# -- never block, never do I/O ---------------------------------------------------------
class SlowSketch:
    """A sketch whose copy takes long (merging it into the window's view): on_batch holds
    its lock meanwhile."""

    def __init__(self, inner, entered: threading.Event, seconds: float) -> None:
        self.inner, self.entered, self.seconds = inner, entered, seconds

    def to_bytes(self) -> bytes:
        return self.inner.to_bytes()

    def copy(self):
        self.entered.set()
        time.sleep(self.seconds)
        return self.inner.copy()


def test_scrape_answers_while_a_long_batch_holds_the_lock():
    m = PipelineMetrics(CollectorRegistry())
    ws = (T0_MS - 30_000) * 1000
    first = [entry(MINUTELY, HLL, ws, "[]", [f"u{i}" for i in range(1000)])]
    m.on_batch(summary(0, entries=first), query=QUERY)
    before = value(m, "streamsketch_window_distinct_estimate", query=QUERY, window="minutely",
                   sketch="users")
    entered = threading.Event()
    key, merged = entry(MINUTELY, HLL, ws, "[]", [f"u{i}" for i in range(5000)])
    merged.sketch = SlowSketch(merged.sketch, entered, 2.5)
    worker = threading.Thread(target=m.on_batch, args=(summary(1, entries=[(key, merged)]),),
                              kwargs={"query": QUERY})
    server = m.serve("127.0.0.1", 0)
    try:
        worker.start()
        assert entered.wait(10)
        assert m._batch_lock.locked()  # the batch is mid-way, holding its lock
        t = time.perf_counter()
        text = generate_latest(m.registry).decode()
        assert time.perf_counter() - t < 1.0
        t = time.perf_counter()
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
        assert time.perf_counter() - t < 1.0
        assert worker.is_alive()
        for exposition in (text, body):  # the last published values
            assert f"{before}" in exposition.split("streamsketch_window_distinct_estimate{")[1]
    finally:
        worker.join(15)
        server.shutdown()
    assert value(m, "streamsketch_batches_total", query=QUERY) == 2


def test_listener_does_no_io_and_takes_no_batch_lock(monkeypatch):
    m = PipelineMetrics(CollectorRegistry())
    lst = m.listener()
    events = [started_event(), progress_event(0), progress_event(1), idle_event(),
              terminated_event("boom")]
    calls: list[str] = []

    def forbidden(name):
        def fail(*a, **k):
            calls.append(name)
            raise AssertionError(f"the listener called {name}")
        return fail

    with m._batch_lock:  # a batch in progress must not block the listener
        done = threading.Event()

        def run():
            with monkeypatch.context() as mp:
                for mod, attr in ((builtins, "open"), (io, "open"), (os, "open"),
                                  (os, "stat"), (os, "listdir"), (os, "scandir"),
                                  (os, "write"), (os, "read"), (socket.socket, "connect"),
                                  (socket, "create_connection"), (time, "sleep"),
                                  (subprocess, "Popen")):
                    mp.setattr(mod, attr, forbidden(f"{mod.__name__}.{attr}"))
                lst.onQueryStarted(events[0])
                lst.onQueryProgress(events[1])
                lst.onQueryProgress(events[2])
                lst.onQueryIdle(events[3])
                lst.onQueryTerminated(events[4])
            done.set()

        t = threading.Thread(target=run)
        t.start()
        assert done.wait(5), "the listener blocked on the batch lock"
        t.join()
    assert calls == []
    assert value(m, "streamsketch_metrics_errors_total", where="listener") == 0
    assert value(m, "streamsketch_last_batch_id", query=QUERY) == 1
    assert value(m, "streamsketch_query_failures_total", query=QUERY) == 1


def test_on_batch_never_raises_into_the_pipeline():
    class Broken:
        """A batch's sketch of the window already shown that cannot be merged into it."""

        def to_bytes(self):
            return b""

        def copy(self):
            raise RuntimeError("corrupt")

    m = PipelineMetrics(CollectorRegistry())
    m.on_batch(summary(0, entries=[entry(MINUTELY, HLL, T0_MS * 1000, "[]", ["a"])]),
               query=QUERY)
    assert value(m, "streamsketch_metrics_errors_total", where="on_batch") == 0
    key, merged = entry(MINUTELY, HLL, T0_MS * 1000, "[]", ["b"])
    merged.sketch = Broken()
    m.on_batch(summary(1, entries=[(key, merged)]), query=QUERY)
    assert value(m, "streamsketch_metrics_errors_total", where="on_batch") == 1


# -- Delta log -------------------------------------------------------------------------
def test_delta_log_counter_replays_commits_incrementally(tmp_path):
    root = write_delta_log(tmp_path / "t", [
        [{"commitInfo": {}}, {"protocol": {}}, {"metaData": {}}],
        [{"add": {"path": "a"}}, {"add": {"path": "b"}}],
        [{"remove": {"path": "a"}}, {"add": {"path": "c"}}]])
    counter = DeltaLogCounter(root)
    assert counter.refresh() == (3, 2)
    write_delta_log(root, [[{"add": {"path": "d"}}], [{"remove": {"path": "b"}}]])
    assert counter.refresh() == (5, 2)
    assert counter.live == {"c", "d"}
    assert DeltaLogCounter(tmp_path / "missing").refresh() == (0, 0)


def test_delta_log_counter_starts_from_the_last_checkpoint(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    log = tmp_path / "t" / "_delta_log"
    log.mkdir(parents=True)
    # rows of other actions have a null `add`: they do not count
    add = pa.StructArray.from_arrays([pa.array(["x", "y", "ghost", None])], names=["path"],
                                     mask=pa.array([False, False, True, True]))
    remove = pa.array([None, None, {"path": "old"}, None], type=pa.struct([("path", pa.string())]))
    pq.write_table(pa.table({"add": add, "remove": remove}),
                   log / f"{10:020d}.checkpoint.parquet")
    (log / "_last_checkpoint").write_text(json.dumps({"version": 10, "size": 4}))
    (log / f"{11:020d}.json").write_text(json.dumps({"add": {"path": "z"}}) + "\n")
    # commits 0..9 were cleaned up: only the checkpoint and later commits remain
    assert DeltaLogCounter(tmp_path / "t").refresh() == (12, 3)


def test_delta_metrics_from_on_batch(tmp_path):
    m = PipelineMetrics(CollectorRegistry())
    feed(m, tmp_path)
    assert value(m, "streamsketch_delta_commits_total", query=QUERY, table="sketches") == 3
    assert value(m, "streamsketch_delta_files", query=QUERY, table="sketches") == 2


# -- wiring ------------------------------------------------------------------------
class FakeStreams:
    def __init__(self) -> None:
        self.listeners: list = []

    def addListener(self, listener) -> None:  # noqa: N802 - Spark's API
        self.listeners.append(listener)

    def removeListener(self, listener) -> None:  # noqa: N802
        self.listeners.remove(listener)


class FakePipeline:
    query_name = QUERY

    def __init__(self, tables, on_batch) -> None:
        from types import SimpleNamespace

        self.on_batch = on_batch
        self.spec = SimpleNamespace(events=SimpleNamespace(watermark_s=120.0))
        self.tables = SimpleNamespace(all=lambda: tables)


def test_attach_registers_the_listener_and_chains_on_batch(tmp_path):
    from types import SimpleNamespace

    table = write_delta_log(tmp_path / "agg", [[{"add": {"path": "p"}}]])
    seen: list = []
    spark = SimpleNamespace(streams=FakeStreams())
    pipeline = FakePipeline({"aggregates": str(table)}, seen.append)
    m = PipelineMetrics(CollectorRegistry()).attach(spark, pipeline)
    assert len(spark.streams.listeners) == 1
    s = summary(0, entries=clickstream_entries(T0_MS - 30_000))
    pipeline.on_batch(s)
    assert seen == [s]  # the previous callback still runs
    assert value(m, "streamsketch_valid_rows_total", query=QUERY) == s.valid
    assert value(m, "streamsketch_delta_files", query=QUERY, table="aggregates") == 1
    assert value(m, "streamsketch_watermark_delay_seconds", query=QUERY) == 120
    m.detach()
    assert spark.streams.listeners == []


def test_serve_reports_a_busy_port_as_a_config_error():
    from streaming.errors import ConfigError

    m = PipelineMetrics(CollectorRegistry())
    server = m.serve("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            PipelineMetrics(CollectorRegistry()).serve("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
