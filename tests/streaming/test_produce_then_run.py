"""``produce`` with its defaults, then ``run``: what was produced is aggregated.

Found on the landed tree: ``produce --count 1000000 --rate 0`` started event time at
now and ran it at 1,000 events/s of event time, so ``run`` quarantined 633,072 of the
1M as ``future_time``, without a word beyond the batch lines. Now the times end at now,
and a batch that quarantines most of its records says why in one loud line.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults_process import cli, counted_once, write_spec

pytestmark = pytest.mark.integration

COUNT = 20_000
REPO = Path(__file__).resolve().parents[2]


def _produce(kafka, topic: str, *extra: str) -> None:
    code, _, err = cli(["produce", "--bootstrap-servers", kafka.bootstrap_servers,
                        "--topic", topic, "--count", str(COUNT), "--rate", "0", "--quiet",
                        *extra])
    assert code == 0, err[-2000:]


def test_produce_as_fast_as_possible_then_run_aggregates_everything(kafka, spark, topic_name,
                                                                    tmp_path):
    from streaming.spec.model import load_spec

    _produce(kafka, topic_name)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=10_000)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now", "--verbose"])
    assert code == 0, err[-2000:]
    assert "streamsketch: WARNING" not in err, err[-2000:]
    assert counted_once(spark, load_spec(spec_file)) == (COUNT, 0)
    # --verbose: the start-up and stop phases, in the order they happen, and each batch's
    phases = [ln.split(":")[1].strip() for ln in err.splitlines() if ln.startswith("phase: ")]
    assert phases == ["Python started, spec read", "JVM and Spark session",
                      "checkpoint and tables checked", "query started",
                      "first batch planned (Kafka offsets, offset log)",
                      f"first batch ran ({min(COUNT, 10_000)} rows)",
                      "query ended", "stopped (closed windows compacted)"], err[-2000:]
    batches = [ln for ln in err.splitlines() if ln.startswith("batch ")]
    assert sum(" phases: plan " in ln for ln in batches) == len(batches) // 2 >= 1


def test_a_batch_of_future_events_says_so_in_one_loud_line(kafka, spark, topic_name, tmp_path):
    from streaming.spec.model import load_spec

    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    _produce(kafka, topic_name, "--start-time", tomorrow)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=10_000)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    alarms = [ln for ln in err.splitlines() if ln.startswith("streamsketch: WARNING: batch")]
    assert alarms and all("as future_time: event times run ahead" in ln for ln in alarms), \
        err[-2000:]
    assert counted_once(spark, load_spec(spec_file)) == (0, COUNT)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_produce_flushes_what_it_sent_and_says_so(kafka, topic_name, stop):
    """Ctrl-C (or SIGTERM) of an endless, paced ``produce``: no traceback, exit 0, its
    stats, and the topic holds exactly the records it says it sent."""
    from kafka import KafkaConsumer, TopicPartition

    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "produce", "--bootstrap-servers",
         kafka.bootstrap_servers, "--topic", topic_name, "--rate", "3000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # a progress line comes every 2 s of sending
            if " sent to " in line:
                break
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    stats = json.loads(out)
    assert stats["interrupted"] and stats["failed"] == 0 and stats["sent"] > 0
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        parts = [TopicPartition(topic_name, p) for p in consumer.partitions_for_topic(topic_name)]
        stored = sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()
    assert stored == stats["sent"]


def test_produce_nested_then_run_the_nested_spec_aggregates_everything(kafka, spark, topic_name,
                                                                      tmp_path):
    """``produce --shape nested`` and ``streaming/specs/clickstream-nested.toml``: every
    event aggregated, as with the flat shape and the bundled spec."""
    from streaming.kafka.shapes import nested_spec_text
    from streaming.spec.model import load_spec

    _produce(kafka, topic_name, "--shape", "nested")
    flat = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers, per_trigger=10_000)
    spec_file = flat.with_name("nested.toml")
    spec_file.write_text(nested_spec_text(flat.read_text()))
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    assert "streamsketch: WARNING" not in err, err[-2000:]
    spec = load_spec(spec_file)
    assert counted_once(spark, spec) == (COUNT, 0)
    # the records were nested: the fields the nested spec names by path were there
    row = (spark.read.format("delta").load(f"{spec.sink.path}/aggregates")
           .selectExpr("max(max_page_amount) AS amount", "count(*) AS n").first())
    assert row["amount"] is not None and row["amount"] > 0


def _avro_spec(root: Path, topic: str, bootstrap: str) -> Path:
    """The bundled spec, pointed at ``topic``, reading Avro values of the clickstream's
    schema (``produce --format avro``'s)."""
    from streaming.kafka.shapes import avro_schema_path

    spec_file = write_spec(root, topic, bootstrap, per_trigger=10_000)
    text = spec_file.read_text().replace('time_format = "iso8601"',
                                         'time_format = "iso8601"\nformat = "avro"', 1)
    text = text.replace("\n[[windows]]", f'\n[events.avro]\nschemas = {{ 1 = '
                                         f'"{avro_schema_path()}" }}\n\n[[windows]]', 1)
    spec_file.write_text(text)
    return spec_file


def test_produce_avro_then_run_the_avro_spec_aggregates_everything(kafka, spark, topic_name,
                                                                  tmp_path):
    """``produce --format avro`` (Confluent wire format, schema id 1) and a spec with
    ``[events] format = "avro"``: every event aggregated, the JSON run's numbers."""
    from streaming.spec.model import load_spec

    _produce(kafka, topic_name, "--format", "avro")
    spec_file = _avro_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    assert "streamsketch: WARNING" not in err, err[-2000:]
    spec = load_spec(spec_file)
    assert spec.events.format == "avro"
    assert counted_once(spark, spec) == (COUNT, 0)
    row = (spark.read.format("delta").load(f"{spec.sink.path}/aggregates")
           .selectExpr("max(max_amount) AS amount").first())
    assert row["amount"] is not None and row["amount"] > 0


def test_an_avro_topic_recorded_then_backfilled_counts_every_event(kafka, topic_name, tmp_path):
    """Avro values through ``record`` (a log keeps their bytes) and ``replay --backfill``
    with the Avro spec: every event aggregated, none quarantined."""
    _produce(kafka, topic_name, "--format", "avro")
    log = tmp_path / "avro.jsonl.gz"
    code, _, err = cli(["record", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                        topic_name, "--out", str(log)])
    assert code == 0, err[-2000:]
    spec_file = _avro_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers)
    code, out, err = cli(["replay", str(log), "--spec", str(spec_file), "--backfill",
                          "--sink", str(tmp_path / "bf"), "--json", "--quiet"])
    assert code == 0, err[-2000:]
    stats = json.loads(out)
    assert (stats["records"], stats["valid"], stats["quarantined"]) == (COUNT, COUNT, {})


