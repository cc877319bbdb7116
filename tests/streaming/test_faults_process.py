"""Process faults against exact expectations: real Kafka, real Spark, real Delta.

* Repeated SIGKILLs of the driver (CLI in its own process group) at seeded random
  points and batches on one checkpoint, each followed by a restart, then a clean
  completion: the digest equals a clean run's (every event counted once, sketches
  byte-identical).
* Many stop / produce / start cycles of the pipeline: the aggregates equal exact
  ground truth, HLL and Bloom bytes equal sketches built from the ground-truth
  rows, CMS counters likewise. Which events are late is derived from the events
  (``lateness.py``), and they are built so that it cannot depend on batch
  boundaries: each cycle's events span less than the watermark delay and follow
  the previous cycle's, and the designed-late events are older than the lowest
  watermark the cycle's batches can have.
* A zero-byte or missing checkpoint file: either a loud failure (non-zero exit,
  one line naming the problem, tables untouched) or, where the state is one a
  crash leaves behind, a correct resume; never a silent fresh start that would
  count events twice (every produced event is counted exactly once afterwards).
* ``streamsketch maintain`` (compaction) run repeatedly while a live query writes:
  neither fails and the digest equals the clean run's.
* Ten concurrent scrapers on ``/metrics`` during long batches: each scrape answers
  within a second; throughput with and without the storm is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from cells_read import spark_cells
from lateness import Runs, event_ms

from streaming.spec.model import default_spec_path

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_EVENTS = 1_800
PER_TRIGGER = 150  # 12 batches over 2 partitions
START = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
RUN_TIMEOUT_S = 420


# -- specs and processes ------------------------------------------------------------
def spec_text(topic: str, bootstrap: str, root: Path, *, per_trigger: int = PER_TRIGGER,
              trigger: str = "5 seconds", metrics_port: int | None = None) -> str:
    """The bundled spec, pointed at ``topic`` and at folders under ``root``."""
    text = default_spec_path().read_text()
    swaps = {'topic = "clickstream"': f'topic = "{topic}"',
             'bootstrap_servers = "127.0.0.1:9092"': f'bootstrap_servers = "{bootstrap}"',
             "max_offsets_per_trigger = 200000": f"max_offsets_per_trigger = {per_trigger}",
             'path = "./data/delta"': f'path = "{root / "delta"}"',
             'checkpoint = "./data/checkpoints"': f'checkpoint = "{root / "ck"}"',
             'trigger = "5 seconds"': f'trigger = "{trigger}"',
             'host = "127.0.0.1"\nport = 9108':
                 "enabled = false" if metrics_port is None
                 else f'host = "127.0.0.1"\nport = {metrics_port}'}
    for old, new in swaps.items():
        assert old in text, f"the bundled spec no longer has {old!r}"
        text = text.replace(old, new)
    return text


def write_spec(root: Path, topic: str, bootstrap: str, **kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(spec_text(topic, bootstrap, root, **kw))
    return path


def _env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "STREAMSKETCH_CRASH_AT")}
    if crash_at:
        env["STREAMSKETCH_CRASH_AT"] = crash_at
    return env


def cli(argv: list[str], *, crash_at: str | None = None,
        timeout: float = RUN_TIMEOUT_S) -> tuple[int, str, str]:
    """Run the CLI in its own process group; (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", *argv], cwd=REPO,
                            env=_env(crash_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"streamsketch {' '.join(argv[:1])} did not finish in {timeout} s")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def counted_once(spark, spec) -> tuple[int, int]:
    """(events in the tiling minutely windows, quarantined records)."""
    from pyspark.sql import functions as F

    agg = (spark.read.format("delta").load(f"{spec.sink.path}/aggregates")
           .where(F.col("window_name") == "minutely").agg(F.sum("count")).first()[0])
    quarantined = spark.read.format("delta").load(f"{spec.sink.path}/quarantine").count()
    return int(agg or 0), int(quarantined)


@pytest.fixture(scope="module")
def source(kafka, spark, tmp_path_factory):
    """A produced topic (late and malformed records included) and a clean run's digest."""
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    topic = f"faults-{os.getpid()}"
    config = GeneratorConfig(seed=23, rate=10.0, start_time=START, users=1_500, pages=200,
                             out_of_order=0.1, late=0.03, malformed=0.03)
    produce(kafka.bootstrap_servers, topic, config, count=N_EVENTS, partitions=2)
    root = tmp_path_factory.mktemp("clean")
    spec = load_spec(write_spec(root, topic, kafka.bootstrap_servers))
    batches: list = []
    Pipeline(spark, spec, on_batch=batches.append).run(available_now=True, timeout=RUN_TIMEOUT_S)
    assert sum(b.rows for b in batches) == N_EVENTS
    reference = digest(spark, spec)
    aggregated, quarantined = counted_once(spark, spec)
    assert quarantined > 0 and aggregated + quarantined == N_EVENTS
    return {"topic": topic, "bootstrap": kafka.bootstrap_servers, "digest": reference,
            "batches": len(batches)}


# -- 1. repeated random SIGKILLs ---------------------------------------------------------
def kill_plan(seed: int, kills: int, batches: int) -> list[str]:
    """``kills`` crash targets ``point@batch``, seeded, with strictly increasing batches.

    Increasing batches make every target reachable: the restart after a kill at
    batch b re-runs b and goes on to the next target's batch. (A second target in
    a re-run batch may not be reached: the re-run skips writes that committed.)
    The last batch is left out so an ``in_*`` kill, which lands after a delay,
    cannot miss a process that already finished.
    """
    from streaming.engine.pipeline import CRASH_POINTS

    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(batches - 1), kills))
    return [f"{rng.choice(CRASH_POINTS)}@{b}" for b in chosen]


