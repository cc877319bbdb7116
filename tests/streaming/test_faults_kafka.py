"""Kafka faults against exact ground truth: real broker, real Spark, real Delta.

Each test produces known records (positions taken from the producer's acks),
runs the pipeline through one fault and compares the ``aggregates`` table with
the per-minute counts of exactly the records that should be there:

* partitions added while a live query runs: records in the new partitions are
  counted, none twice;
* the topic deleted and recreated, and records deleted under the job while it
  is stopped (``delete_records`` advances the log start offset, as retention
  does): with ``fail_on_data_loss = true`` the query fails with a data-loss
  message (the CLI prints it as one line and exits 1); with ``false`` it goes on,
  the loss is counted in ``streamsketch_source_offset_gap_records_total`` and the
  recreation in ``streamsketch_source_offset_resets_total``, nothing duplicated;
* a burst of ten times ``max_offsets_per_trigger``: every batch stays within the
  bound and the query catches up exactly;
* the broker stopped and restarted (same port and data) under a live query;
* poison pills: each lands in ``quarantine`` with its reason code at its offset,
  the query keeps running and the valid counts are exact.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from cells_read import spark_cells
from cli_runs import run_available_now as run_available_now_cli

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
MiB = 1024 * 1024

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
fail_on_data_loss = {fail}
{per_trigger}

[events]
time_field = "ts"
watermark = "1 day"
[events.fields]
user_id = "string"
amount = "double"

[[windows]]
name = "minutely"
size = "1 minute"
metrics = ["count"]

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"
trigger = "1 second"

[metrics]
enabled = false
"""


# -- helpers ---------------------------------------------------------------------------
def write_spec(root: Path, topic: str, bootstrap: str, *, fail_on_data_loss: bool = True,
               per_trigger: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(SPEC.format(
        topic=topic, bootstrap=bootstrap, root=root, fail=str(fail_on_data_loss).lower(),
        per_trigger=f"max_offsets_per_trigger = {per_trigger}" if per_trigger else ""))
    return path


def load(path: Path, bootstrap: str, **source):
    from streaming.spec.model import load_spec

    spec = load_spec(path)  # KAFKA_BOOTSTRAP_SERVERS may override; the test's broker wins
    return replace(spec, source=replace(spec.source, bootstrap_servers=bootstrap, **source))


def admin(bootstrap: str, **client):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000, **client)


def create_topic(bootstrap: str, topic: str, partitions: int, *,
                 config: dict[str, str] | None = None, timeout: float = 60) -> None:
    """Create ``topic`` (retrying while an earlier deletion of the name completes)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    client = admin(bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.create_topics([NewTopic(topic, partitions, 1, topic_configs=config or {})])
                return
            except TopicAlreadyExistsError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        client.close()


def send(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None,
                                                            int | None]],
         **client) -> list[tuple[int, int]]:
    """Send ``(key, value, partition)`` items; their ``(partition, offset)`` in order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=8 * MiB, request_timeout_ms=30_000, **client)
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for k, v, p in items]
        producer.flush(timeout=60)
        meta = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=10)
    return [(m.partition, m.offset) for m in meta]


def generated(seed: int, count: int, start: dt.datetime) -> list:
    from streaming.kafka.generator import GeneratorConfig, generate

    cfg = GeneratorConfig(seed=seed, rate=10.0, start_time=start, users=500, pages=50)
    records = list(generate(cfg, count))
    assert all(r.kind == "valid" for r in records)
    return records


def minute_counts(values: Iterable[bytes]) -> Counter:
    """Ground truth: valid events per minute window (window start in epoch micros)."""
    out: Counter = Counter()
    for v in values:
        ms = int(dt.datetime.fromisoformat(json.loads(v)["ts"]).timestamp() * 1000)
        out[ms - ms % 60_000] += 1
    return Counter({k * 1000: n for k, n in out.items()})