@pytest.mark.parametrize("shape", [["--shape", "nested"], ["--values", "avro"]],
                         ids=["nested", "avro"])
def test_a_recorded_flat_clickstream_replayed_nested_or_as_avro_counts_every_event(
        kafka, spark, topic_name, tmp_path, shape):
    """``record`` a flat clickstream, ``replay`` it with ``--shape nested`` or ``--values
    avro`` to another topic, and ``run`` the nested or Avro spec over that: every event
    aggregated, none quarantined."""
    from streaming.kafka.shapes import nested_spec_text
    from streaming.spec.model import load_spec

    _produce(kafka, topic_name)
    log = tmp_path / "flat.jsonl.gz"
    code, _, err = cli(["record", "--bootstrap-servers", kafka.bootstrap_servers, "--topic",
                        topic_name, "--out", str(log)])
    assert code == 0, err[-2000:]
    shaped = topic_name + "-shaped"
    code, out, err = cli(["replay", str(log), "--topic", shaped, "--bootstrap-servers",
                          kafka.bootstrap_servers, "--json", "--quiet", *shape])
    assert code == 0, err[-2000:]
    assert json.loads(out)["records"] == COUNT
    if shape[0] == "--values":
        spec_file = _avro_spec(tmp_path / "job", shaped, kafka.bootstrap_servers)
    else:
        flat = write_spec(tmp_path / "job", shaped, kafka.bootstrap_servers, per_trigger=10_000)
        spec_file = flat.with_name("nested.toml")
        spec_file.write_text(nested_spec_text(flat.read_text()))
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    assert counted_once(spark, load_spec(spec_file)) == (COUNT, 0)


def test_replay_shapes_are_refused_with_a_backfill(tmp_path):
    code, _, err = cli(["replay", str(tmp_path / "x.jsonl"), "--backfill", "--spec",
                        str(tmp_path / "s.toml"), "--values", "avro"])
    assert code == 2 and "--backfill reads the logs as they are" in err, err
    code, _, err = cli(["replay", str(tmp_path / "x.jsonl"), "--topic", "t", "--values",
                        "avro", "--shape", "nested"])
    assert code == 2 and "flat shape only" in err, err
