"""Event time against real Kafka, Spark and Delta: per-partition watermarks, safe clocks,
and the two late-row policies (one of them across a SIGKILL).

Ground truth is computed here from the events produced, never from the pipeline's output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
MIN_US = 60_000_000


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _event(moment: dt.datetime, user: str, page: str = "/p") -> bytes:
    return json.dumps({"ts": _iso(moment), "user_id": user, "page": page,
                       "amount": None, "country": "DE"}).encode()


def _produce(bootstrap: str, topic: str, partitions: int,
             records: list[tuple[int, bytes]]) -> None:
    """Records (partition, value) into a new topic, in order per partition."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    if partitions:  # 0: the topic exists
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, partitions, 1)])
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for part, value in records:
        producer.send(topic, value=value, partition=part)
    producer.flush()
    producer.close()


def _spec(topic: str, bootstrap: str, root: Path, *, per_trigger: int, watermark_s: float,
          late: str = "quarantine", idle_s: float = 3600.0, max_future_s: float | None = None):
    from streaming.spec.model import default_spec_path, load_spec
    from streaming.spec.windows import MetricSpec, SketchSpec, WindowSpec

    base = load_spec(default_spec_path())
    pages = SketchSpec("pages", "cms", "page", (("width", 512), ("depth", 4), ("top_k", 4)))
    window = WindowSpec("minutely", 60, 60, (), (MetricSpec("count"),), (pages,))
    events = replace(base.events, watermark_s=watermark_s, idle_timeout_s=idle_s, late=late,
                     max_future_s=max_future_s or max(watermark_s, 300.0))
    return replace(base, events=events, windows=(window,),
                   source=replace(base.source, topic=topic, bootstrap_servers=bootstrap,
                                  max_offsets_per_trigger=per_trigger),
                   sink=replace(base.sink, path=str(root / "delta"),
                                checkpoint=str(root / "ck")))


def _tables(spec):
    from streaming.engine.tables import read_table
    from streaming.engine.window_state import epoch_us

    aggs = {epoch_us(r["window_start"]): r
            for r in read_table(f"{spec.sink.path}/aggregates").to_pylist()}
    sks = {epoch_us(r["window_start"]): r
           for r in read_table(f"{spec.sink.path}/sketches").to_pylist()}
    quarantine = read_table(f"{spec.sink.path}/quarantine").to_pylist()
    return aggs, sks, quarantine


def _run(spark, spec):
    from streaming.engine.pipeline import Pipeline

    batches: list = []
    pipeline = Pipeline(spark, spec, on_batch=batches.append)
    pipeline.run(available_now=True, timeout=300)
    assert pipeline.query is not None and pipeline.query.exception() is None
    return batches


def test_a_time_ordered_log_in_three_partitions_has_no_late_rows(kafka, spark, topic_name,
                                                                 tmp_path):
    # Each partition is in event-time order; their densities shift over ten hours, so
    # with a small batch bound one partition's batch reaches far ahead of another's.
    rng = np.random.default_rng(11)
    span = 10 * 3600
    shapes = [rng.beta(1.2, 4.0, 7000), rng.beta(4.0, 1.2, 7000), rng.random(6000)]
    records, truth = [], Counter()
    for part, shape in enumerate(shapes):
        for s in np.sort(shape * span):
            moment = T0 + dt.timedelta(seconds=float(s))
            records.append((part, _event(moment, f"u{part}")))
            us = int(moment.timestamp() * 1_000_000)
            truth[us - us % MIN_US] += 1
    _produce(kafka.bootstrap_servers, topic_name, 3, records)
    spec = _spec(topic_name, kafka.bootstrap_servers, tmp_path, per_trigger=1500,
                 watermark_s=60)
    batches = _run(spark, spec)
    aggs, _, quarantine = _tables(spec)
    assert len(batches) >= 10
    assert [q["reason"] for q in quarantine] == []
    assert sum(b.late for b in batches) == 0
    assert {ws: r["count"] for ws, r in aggs.items()} == dict(truth)
    # the watermark did advance (windows were closed along the way)
    assert any(r["final"] for r in aggs.values())


def test_an_idle_partition_does_not_stall_the_watermark(kafka, spark, topic_name, tmp_path):
    # partition 0 delivers a few early events and then nothing; partition 1 goes on
    first = [(0, _event(T0 + dt.timedelta(seconds=i), "a")) for i in range(50)]
    first += [(1, _event(T0 + dt.timedelta(seconds=2 * i), "b")) for i in range(500)]
    later = [(1, _event(T0 + dt.timedelta(seconds=2 * i), "b")) for i in range(500, 3000)]
    truth = _truth(first + later)
    _produce(kafka.bootstrap_servers, topic_name, 2, first)
    spec = _spec(topic_name, kafka.bootstrap_servers, tmp_path, per_trigger=500,
                 watermark_s=60, idle_s=0.001)
    batches = _run(spark, spec)
    _produce(kafka.bootstrap_servers, topic_name, 0, later)  # the topic exists already
    batches += _run(spark, spec)
    aggs, _, quarantine = _tables(spec)
    assert {ws: r["count"] for ws, r in aggs.items()} == dict(truth)
    assert not quarantine
    # without idleness the watermark would stay under partition 0's last event (T0 + 49 s)
    last_b = T0 + dt.timedelta(seconds=2 * 2999)
    assert batches[-1].watermark_ms > int((T0 + dt.timedelta(minutes=30)).timestamp() * 1000)
    assert batches[-1].watermark_ms <= int(last_b.timestamp() * 1000) - 60_000
    assert any(r["final"] for r in aggs.values())