def kill_repeatedly_then_finish(spark, source, root: Path, plan: list[str]) -> None:
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    spec_file = write_spec(root, source["topic"], source["bootstrap"])
    print(f"\nkill plan: {', '.join(plan)}")
    for target in plan:
        rc, _, err = cli(["run", "--spec", str(spec_file), "--available-now"], crash_at=target)
        assert rc == -signal.SIGKILL, f"{target}: not killed (exit {rc}): {err[-1500:]}"
        assert (root / "ck" / "query" / "offsets").is_dir() or target.endswith("@0")
    rc, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert rc == 0, err[-2000:]
    spec = load_spec(spec_file)
    assert counted_once(spark, spec)[0] + counted_once(spark, spec)[1] == N_EVENTS
    assert digest(spark, spec) == source["digest"]


def test_kill_plan_is_seeded_and_reachable():
    from streaming.engine.pipeline import CRASH_POINTS

    plan = kill_plan(5, 10, 12)
    assert plan == kill_plan(5, 10, 12) and plan != kill_plan(6, 10, 12)
    batches = [int(t.split("@")[1]) for t in plan]
    assert batches == sorted(set(batches)) and max(batches) < 11
    assert {t.split("@")[0] for t in plan} <= set(CRASH_POINTS)


@pytest.mark.slow  # five CLI runs, each starting a JVM: over the default suite's budget
def test_three_random_sigkills_then_clean_finish_equal_clean_run(spark, source, tmp_path):
    kill_repeatedly_then_finish(spark, source, tmp_path, kill_plan(20261123, 3,
                                                                   source["batches"]))


@pytest.mark.slow
def test_ten_random_sigkills_then_clean_finish_equal_clean_run(spark, source, tmp_path):
    plan = kill_plan(4242, 10, source["batches"])
    # the in-write points and the gap between Spark's offset log and commit are covered
    assert any(t.startswith("in_") for t in plan) and any(t.startswith("batch_start")
                                                          for t in plan)
    kill_repeatedly_then_finish(spark, source, tmp_path, plan)


# -- 2. stop / produce / start cycles against ground truth ---------------------------------
COUNTRIES = ("US", "DE", "FR", "IN", "BR", "JP")
CYCLE_S = 150      # each cycle's events start this far after the previous cycle's
SPAN_S = 90        # and span less than the watermark delay (the bundled spec's: 120 s)


def _event(rng: random.Random, ts: dt.datetime) -> dict:
    return {"ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "user_id": f"u{rng.randrange(400):05d}", "session_id": f"s{rng.randrange(900)}",
            "page": f"/p/{rng.randrange(60)}", "action": rng.choice(("view", "click", "buy")),
            "amount": round(rng.uniform(0, 200), 2), "country": rng.choice(COUNTRIES),
            "device": rng.choice(("mobile", "desktop"))}