def window_counts(spark, spec) -> Counter:
    """``aggregates`` cells of the minutely window; a window stored twice fails the test."""
    rows = spark_cells(spark, f"{spec.sink.path}/aggregates", "minutely")
    out: Counter = Counter()
    for r in rows:
        assert r["ws"] not in out, f"window {r['ws']} stored twice"
        out[r["ws"]] = r["count"]
    return out


def quarantine_rows(spark, spec) -> list:
    return spark.read.format("delta").load(f"{spec.sink.path}/quarantine").collect()


def end_offsets(bootstrap: str, topic: str, **client) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, query=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query is not None and query.exception() is not None:
            pytest.fail(f"the query failed while waiting for {what}: {query.exception()}")
        if cond():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def settle(query, seconds: float = 4.0) -> None:
    """Let a few more triggers run (anything read twice would show up), still healthy."""
    time.sleep(seconds)
    assert query.isActive and query.exception() is None


def counting_pipeline(spark, spec) -> tuple:
    """A pipeline keeping its batch summaries, the list, and the rows they count so far."""
    from streaming.engine.pipeline import Pipeline

    summaries: list = []
    pipeline = Pipeline(spark, spec, on_batch=summaries.append)
    return pipeline, summaries, lambda: sum(s.rows for s in summaries)


def run_available_now(spark, spec, *, metrics=None, timeout: float = 300):
    pipeline, summaries, _ = counting_pipeline(spark, spec)
    if metrics is not None:
        metrics.attach(spark, pipeline)
    pipeline.run(available_now=True, timeout=timeout)
    assert not pipeline.query.isActive, "the available-now run did not finish in time"
    return pipeline, summaries


def counter(metrics, name: str, query: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"query": query})


def keyed(records) -> list[tuple[bytes, bytes, None]]:
    return [(r.key, r.value, None) for r in records]


# -- 3. partitions added under a live query -------------------------------------------
def test_partitions_added_while_live_are_counted_exactly(kafka, spark, topic_name, tmp_path):
    from kafka.admin import NewPartitions


    boot = kafka.bootstrap_servers
    create_topic(boot, topic_name, 2)
    before = generated(31, 300, START)
    send(boot, topic_name, keyed(before))
    spec = load(write_spec(tmp_path, topic_name, boot), boot)
    pipeline, summaries, rows = counting_pipeline(spark, spec)
    try:
        query = pipeline.start()
        wait_for(lambda: rows() >= len(before), 180, "the first records", query)
        client = admin(boot)
        try:
            client.create_partitions({topic_name: NewPartitions(total_count=4)})
        finally:
            client.close()
        after = generated(32, 400, START + dt.timedelta(hours=1))
        # round robin over all four partitions: half of them go to the new ones
        positions = send(boot, topic_name, [(r.key, r.value, i % 4)
                                            for i, r in enumerate(after)])
        assert Counter(p for p, _ in positions) == {0: 100, 1: 100, 2: 100, 3: 100}
        total = len(before) + len(after)
        wait_for(lambda: rows() >= total, 180, "the records of the new partitions", query)
        settle(query)
    finally:
        pipeline.stop()
    assert rows() == total
    assert sum(s.valid for s in summaries) == total
    assert not quarantine_rows(spark, spec)
    assert window_counts(spark, spec) == minute_counts(r.value for r in before + after)


