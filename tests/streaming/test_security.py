"""Kafka SASL credentials reach the source and nothing else.

A broker with a SASL_PLAINTEXT listener (PLAIN, one user) is started for the
test. ``streamsketch run --available-now`` reads from it through the spec's
``[source.kafka]`` table, the JAAS line (with the password) coming only from an
environment variable the spec names. Spark's event log is enabled for the run
(``PYSPARK_SUBMIT_ARGS``: the CLI has no option for extra Spark settings) and
``/metrics`` is scraped while it runs. The run must aggregate every record, and
the password must appear in none of: the process's stdout and stderr, any file
under the checkpoint folder, the tables' ``_delta_log``, the event log, the
scrapes. A wrong password must end the run with one clear error line, in bounded
time.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
N_EVENTS = 300
USER = "streamsketch"
JAAS_ENV = "STREAMSKETCH_TEST_KAFKA_JAAS"

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"

[source.kafka]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.jaas.config" = {{ env = "{env}" }}

[events]
time_field = "ts"
watermark = "1 day"
[events.fields]
user_id = "string"
amount = "double"

[[windows]]
name = "minutely"
size = "1 minute"
metrics = ["count", "sum(amount)"]

  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 10

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
host = "127.0.0.1"
port = {metrics_port}
"""


def jaas(user: str, password: str) -> str:
    return ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{user}" password="{password}";')


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    from streaming.kafka.broker import LocalKafka, free_port

    password = "pw-" + secrets.token_hex(12)
    broker = LocalKafka(tmp_path_factory.mktemp("sasl-kafka"), port=free_port(),
                        sasl_plain=(USER, password))
    assert password not in repr(broker)
    broker.start(timeout=120)
    try:
        yield broker, password
    finally:
        broker.stop()


def produce_sasl(broker, topic: str) -> list:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from streaming.kafka.generator import GeneratorConfig, generate

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers,
                              request_timeout_ms=30_000, **broker.client_config())
    try:
        client.create_topics([NewTopic(topic, 2, 1)])
    finally:
        client.close()
    records = list(generate(GeneratorConfig(seed=91, rate=10.0, start_time=START, users=200,
                                            pages=20), N_EVENTS))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all",
                             **broker.client_config())
    try:
        for r in records:
            producer.send(topic, key=r.key, value=r.value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return records


def write_spec(root: Path, topic: str, bootstrap: str, metrics_port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(SPEC.format(topic=topic, bootstrap=bootstrap, env=JAAS_ENV, root=root,
                                metrics_port=metrics_port))
    return path


class Scraper(threading.Thread):
    """Scrapes ``/metrics`` every 0.3 s until stopped; keeps every body it got."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.bodies: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    self.bodies.append(resp.read().decode())
            except OSError:
                pass
            self.halt.wait(0.3)


def run_cli(spec_file: Path, jaas_line: str, event_log: Path | None,
            timeout: float) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env[JAAS_ENV] = jaas_line
    if event_log is not None:
        event_log.mkdir(parents=True, exist_ok=True)
        # uncompressed (Spark 4 compresses event logs by default), so bytes can be searched
        env["PYSPARK_SUBMIT_ARGS"] = (f"--conf spark.eventLog.enabled=true "
                                      f"--conf spark.eventLog.dir={event_log.as_uri()} "
                                      "--conf spark.eventLog.compress=false pyspark-shell")
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                             str(spec_file), "--available-now", "--master", "local[2]"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`streamsketch run` did not end within {timeout:.0f} s; stderr tail: "
                    f"{err[-2000:]}")
    return proc.returncode, out, err


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def holding(secret: bytes, paths: list[Path]) -> list[str]:
    return [str(p) for p in paths if secret in p.read_bytes()]


@pytest.mark.slow
def test_sasl_run_aggregates_and_leaks_no_password(spark, sasl_broker, topic_name, tmp_path):
    from pyspark.sql import functions as F

    from streaming.kafka.broker import free_port

    broker, password = sasl_broker
    records = produce_sasl(broker, topic_name)
    port = free_port()
    spec_file = write_spec(tmp_path / "job", topic_name, broker.bootstrap_servers, port)
    event_log = tmp_path / "events"
    scraper = Scraper(port)
    scraper.start()
    try:
        code, out, err = run_cli(spec_file, jaas(USER, password), event_log, timeout=420)
    finally:
        scraper.halt.set()
        scraper.join(10)
    assert code == 0, err[-3000:]

    root = tmp_path / "job"
    counts = (spark.read.format("delta").load(str(root / "delta" / "aggregates"))
              .where(F.col("window_name") == "minutely").agg(F.sum("count")).first()[0])
    assert counts == N_EVENTS == len(records)

    # where a leak would land; each place is non-empty, so the search can find something
    checkpoint = files_under(root / "ck")
    delta_logs = files_under(*(root / "delta" / t / "_delta_log"
                               for t in ("aggregates", "sketches", "quarantine")))
    events = files_under(event_log)
    assert checkpoint and delta_logs and events, "a searched place is empty"
    assert any(topic_name.encode() in p.read_bytes() for p in events), \
        "the event log does not even name the topic: it is not the run's"
    assert scraper.bodies and any("streamsketch_batches_total" in b for b in scraper.bodies)
    secret = password.encode()
    assert password not in out and password not in err
    assert holding(secret, checkpoint) == []
    assert holding(secret, delta_logs) == []
    assert holding(secret, events) == []
    assert not [b for b in scraper.bodies if password in b]


@pytest.mark.slow
def test_wrong_password_fails_with_one_clear_line(sasl_broker, topic_name, tmp_path):
    broker, password = sasl_broker
    produce_sasl(broker, topic_name)
    wrong = "not-" + password
    spec_file = write_spec(tmp_path / "job", topic_name, broker.bootstrap_servers, free())
    began = time.monotonic()
    code, out, err = run_cli(spec_file, jaas(USER, wrong), None, timeout=300)
    elapsed = time.monotonic() - began
    failed = [ln for ln in err.splitlines() if ln.startswith("streamsketch: ")]
    assert code != 0, err[-3000:]
    assert len(failed) == 1, err[-3000:]
    assert "authentication" in failed[0].lower(), failed[0]
    assert wrong not in out and wrong not in err
    print(f"\nwrong password: exit {code} after {elapsed:.0f} s: {failed[0]}")


def free() -> int:
    from streaming.kafka.broker import free_port

    return free_port()