def cycle_records(rng: random.Random, cycle: int, late_before_ms: int | None
                  ) -> tuple[list[bytes], list[dict | None]]:
    """One cycle's records, shuffled: (values, the event each holds; None if malformed).

    ``late_before_ms``: the lowest watermark the cycle's batches can have; some of the
    events are made older than that.
    """
    n = rng.randrange(0, 61)
    base = START + dt.timedelta(seconds=cycle * CYCLE_S)
    events = [_event(rng, base + dt.timedelta(milliseconds=rng.randrange(SPAN_S * 1000)))
              for _ in range(n)]
    if late_before_ms is not None and rng.random() < 0.5:
        before = dt.datetime.fromtimestamp(late_before_ms / 1000, dt.UTC)
        for _ in range(rng.randrange(1, 4)):
            events.append(_event(rng, before - dt.timedelta(seconds=30 + rng.randrange(600))))
    records: list[tuple[bytes, dict | None]] = [(json.dumps(e).encode(), e) for e in events]
    records += [(b'{"ts": "not json', None)] * rng.randrange(0, 3)
    rng.shuffle(records)
    return [v for v, _ in records], [e for _, e in records]


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for i, v in enumerate(values):
            producer.send(topic, value=v, key=str(i).encode(), partition=i % 2)
        producer.flush(30)
    finally:
        producer.close(10)


