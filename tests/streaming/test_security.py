"""Kafka credentials reach the source and nothing else.

Brokers are started from the project's Kafka jars with one client listener each:
SASL_SSL (SASL PLAIN over TLS, with a key and certificate signed by a CA made for
the test with the JDK's ``keytool``) and SASL_PLAINTEXT. ``streamsketch run
--available-now`` reads from them through the spec's ``[source.kafka]`` table;
the JAAS line (with the SASL password) and the truststore password come only
from environment variables the spec names. Spark's event log is enabled for the
run (``PYSPARK_SUBMIT_ARGS``: the CLI has no option for extra Spark settings) and
``/metrics`` is scraped while it runs. The run must count every record exactly,
and no password (SASL, the broker's keystore, the client's truststore, the CA's
keystore) may appear in: the process's stdout and stderr, the spec file, any file
under the checkpoint folder, the tables' ``_delta_log``, the event log, the
scrapes.

The SASL_SSL run is the fast leak scan of ``make test``; the SASL_PLAINTEXT run
and the failures (a wrong SASL password, a truststore of another CA, a wrong
truststore password: one clear error line each, in bounded time) are slow.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_runs import run_available_now as run_available_now_cli

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
N_EVENTS = 300
USER = "streamsketch"
JAAS_ENV = "STREAMSKETCH_TEST_KAFKA_JAAS"
TRUSTSTORE_ENV = "STREAMSKETCH_TEST_TRUSTSTORE_PASSWORD"

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"

[source.kafka]
{kafka}

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


# -- a CA of our own -------------------------------------------------------------------
@dataclass(frozen=True)
class Tls:
    """A CA, a broker key and certificate it signed, and a truststore holding the CA."""

    ca_pem: Path
    keystore: Path  # PKCS12: the broker's key and certificate chain
    truststore: Path  # PKCS12: the CA certificate, for the pipeline's Kafka client
    passwords: dict[str, str]  # "ca", "keystore", "truststore"


def make_tls(folder: Path) -> Tls:
    """Made with ``keytool``; its passwords reach it by environment, never on a command line.

    The broker certificate names 127.0.0.1 and localhost, so clients verify host names.
    """
    from streaming.runtime.jvm import find_java

    folder.mkdir(parents=True, exist_ok=True)
    exe = Path(os.path.realpath(find_java())).with_name("keytool")
    pw = {k: f"{k}-" + secrets.token_hex(12) for k in ("ca", "keystore", "truststore")}
    env = {**os.environ, **{f"PW_{k.upper()}": v for k, v in pw.items()}}
    ca, ks, ts = (str(folder / n) for n in ("ca.p12", "broker.p12", "truststore.p12"))
    ca_pem, csr, crt = (str(folder / n) for n in ("ca.pem", "broker.csr", "broker.pem"))
    key = ["-keyalg", "EC", "-groupname", "secp256r1", "-validity", "2", "-storetype", "PKCS12"]
    steps = [
        ["-genkeypair", "-alias", "ca", "-dname", "CN=streamsketch test CA", *key,
         "-ext", "bc:c", "-ext", "KU:c=keyCertSign,cRLSign", "-keystore", ca,
         "-storepass:env", "PW_CA"],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-storepass:env", "PW_CA",
         "-file", ca_pem],
        ["-genkeypair", "-alias", "broker", "-dname", "CN=localhost", *key, "-keystore", ks,
         "-storepass:env", "PW_KEYSTORE"],
        ["-certreq", "-alias", "broker", "-keystore", ks, "-storepass:env", "PW_KEYSTORE",
         "-file", csr],
        ["-gencert", "-alias", "ca", "-keystore", ca, "-storepass:env", "PW_CA", "-rfc",
         "-validity", "2", "-ext", "SAN=ip:127.0.0.1,dns:localhost",
         "-ext", "KU:c=digitalSignature", "-ext", "EKU=serverAuth", "-infile", csr,
         "-outfile", crt],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", ca_pem, "-keystore", ks,
         "-storepass:env", "PW_KEYSTORE"],
        ["-importcert", "-alias", "broker", "-file", crt, "-keystore", ks,
         "-storepass:env", "PW_KEYSTORE"],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", ca_pem, "-keystore", ts,
         "-storetype", "PKCS12", "-storepass:env", "PW_TRUSTSTORE"],
    ]
    for step in steps:
        proc = subprocess.run([str(exe), *step], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"keytool {step[0]}: {proc.stdout}{proc.stderr}"
    return Tls(Path(ca_pem), Path(ks), Path(ts), pw)


# -- brokers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Secured:
    broker: object  # streaming.kafka_broker.LocalKafka
    sasl_password: str
    tls: Tls | None

    def secrets(self) -> dict[str, str]:
        """Every password of this setup, by what it guards."""
        found = {"sasl": self.sasl_password}
        found.update(self.tls.passwords if self.tls else {})
        return found


def start_broker(home: Path, tls: Tls | None) -> Secured:
    from streaming.kafka.broker import BrokerTls, LocalKafka, free_port

    password = "pw-" + secrets.token_hex(12)
    broker_tls = (BrokerTls(tls.keystore, tls.passwords["keystore"], tls.ca_pem)
                  if tls else None)
    broker = LocalKafka(home, port=free_port(), sasl_plain=(USER, password), tls=broker_tls)
    secured = Secured(broker, password, tls)
    assert not [s for s in secured.secrets().values() if s in repr(broker)]
    broker.start(timeout=120)
    return secured


@pytest.fixture(scope="module")
def sasl_ssl_broker(tmp_path_factory):
    tls = make_tls(tmp_path_factory.mktemp("ca"))
    secured = start_broker(tmp_path_factory.mktemp("sasl-ssl-kafka"), tls)
    try:
        yield secured
    finally:
        secured.broker.stop()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    secured = start_broker(tmp_path_factory.mktemp("sasl-kafka"), None)
    try:
        yield secured
    finally:
        secured.broker.stop()


def produce(broker, topic: str) -> list:
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


# -- one run of the CLI ----------------------------------------------------------------
def write_spec(root: Path, topic: str, secured: Secured, metrics_port: int,
               truststore: Path | None = None) -> Path:
    """The spec of a run against ``secured``; ``truststore`` overrides the CA's own."""
    kafka = [f'"security.protocol" = "{secured.broker.security_protocol}"',
             '"sasl.mechanism" = "PLAIN"', f'"sasl.jaas.config" = {{ env = "{JAAS_ENV}" }}']
    if secured.tls:
        kafka += ['"ssl.truststore.type" = "PKCS12"',
                  f'"ssl.truststore.location" = "{truststore or secured.tls.truststore}"',
                  f'"ssl.truststore.password" = {{ env = "{TRUSTSTORE_ENV}" }}']
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(SPEC.format(topic=topic, bootstrap=secured.broker.bootstrap_servers,
                                kafka="\n".join(kafka), root=root, metrics_port=metrics_port))
    return path