# -- 4. data loss: retention / delete_records, topic deleted and recreated --------------
def age_out(spark, boot: str, topic: str, root: Path) -> dict:
    """A job that ran over 200 records, then 200 more of which the oldest ~60 are deleted.

    ``delete_records`` moves each partition's log start past records the job has
    not read yet, exactly as retention does while a job is stopped.
    """
    from kafka import TopicPartition

    create_topic(boot, topic, 2)
    first = generated(41, 200, START)
    send(boot, topic, keyed(first))
    spec_file = write_spec(root, topic, boot, fail_on_data_loss=True)
    strict = load(spec_file, boot)
    run_available_now(spark, strict)
    assert window_counts(spark, strict) == minute_counts(r.value for r in first)
    done = end_offsets(boot, topic)
    second = generated(42, 200, START + dt.timedelta(hours=1))
    positions = send(boot, topic, keyed(second))
    per_part = Counter(p for p, _ in positions)
    cut = {p: done[p] + min(30, per_part[p]) for p in done}
    client = admin(boot)
    try:
        client.delete_records({TopicPartition(topic, p): off for p, off in cut.items()})
    finally:
        client.close()
    survivors = [r.value for r, (p, off) in zip(second, positions, strict=True)
                 if off >= cut[p]]
    deleted = sum(cut[p] - done[p] for p in done)
    assert deleted >= 40 and len(survivors) == len(second) - deleted, per_part
    return {"spec_file": spec_file, "strict": strict, "first": [r.value for r in first],
            "survivors": survivors, "deleted": deleted}


def mentions_data_loss(line: str) -> bool:
    low = line.lower()
    return "lost" in low and "offset" in low


def test_records_deleted_while_stopped_fail_then_are_counted_as_a_gap(kafka, spark, topic_name,
                                                                     tmp_path):
    from pyspark.errors import StreamingQueryException

    from streaming.cli.commands import query_failure
    from streaming.observability.metrics import PipelineMetrics

    boot = kafka.bootstrap_servers
    job = age_out(spark, boot, topic_name, tmp_path)
    strict = job["strict"]
    with pytest.raises(StreamingQueryException) as failure:
        run_available_now(spark, strict)
    line = query_failure(failure.value)  # what `streamsketch run` prints
    assert window_counts(spark, strict) == minute_counts(job["first"])

    lenient = replace(strict, source=replace(strict.source, fail_on_data_loss=False))
    metrics = PipelineMetrics()
    try:
        pipeline, summaries = run_available_now(spark, lenient, metrics=metrics)
        name = pipeline.query_name
        gap = counter(metrics, "streamsketch_source_offset_gap_records_total", name)
        resets = counter(metrics, "streamsketch_source_offset_resets_total", name)
    finally:
        metrics.detach()
    assert sum(s.rows for s in summaries) == len(job["survivors"])
    assert gap == job["deleted"]
    assert resets == 0
    assert window_counts(spark, lenient) == minute_counts(job["first"] + job["survivors"])
    assert "\n" not in line and mentions_data_loss(line), line


@pytest.mark.slow
def test_cli_reports_aged_out_records_in_one_line(kafka, spark, topic_name, tmp_path):
    boot = kafka.bootstrap_servers
    job = age_out(spark, boot, topic_name, tmp_path)
    failed = run_available_now_cli(job["spec_file"], 300)
    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = [ln for ln in failed.stderr.splitlines()
             if ln.startswith("streamsketch: the query failed: ")]
    assert len(lines) == 1, failed.stderr[-3000:]
    assert window_counts(spark, job["strict"]) == minute_counts(job["first"])
    assert mentions_data_loss(lines[0]), lines[0]


def recreate_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 60) -> None:
    client = admin(bootstrap)
    try:
        client.delete_topics([topic], timeout_ms=30_000)
        deadline = time.monotonic() + timeout
        while topic in client.list_topics():
            assert time.monotonic() < deadline, "the topic was not deleted"
            time.sleep(0.5)
    finally:
        client.close()
    create_topic(bootstrap, topic, partitions, timeout=timeout)