def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def expected_windows(spec, events: list[dict]) -> dict:
    """{(window, start us, group key): exact metrics} over ``events``."""
    out: dict = {}
    for w in spec.windows:
        size, slide = w.size_s * 1_000_000, w.slide_s * 1_000_000
        for e in events:
            ts = dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
            us = int(ts.timestamp()) * 1_000_000 + ts.microsecond
            pane = us - us % slide
            gk = json.dumps([str(e[g]) for g in w.group_by], separators=(",", ":"))
            for i in range(size // slide):
                row = out.setdefault((w.name, pane - i * slide, gk), {"count": 0, "amounts": [],
                                                                      "events": []})
                row["count"] += 1
                row["amounts"].append(Decimal(repr(e["amount"])))
                row["events"].append(e)
    return out


def check_against_truth(spark, spec, events: list[dict], late: list[dict], malformed: int,
                        closing_ms: int) -> dict:
    """Assert aggregates, sketches and quarantine equal ground truth; returns counts.

    ``closing_ms``: the closing watermark of the last batch; a window is final exactly
    when it ends by then (every earlier batch's is lower, and the last batch finalises
    every open window that ends by its own)."""

    import sketches

    expected = expected_windows(spec, events)
    agg = spark_cells(spark, f"{spec.sink.path}/aggregates")
    got = {(r["window_name"], r["ws"], r["group_key"]): r for r in agg}
    assert set(got) == set(expected)
    for key, exp in expected.items():
        row = got[key]
        assert row["count"] == exp["count"], key
        assert row["sum_amount"].normalize() == sum(exp["amounts"]).normalize(), key
        assert row["max_amount"] == float(max(exp["amounts"])), key
        if key[0] == "hourly_by_country":
            assert row["min_amount"] == float(min(exp["amounts"])), key
            assert row["n_amount"] == exp["count"], key
        assert row["final"] == (row["end_ms"] <= closing_ms), key
    stored = spark_cells(spark, f"{spec.sink.path}/sketches")
    kinds: dict[str, int] = defaultdict(int)
    assert {(r["window_name"], r["ws"], r["group_key"]) for r in stored} == set(expected)
    for r in stored:
        window = spec.window(r["window_name"])
        sk = next(s for s in window.sketches if s.name == r["sketch_name"])
        values = [e[sk.field] for e in expected[(r["window_name"], r["ws"], r["group_key"])]
                  ["events"]]
        built = sk.new().update(values)
        if sk.kind == "cms":
            got_cms = sketches.from_bytes(bytes(r["bytes"]))
            assert np.array_equal(got_cms.counters, built.counters)
            assert got_cms.total == len(values)
        else:
            assert bytes(r["bytes"]) == built.to_bytes(), (r["window_name"], sk.name)
        kinds[sk.kind] += 1
    assert kinds["hll"] and kinds["bloom"] and kinds["cms"]
    q = spark.read.format("delta").load(f"{spec.sink.path}/quarantine")
    codes = {r["reason_code"]: r["count"] for r in q.groupBy("reason_code").count().collect()}
    assert codes == {k: v for k, v in (("late", len(late)), ("invalid_json", malformed)) if v}
    positions = q.select("partition", "offset").distinct().count()
    assert positions == q.count(), "a record was quarantined twice"
    return {"windows": len(expected), "sketch_rows": len(stored)}


def stop_start_cycles(kafka, spark, topic: str, root: Path, cycles: int, seed: int) -> None:
    from dataclasses import replace

    from streaming.engine.pipeline import Pipeline
    from streaming.spec.model import load_spec

    create_topic(kafka.bootstrap_servers, topic)
    spec = load_spec(write_spec(root, topic, kafka.bootstrap_servers, per_trigger=40))
    rng = random.Random(seed)
    runs = Runs(spec.events.watermark_s)  # each cycle is one run of the pipeline
    events: list[dict] = []
    late: list[dict] = []
    malformed = 0
    batches: list = []
    began = time.monotonic()
    for cycle in range(cycles):
        values, held = cycle_records(rng, cycle, runs.next_low_ms)
        send(kafka.bootstrap_servers, topic, values)  # record i to partition i % 2
        parsed = [(i % 2, e) for i, e in enumerate(held) if e is not None]
        for (_, e), is_late in zip(parsed, runs.add((p, event_ms(e["ts"])) for p, e in parsed),
                                   strict=True):
            (late if is_late else events).append(e)
        malformed += len(held) - len(parsed)
        before = len(batches)
        pipeline = Pipeline(spark, replace(spec), on_batch=batches.append)
        pipeline.run(available_now=True, timeout=RUN_TIMEOUT_S)
        assert pipeline.query is not None and pipeline.query.exception() is None
        if len(batches) > before:  # the watermark bounds of the run of the last batch
            bounds = (runs.low_ms, runs.high_ms)
    assert sum(b.rows for b in batches) == len(events) + len(late) + malformed
    assert late, "no designed-late event: the watermark across restarts was not exercised"
    assert bounds[0] <= batches[-1].watermark_ms <= bounds[1], bounds
    # the closing watermark lies between the batch's own and the latest event time (over
    # every partition) minus the delay, which the events alone give
    last = batches[-1]
    assert last.watermark_ms <= last.closing_ms <= runs.ceiling - runs.delay_ms
    counts = check_against_truth(spark, spec, events, late, malformed, last.closing_ms)
    print(f"\n{cycles} cycles, {len(batches)} batches, {len(events)} events, {len(late)} late, "
          f"{malformed} malformed; {counts}; {time.monotonic() - began:.0f} s")


def test_stop_produce_start_cycles_equal_ground_truth(kafka, spark, topic_name, tmp_path):
    stop_start_cycles(kafka, spark, topic_name, tmp_path, cycles=6, seed=7)


@pytest.mark.slow
def test_twenty_stop_produce_start_cycles_equal_ground_truth(kafka, spark, topic_name,
                                                             tmp_path):
    stop_start_cycles(kafka, spark, topic_name, tmp_path, cycles=20, seed=7)


# -- 8. zero-byte or missing checkpoint files --------------------------------------------
DAMAGE_EVENTS = 300
MORE_EVENTS = 120


def _latest(folder: Path) -> Path:
    return folder / str(max(int(p.name) for p in folder.iterdir() if p.name.isdigit()))


#: (what, how) -> the checkpoint file it hits
DAMAGE_TARGETS = {
    "streamsketch.json": lambda ck: ck / "streamsketch.json",
    "offsets/latest": lambda ck: _latest(ck / "query" / "offsets"),
    "commits/latest": lambda ck: _latest(ck / "query" / "commits"),
    "query/metadata": lambda ck: ck / "query" / "metadata",
}


@pytest.fixture(scope="module")
def damage_base(kafka, spark, tmp_path_factory):
    """A small topic and a pipeline's tables + checkpoint over it, to copy and damage."""
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    topic = f"damage-{os.getpid()}"
    config = GeneratorConfig(seed=31, rate=10.0, start_time=START, users=300, pages=50,
                             late=0.03, malformed=0.03)
    produce(kafka.bootstrap_servers, topic, config, count=DAMAGE_EVENTS, partitions=2)
    root = tmp_path_factory.mktemp("damage-base")
    spec = load_spec(write_spec(root, topic, kafka.bootstrap_servers, per_trigger=100))
    Pipeline(spark, spec).run(available_now=True, timeout=RUN_TIMEOUT_S)
    assert sum(counted_once(spark, spec)) == DAMAGE_EVENTS
    return {"root": root, "topic": topic, "digest": digest(spark, spec), "config": config}


def run_in_process(spark, spec_file: Path, capsys) -> tuple[int, str]:
    """``streamsketch run --available-now`` on the test's Spark session: (exit, stderr)."""
    from streaming.cli.main import main

    kept = spark.conf.get("spark.sql.shuffle.partitions")
    capsys.readouterr()
    try:
        rc = main(["run", "--spec", str(spec_file), "--available-now", "--master", "local[2]"])
    except Exception as exc:  # noqa: BLE001 - the CLI would print a traceback
        head = (str(exc).strip().splitlines() or [""])[0][:300]
        pytest.fail(f"run raised {type(exc).__name__} (a traceback, not a one-line error): "
                    f"{head}")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", kept)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("target", "how", "expect"), [
    ("streamsketch.json", "empty", r"streamsketch: error: .*streamsketch\.json is damaged"),
    ("streamsketch.json", "missing", r"streamsketch: error: .*no streamsketch\.json"),
    ("offsets/latest", "empty", r"streamsketch: .*offsets.*"),
    ("commits/latest", "empty", r"streamsketch: .*commits.*"),
    ("query/metadata", "empty", r"streamsketch: .*metadata"),
    ("query/metadata", "missing", r"streamsketch: .*metadata"),
    # commits/N present without offsets/N: no crash leaves that
    ("offsets/latest", "missing", r"streamsketch: .*offsets"),
    # what a crash between a batch's writes and Spark's commit leaves: resume
    ("commits/latest", "missing", None),
])
def test_damaged_checkpoint_file_fails_loudly_or_resumes_exactly(
        kafka, spark, damage_base, tmp_path, capsys, target, how, expect):
    from dataclasses import replace

    from streaming.kafka.producer import produce
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    root = tmp_path / "copy"
    shutil.copytree(damage_base["root"], root)
    spec_file = write_spec(root, damage_base["topic"], kafka.bootstrap_servers, per_trigger=100)
    spec = load_spec(spec_file)
    path = DAMAGE_TARGETS[target](root / "ck")
    assert path.is_file(), path
    if how == "empty":
        path.write_bytes(b"")
    else:
        # gone with its checksum, as if it had never been written
        path.unlink()
        path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
    if expect is not None:
        rc, err = run_in_process(spark, spec_file, capsys)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"\n{target} {how}: exit {rc}: {last}")
        assert rc != 0, f"{target} {how}: the run succeeded over a damaged checkpoint"
        assert re.search(expect, last), err[-2000:]
        # the problem is one line: the only one of the service's, nothing after it (a
        # message running on over several lines, or a traceback, would follow it)
        said = [ln for ln in err.splitlines() if ln.startswith("streamsketch: ")]
        assert said == [last], err[-2000:]
        # nothing was written over the existing state
        assert digest(spark, spec) == damage_base["digest"]
        return
    # a resumable state: the restart must continue, counting each record once, also
    # the records that arrive afterwards
    produce(kafka.bootstrap_servers, damage_base["topic"],
            replace(damage_base["config"], seed=32,
                    start_time=START + dt.timedelta(minutes=40)), count=MORE_EVENTS)
    rc, err = run_in_process(spark, spec_file, capsys)
    print(f"\n{target} {how}: exit {rc}")
    assert rc == 0, err[-2000:]
    assert sum(counted_once(spark, spec)) == DAMAGE_EVENTS + MORE_EVENTS