def client_env(secured: Secured, *, sasl_password: str | None = None,
               truststore_password: str | None = None) -> dict[str, str]:
    """The variables the spec names, from the setup's own passwords unless overridden."""
    env = {JAAS_ENV: jaas(USER, sasl_password or secured.sasl_password)}
    if secured.tls:
        env[TRUSTSTORE_ENV] = truststore_password or secured.tls.passwords["truststore"]
    return env


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


def run_cli(spec_file: Path, extra_env: dict[str, str], event_log: Path | None,
            timeout: float) -> tuple[int, str, str]:
    env = dict(extra_env)
    if event_log is not None:
        event_log.mkdir(parents=True, exist_ok=True)
        # uncompressed (Spark 4 compresses event logs by default), so bytes can be searched
        env["PYSPARK_SUBMIT_ARGS"] = (f"--conf spark.eventLog.enabled=true "
                                      f"--conf spark.eventLog.dir={event_log.as_uri()} "
                                      "--conf spark.eventLog.compress=false pyspark-shell")
    done = run_available_now_cli(spec_file, timeout, env)
    return done.returncode, done.stdout, done.stderr


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def holding(secret: bytes, paths: list[Path]) -> list[str]:
    return [str(p) for p in paths if secret in p.read_bytes()]


def minute_counts_expected(records: list) -> dict[dt.datetime, int]:
    """Events per minute, from the generated events' own ``ts``."""
    minutes = (dt.datetime.fromisoformat(r.event["ts"].replace("Z", "+00:00"))
               .replace(second=0, microsecond=0) for r in records)
    return dict(Counter(minutes))


def minute_counts_stored(delta: Path) -> dict[dt.datetime, int]:
    from deltalake import DeltaTable

    rows = DeltaTable(str(delta / "aggregates")).to_pyarrow_table(
        columns=["window_name", "window_start", "count"]).to_pylist()
    stored: Counter = Counter()
    for row in rows:
        if row["window_name"] == "minutely":
            stored[row["window_start"]] += row["count"]
    return dict(stored)