def test_topic_recreated_fails_then_is_counted_as_a_reset(kafka, spark, topic_name, tmp_path):
    from pyspark.errors import StreamingQueryException

    from streaming.cli.commands import query_failure
    from streaming.observability.metrics import PipelineMetrics

    boot = kafka.bootstrap_servers
    create_topic(boot, topic_name, 2)
    first = generated(51, 200, START)
    send(boot, topic_name, keyed(first))
    strict = load(write_spec(tmp_path, topic_name, boot, fail_on_data_loss=True), boot)
    run_available_now(spark, strict)
    done = end_offsets(boot, topic_name)

    recreate_topic(boot, topic_name, 2)
    # fewer records per partition than before, so every partition's end goes backwards
    second = generated(52, 40, START + dt.timedelta(hours=1))
    positions = send(boot, topic_name, [(r.key, r.value, i % 2) for i, r in enumerate(second)])
    assert all(off < done[p] for p, off in positions)

    with pytest.raises(StreamingQueryException) as failure:
        run_available_now(spark, strict)
    line = query_failure(failure.value)  # what `streamsketch run` prints
    assert "\n" not in line
    assert f"{topic_name}-" in line and "offset" in line.lower(), line
    assert window_counts(spark, strict) == minute_counts(r.value for r in first)

    lenient = replace(strict, source=replace(strict.source, fail_on_data_loss=False))
    metrics = PipelineMetrics()
    try:
        pipeline, summaries = run_available_now(spark, lenient, metrics=metrics)
        name = pipeline.query_name
        # the query goes on: records produced after the reset are read
        third = generated(53, 100, START + dt.timedelta(hours=2))
        send(boot, topic_name, [(r.key, r.value, i % 2) for i, r in enumerate(third)])
        _, more = run_available_now(spark, lenient, metrics=metrics)
        gap = counter(metrics, "streamsketch_source_offset_gap_records_total", name)
        resets = counter(metrics, "streamsketch_source_offset_resets_total", name)
    finally:
        metrics.detach()
    # Spark skips a partition whose end went backwards (from > until) and resumes at the
    # new end: the recreated topic's records present at that moment are not read, and
    # the pipeline counts exactly those as the gap; later records are read, once.
    assert resets == 2
    assert sum(s.rows for s in summaries) == 0
    assert gap == len(second)
    assert sum(s.rows for s in more) == len(third)
    assert window_counts(spark, lenient) == minute_counts(
        [r.value for r in first] + [r.value for r in third])


# -- 5. a burst of ten times max_offsets_per_trigger -----------------------------------
@pytest.mark.slow
def test_burst_is_bounded_per_batch_and_caught_up_exactly(kafka, spark, topic_name, tmp_path):

    per_trigger = 300
    boot = kafka.bootstrap_servers
    create_topic(boot, topic_name, 2)
    warmup = generated(61, 100, START)
    send(boot, topic_name, keyed(warmup))
    spec = load(write_spec(tmp_path, topic_name, boot, per_trigger=per_trigger), boot)
    pipeline, summaries, rows = counting_pipeline(spark, spec)
    try:
        query = pipeline.start()
        wait_for(lambda: rows() >= len(warmup), 180, "the first batch", query)
        burst = generated(62, 10 * per_trigger, START + dt.timedelta(hours=1))
        send(boot, topic_name, keyed(burst))
        total = len(warmup) + len(burst)
        wait_for(lambda: rows() >= total, 300, "the query to catch up", query)
        settle(query)
        progress = [p["numInputRows"] for p in query.recentProgress]
    finally:
        pipeline.stop()
    assert rows() == total
    assert max(s.rows for s in summaries) <= per_trigger
    assert max(progress) <= per_trigger
    burst_batches = [s for s in summaries if s.rows]
    assert len(burst_batches) >= total // per_trigger
    assert window_counts(spark, spec) == minute_counts(r.value for r in warmup + burst)