def test_an_event_23_hours_ahead_changes_no_window_of_real_time_data(kafka, spark,
                                                                     topic_name, tmp_path):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(minutes=30)
    records, truth = [], Counter()
    for i in range(1800):
        moment = start + dt.timedelta(seconds=i)
        records.append((0, _event(moment, f"u{i % 7}")))
        us = int(moment.timestamp() * 1_000_000)
        truth[us - us % MIN_US] += 1
        if i == 300:
            records.append((0, _event(now + dt.timedelta(hours=23), "fast-clock")))
    _produce(kafka.bootstrap_servers, topic_name, 1, records)
    # max_future allows it (2 days): the event lands in its own future window, but it
    # must not carry the watermark past the present, or every later event is late
    spec = _spec(topic_name, kafka.bootstrap_servers, tmp_path, per_trigger=200,
                 watermark_s=120, max_future_s=2 * 86400)
    _run(spark, spec)
    aggs, _, quarantine = _tables(spec)
    assert not quarantine
    future = {ws for ws in aggs if ws > int(now.timestamp() * 1e6) + 3600 * 1_000_000}
    assert len(future) == 1
    assert {ws: r["count"] for ws, r in aggs.items() if ws not in future} == dict(truth)
    # with the default max_future (the watermark delay, at least 5 minutes) it is refused
    spec2 = _spec(topic_name, kafka.bootstrap_servers, tmp_path / "default", per_trigger=200,
                  watermark_s=120)
    _run(spark, spec2)
    aggs2, _, quarantine2 = _tables(spec2)
    assert [q["reason_code"] for q in quarantine2] == ["future_time"]
    assert {ws: r["count"] for ws, r in aggs2.items()} == dict(truth)


def _late_log():
    """Three batches of 600: 10 minutes, the next 10 minutes, then one truly late event
    (in the first minute, closed since batch 1) among events 20-30 minutes in."""
    records = []
    for i in range(1200):
        records.append((0, _event(T0 + dt.timedelta(seconds=i), f"u{i % 11}", f"/p{i % 3}")))
    tail = [(0, _event(T0 + dt.timedelta(seconds=1200 + i), f"u{i % 11}", f"/p{i % 3}"))
            for i in range(599)]
    tail.insert(300, (0, _event(T0 + dt.timedelta(seconds=30), "late-user", "/late")))
    return records + tail


def _truth(records):
    truth = Counter()
    for _, value in records:
        us = int(dt.datetime.fromisoformat(json.loads(value)["ts"]).timestamp() * 1e6)
        truth[us - us % MIN_US] += 1
    return truth


def test_a_truly_late_event_is_quarantined_by_default(kafka, spark, topic_name, tmp_path):
    records = _late_log()
    _produce(kafka.bootstrap_servers, topic_name, 1, records)
    spec = _spec(topic_name, kafka.bootstrap_servers, tmp_path, per_trigger=600,
                 watermark_s=60)
    _run(spark, spec)
    aggs, _, quarantine = _tables(spec)
    assert [q["reason_code"] for q in quarantine] == ["late"]
    truth = _truth(records)
    first = int(T0.timestamp() * 1e6)
    truth[first] -= 1
    assert {ws: r["count"] for ws, r in aggs.items()} == dict(truth)
    assert aggs[first]["late_rows"] == 0 and aggs[first]["final"]


def _cli_run(spec_file: Path, crash: str | None) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    if crash:
        env["STREAMSKETCH_CRASH_AT"] = crash
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "run", "--spec",
                           str(spec_file), "--available-now"], cwd=REPO, env=env,
                          capture_output=True, timeout=600, start_new_session=True)
    return proc.returncode


def test_late_update_folds_a_late_event_once_across_a_sigkill(kafka, topic_name, tmp_path):
    records = _late_log()
    _produce(kafka.bootstrap_servers, topic_name, 1, records)
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(f"""
[source]
topic = "{topic_name}"
bootstrap_servers = "{kafka.bootstrap_servers}"
max_offsets_per_trigger = 600
[events]
time_field = "ts"
watermark = "1 minute"
late = "update"
[events.fields]
user_id = "string"
page = "string"
[[windows]]
name = "minutely"
size = "1 minute"
  [[windows.sketches]]
  name = "pages"
  kind = "cms"
  field = "page"
  width = 512
  depth = 4
  top_k = 4
[sink]
path = "{tmp_path / 'delta'}"
checkpoint = "{tmp_path / 'ck'}"
[metrics]
enabled = false
""")
    # batch 2 holds the late event: killed after its aggregates commit, before sketches
    assert _cli_run(spec_file, "after_aggregates@2") == -9
    assert _cli_run(spec_file, None) == 0
    from streaming.spec.model import load_spec

    aggs, sks, quarantine = _tables(load_spec(spec_file))
    assert not quarantine
    truth = _truth(records)
    assert {ws: r["count"] for ws, r in aggs.items()} == dict(truth)
    first = int(T0.timestamp() * 1e6)
    assert aggs[first]["late_rows"] == 1 and aggs[first]["final"]
    assert sum(r["late_rows"] for r in aggs.values()) == 1
    import sketches

    for ws, row in sks.items():
        cms = sketches.from_bytes(row["bytes"])
        assert cms.total == truth[ws], ws  # folded exactly once
    assert sketches.from_bytes(sks[first]["bytes"]).estimate("/late") >= 1