def run_and_scan(secured: Secured, topic: str, root: Path) -> None:
    """One run that must count every record and leak none of the setup's passwords."""
    from streaming.kafka.broker import free_port

    records = produce(secured.broker, topic)
    port = free_port()
    spec_file = write_spec(root / "job", topic, secured, port)
    event_log = root / "events"
    scraper = Scraper(port)
    scraper.start()
    try:
        code, out, err = run_cli(spec_file, client_env(secured), event_log, timeout=420)
    finally:
        scraper.halt.set()
        scraper.join(10)
    assert code == 0, err[-3000:]

    job = root / "job"
    expected = minute_counts_expected(records)
    assert sum(expected.values()) == N_EVENTS
    assert minute_counts_stored(job / "delta") == expected

    # where a leak would land; each place is non-empty, so the search can find something
    checkpoint = files_under(job / "ck")
    delta_logs = files_under(*(job / "delta" / t / "_delta_log"
                               for t in ("aggregates", "sketches", "quarantine")))
    events = files_under(event_log)
    assert checkpoint and delta_logs and events, "a searched place is empty"
    assert any(topic.encode() in p.read_bytes() for p in events), \
        "the event log does not even name the topic: it is not the run's"
    assert scraper.bodies and any("streamsketch_batches_total" in b for b in scraper.bodies)
    for name, password in secured.secrets().items():
        secret = password.encode()
        assert password not in out and password not in err, name
        assert holding(secret, [spec_file]) == [], name
        assert holding(secret, checkpoint) == [], name
        assert holding(secret, delta_logs) == [], name
        assert holding(secret, events) == [], name
        assert not [b for b in scraper.bodies if password in b], name


def run_fails_in_one_line(secured: Secured, topic: str, root: Path, env: dict[str, str],
                          truststore: Path | None = None) -> tuple[str, str]:
    """A run that must fail with one ``streamsketch:`` line; returns it and all of stderr."""
    from streaming.kafka.broker import free_port

    produce(secured.broker, topic)
    spec_file = write_spec(root / "job", topic, secured, free_port(), truststore)
    began = time.monotonic()
    code, out, err = run_cli(spec_file, env, None, timeout=300)
    elapsed = time.monotonic() - began
    failed = [ln for ln in err.splitlines() if ln.startswith("streamsketch: ")]
    assert code != 0, err[-3000:]
    assert len(failed) == 1, err[-3000:]
    for password in [*secured.secrets().values(), *env.values()]:
        assert password not in out and password not in err
    print(f"\nexit {code} after {elapsed:.0f} s: {failed[0]}")
    return failed[0], err


# -- the tests -------------------------------------------------------------------------
def test_broker_serves_tls_with_a_certificate_of_our_ca(sasl_ssl_broker):
    secured = sasl_ssl_broker
    assert secured.broker.security_protocol == "SASL_SSL"
    context = ssl.create_default_context(cafile=str(secured.tls.ca_pem))
    with socket.create_connection(("127.0.0.1", secured.broker.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        assert ("IP Address", "127.0.0.1") in conn.getpeercert()["subjectAltName"]
    with socket.create_connection(("127.0.0.1", secured.broker.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_sasl_ssl_run_counts_every_record_and_leaks_no_password(sasl_ssl_broker, topic_name,
                                                                  tmp_path):
    run_and_scan(sasl_ssl_broker, topic_name, tmp_path)


@pytest.mark.slow
def test_sasl_plaintext_run_counts_every_record_and_leaks_no_password(sasl_broker, topic_name,
                                                                        tmp_path):
    run_and_scan(sasl_broker, topic_name, tmp_path)


@pytest.mark.slow
def test_wrong_password_fails_with_one_clear_line(sasl_broker, topic_name, tmp_path):
    wrong = "not-" + sasl_broker.sasl_password
    line, _ = run_fails_in_one_line(sasl_broker, topic_name, tmp_path,
                                    client_env(sasl_broker, sasl_password=wrong))
    assert "authentication" in line.lower(), line


@pytest.mark.slow
def test_truststore_of_another_ca_fails_with_one_clear_line(sasl_ssl_broker, topic_name,
                                                            tmp_path):
    other = make_tls(tmp_path / "other-ca")
    env = client_env(sasl_ssl_broker, truststore_password=other.passwords["truststore"])
    line, _ = run_fails_in_one_line(sasl_ssl_broker, topic_name, tmp_path, env,
                                    other.truststore)
    assert "SslAuthenticationException" in line, line


@pytest.mark.slow
def test_wrong_truststore_password_fails_in_one_line_and_logs_why(sasl_ssl_broker,
                                                                  topic_name, tmp_path):
    wrong = "not-" + sasl_ssl_broker.tls.passwords["truststore"]
    line, err = run_fails_in_one_line(sasl_ssl_broker, topic_name, tmp_path,
                                      client_env(sasl_ssl_broker, truststore_password=wrong))
    # The line names the Kafka client that could not be made; the reason is in the
    # stack trace logged above it.
    assert "Kafka" in line, line
    assert "keystore password was incorrect" in err, err[-3000:]