# -- 6. broker restart under a live query ---------------------------------------------
def test_broker_restart_under_a_live_query(spark, topic_name, tmp_path):
    from streaming.kafka.broker import LocalKafka, free_port

    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    boot = broker.bootstrap_servers
    pipeline = None
    try:
        create_topic(boot, topic_name, 2)
        before = generated(71, 200, START)
        send(boot, topic_name, keyed(before))
        spec = load(write_spec(tmp_path / "job", topic_name, boot), boot)
        pipeline, summaries, rows = counting_pipeline(spark, spec)
        query = pipeline.start()
        wait_for(lambda: rows() >= len(before), 180, "the first records", query)
        assert broker.stop()
        time.sleep(10)  # several triggers find no broker
        assert query.isActive, f"the query ended while the broker was down: {query.exception()}"
        broker.start(timeout=120)
        after = generated(72, 300, START + dt.timedelta(hours=1))
        send(boot, topic_name, keyed(after))
        total = len(before) + len(after)
        wait_for(lambda: rows() >= total, 240, "the records sent after the restart", query)
        settle(query)
    finally:
        if pipeline is not None:
            pipeline.stop()
        broker.stop()
    assert rows() == total
    assert window_counts(spark, spec) == minute_counts(r.value for r in before + after)


# -- 7. poison pills -----------------------------------------------------------------
def _pills(ts: str) -> list[tuple[str, bytes | None]]:
    """(expected reason code, raw value) of each bad record."""
    good = {"ts": ts, "user_id": "u-pill", "amount": 1.5}

    def js(obj) -> bytes:
        return json.dumps(obj).encode()

    return [
        ("invalid_json", b'{"ts": "' + ts.encode() + b'", "user_id": "u1"'),
        ("invalid_utf8", b'{"ts": "' + ts.encode() + b'", "user_id": "caf\xe9"}'),
        ("wrong_type", js(dict(good, amount="twelve"))),
        ("null_value", None),
        ("too_large", js(dict(good, pad="x" * (5 * MiB)))),
        ("missing_time", js({"user_id": "u1", "amount": 2.0})),
        ("future_time", js(dict(good, ts="2099-01-01T00:00:00Z"))),
        ("bad_time", js(dict(good, ts="yesterday at noon"))),
    ]


def test_poison_pills_are_quarantined_at_their_offsets(kafka, spark, topic_name, tmp_path):

    boot = kafka.bootstrap_servers
    create_topic(boot, topic_name, 2, config={"max.message.bytes": str(8 * MiB)})
    valid = generated(81, 200, START)
    pills = _pills(valid[50].event["ts"])
    # valid records with the pills between them, all on partition 1 after the first 100
    items = [(r.key, r.value, None) for r in valid[:100]]
    items += [(b"pill", value, 1) for _, value in pills]
    items += [(r.key, r.value, 1) for r in valid[100:]]
    spec = load(write_spec(tmp_path, topic_name, boot), boot)
    pipeline, summaries, rows = counting_pipeline(spark, spec)
    try:
        query = pipeline.start()
        positions = send(boot, topic_name, items)
        wait_for(lambda: rows() >= len(items), 240, "the records and the pills", query)
        # the query keeps running: later records are still aggregated
        after = generated(82, 100, START + dt.timedelta(hours=1))
        send(boot, topic_name, keyed(after))
        wait_for(lambda: rows() >= len(items) + len(after), 180, "the records after the pills",
                 query)
        settle(query)
    finally:
        pipeline.stop()
    expected = {pos: code for pos, (code, _) in zip(positions[100:100 + len(pills)], pills,
                                                    strict=True)}
    got = {(r["partition"], r["offset"]): r for r in quarantine_rows(spark, spec)}
    assert {k: r["reason_code"] for k, r in got.items()} == expected
    for (code, value), pos in zip(pills, positions[100:], strict=False):
        row = got[pos]
        assert row["topic"] == topic_name and row["reason"].startswith(code + ":")
        assert (bytes(row["value"]) if row["value"] is not None else None) == value, code
    assert rows() == len(items) + len(after)
    assert sum(s.valid for s in summaries) == len(valid) + len(after)
    assert window_counts(spark, spec) == minute_counts(r.value for r in valid + after)