# -- 9. compaction while the stream appends --------------------------------------------
MAINTAIN_LINE = re.compile(r"^(aggregates|sketches|quarantine): (\d+) files -> (\d+) "
                           r"\(compaction, (\d+) attempts?\)")


@pytest.mark.slow
def test_maintain_while_the_stream_appends_changes_nothing(spark, source, tmp_path):
    from streaming.engine.pipeline import Pipeline
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    spec_file = write_spec(tmp_path, source["topic"], source["bootstrap"], trigger="1 second")
    spec = load_spec(spec_file)
    batches: list = []
    pipeline = Pipeline(spark, spec, on_batch=batches.append)
    runs: list[tuple[int, int, list[str]]] = []
    deadline = time.monotonic() + 1200
    pipeline.start()
    try:
        while len(batches) < source["batches"] or len(runs) < 3:
            assert time.monotonic() < deadline, f"{len(batches)} batches, {len(runs)} runs"
            query = pipeline.query
            assert query is not None and query.exception() is None, query.exception()
            assert query.isActive, "the query stopped"
            before = len(batches)
            rc, out, err = cli(["maintain", "--spec", str(spec_file)], timeout=400)
            assert rc == 0, err[-2000:]
            lines = out.strip().splitlines()
            assert [MAINTAIN_LINE.match(ln).group(1) for ln in lines] == \
                ["aggregates", "sketches", "quarantine"], out
            runs.append((before, len(batches), lines))
    finally:
        pipeline.stop()
    assert pipeline.query is not None and pipeline.query.exception() is None
    for before, after, lines in runs:
        print(f"maintain during batches {before}..{after}: " + "; ".join(lines))
    overlapping = [r for r in runs if r[0] < source["batches"] and r[1] > r[0]]
    assert len(overlapping) >= 1, "no compaction ran while batches were written"
    # the last run, after the stream's writes, compacted the tables to few files
    for line in runs[-1][2]:
        m = MAINTAIN_LINE.match(line)
        assert m is not None and int(m.group(3)) <= int(m.group(2))
    assert len(batches) == source["batches"]
    assert digest(spark, spec) == source["digest"]


# -- 10. a scrape storm on /metrics during long batches ---------------------------------
STORM_EVENTS = 96_000
STORM_PER_TRIGGER = 8_000  # 12 batches: a warm-up, then the storm on and off in turns
SCRAPERS = 10
#: pause of each scraper between scrapes (0: back to back). The scrapers run on the
#: same 2 cores as Spark, so back to back they measure their own CPU use as much as
#: the service's; at 0.1 s each the ten ask 100 times a second, 1,500 times what one
#: Prometheus at its default 15 s interval does.
SCRAPE_PAUSE_S = float(os.environ.get("STREAMSKETCH_SCRAPE_PAUSE_S", "0.1"))
BATCH_LINE = re.compile(r"batch (\d+): (\d+) rows .* in ([\d.]+) s")


def _rate_summary(rates: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean."""
    mean = float(np.mean(rates))
    se = float(np.std(rates, ddof=1) / np.sqrt(len(rates))) if len(rates) > 1 else 0.0
    return mean, se


@pytest.mark.slow
def test_metrics_answer_within_a_second_under_a_scrape_storm(kafka, topic_name, tmp_path):
    """Ten scrapers, on during every other batch: every answer < 1 s, throughput printed.

    The storm is switched on for odd batches and off for even ones (batch 0 warms up),
    so drift of the machine's speed over the run falls on both sides alike; the test
    prints the rows/s of each side with its standard error. The structural part is
    asserted: however many scrapes, the driver renders at most once per 0.5 s.
    """
    from streaming.kafka.broker import free_port
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    produce(kafka.bootstrap_servers, topic_name,
            GeneratorConfig(seed=3, rate=200.0, start_time=START, users=20_000, pages=500,
                            late=0.01, malformed=0.01), count=STORM_EVENTS)
    port = free_port()
    spec_file = write_spec(tmp_path, topic_name, kafka.bootstrap_servers,
                           per_trigger=STORM_PER_TRIGGER, metrics_port=port)
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                             str(spec_file), "--available-now"], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[tuple[float, str]] = []
    storm = threading.Event()      # set: the scrapers scrape
    storm_of: dict[int, bool] = {}  # batch id -> whether the storm ran during it

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip()))
            m = BATCH_LINE.search(line)
            if m:  # batch b committed: b + 1 runs now, with the storm if it is odd
                nxt = int(m.group(1)) + 1
                storm_of[nxt] = nxt % 2 == 1
                storm.set() if storm_of[nxt] else storm.clear()

    reader = threading.Thread(target=read_stderr, daemon=True)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(SCRAPERS)]
    failures: list[tuple[float, str]] = []
    last_text: list[str] = []
    finished: list[float] = []  # when each scrape completed (monotonic)
    last_at: list[float] = [0.0]

    def scrape(mine: list[float]) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        while not stop.is_set():
            if not storm.wait(0.2):
                continue
            t = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = r.read()
            except OSError as exc:
                if proc.poll() is None:
                    failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                return
            mine.append(time.monotonic() - t)
            if b"streamsketch_" not in body:
                failures.append((time.monotonic(),
                                 f"a scrape without streamsketch metrics ({len(body)} bytes: "
                                 f"{body[:120]!r})"))
                return
            now = time.monotonic()
            finished.append(now)
            if now >= last_at[0]:
                last_text[:] = [body.decode()]
                last_at[0] = now
            stop.wait(SCRAPE_PAUSE_S)

    scrapers = [threading.Thread(target=scrape, args=(mine,), daemon=True)
                for mine in latencies]
    reader.start()
    for t in scrapers:
        t.start()
    try:
        proc.wait(timeout=900)
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        for t in scrapers:
            t.join(15)
        reader.join(10)
    assert proc.returncode == 0, "\n".join(ln for _, ln in lines[-30:])
    every = [x for mine in latencies for x in mine]
    done = [(at, int(m.group(1)), int(m.group(2)), float(m.group(3)))
            for at, line in lines if (m := BATCH_LINE.search(line))]
    # The server closes when the run ends: connections queued or in flight then are
    # refused or reset. Only failures before the last batch committed count.
    last_batch_at = max(at for at, *_ in done)
    failed = [msg for at, msg in failures if at <= last_batch_at]
    assert not failed, failed[:5]
    assert sum(rows for _, _, rows, _ in done) == STORM_EVENTS
    assert len(every) >= SCRAPERS * 5, f"only {len(every)} scrapes"
    assert max(every) < 1.0, f"slowest scrape {max(every):.2f} s"

    def series(name: str) -> float:
        m = re.search(rf"^{name} ([\d.e+]+)$", last_text[0], re.M)
        assert m, f"{name} missing from the last scrape"
        return float(m.group(1))

    # the driver rendered once per 0.5 s at most, not once per scrape
    renders, answered = series("streamsketch_metrics_renders_total"), series(
        "streamsketch_metrics_scrapes_total")
    stormy = [rows / s for _, b, rows, s in done if b >= 1 and storm_of.get(b)]
    quiet = [rows / s for _, b, rows, s in done if b >= 1 and not storm_of.get(b)]
    (qm, qse), (sm, sse) = _rate_summary(quiet), _rate_summary(stormy)
    diff_se = float(np.hypot(qse, sse))
    print(f"\n{len(every)} scrapes by {SCRAPERS} scrapers (pause {SCRAPE_PAUSE_S} s): "
          f"p50 {float(np.median(every)) * 1000:.0f} ms, "
          f"p99 {float(np.percentile(every, 99)) * 1000:.0f} ms, "
          f"max {max(every) * 1000:.0f} ms; the server answered {answered:.0f}, "
          f"the driver rendered {renders:.0f} times")
    print(f"throughput without the storm {qm:,.0f} ± {qse:,.0f} rows/s ({len(quiet)} batches), "
          f"with it {sm:,.0f} ± {sse:,.0f} rows/s ({len(stormy)} batches): "
          f"difference {sm - qm:+,.0f} rows/s = {(sm - qm) / diff_se if diff_se else 0:+.1f} "
          f"standard errors ({(sm / qm - 1) * 100:+.1f} %)")
    # the last scrape's counter is from a snapshot rendered at most SCRAPE_CACHE_S (plus
    # the render wait) before it: every scrape that completed before then is counted
    from streaming.observability.metrics import SCRAPE_CACHE_S

    settled = sum(1 for t in finished if t <= last_at[0] - 2 * SCRAPE_CACHE_S - 0.1)
    assert answered >= settled > 0, (answered, settled, len(every))
    assert len(stormy) >= 3 and len(quiet) >= 3, (len(stormy), len(quiet))
    assert renders < answered / 5, (renders, answered)
