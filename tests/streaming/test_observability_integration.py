"""Metrics -> Prometheus -> every dashboard panel, for real.

The Prometheus config and alert rules pass ``promtool``; then a real Prometheus
(Debian's ``prometheus`` package) scrapes a live pipeline (real Kafka, Spark,
Delta) every second, and every target of every panel of both dashboards, with
its template variables resolved the way Grafana resolves them
(``label_values`` through the Prometheus API), must return data. The printed
per-panel lines are the proof (``pytest -s``).

The ``promtool`` tests need no JVM and run with the unit tests; they skip, saying
why, where Prometheus is not installed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "docker" / "prometheus"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
#: What Grafana's built-in interval variables become here (scrape interval 1 s).
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
RATE = 100  # events/s, event time = wall clock; about what a batch here keeps up with
DEADLINE_S = 150


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def test_prometheus_config_is_valid():
    out = subprocess.run([_promtool(), "check", "config", "prometheus.yml"], cwd=PROM_DIR,
                         capture_output=True, text=True, timeout=60)
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_alert_rules_pass_their_unit_tests():
    out = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=PROM_DIR,
                         capture_output=True, text=True, timeout=60)
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    rules = re.findall(r"^\s+- alert: (\w+)", (PROM_DIR / "alerts.yml").read_text(), re.M)
    tested = set(re.findall(r"alertname: (\w+)", (PROM_DIR / "alerts_test.yml").read_text()))
    assert rules and set(rules) <= tested, f"alerts without a test: {set(rules) - tested}"


# -- a real Prometheus ------------------------------------------------------------
class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen) -> None:
        self.url, self.proc = url, proc

    def api(self, path: str, **params: str) -> dict:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("/api/v1/query", query=expr)["result"]

    def label_values(self, selector: str, label: str) -> list[str]:
        return self.api(f"/api/v1/label/{label}/values", **{"match[]": selector})


@pytest.fixture
def prometheus_at(tmp_path):
    """Start Prometheus scraping a target each second; killed at teardown."""
    from streaming.kafka.broker import free_port

    started: list[subprocess.Popen] = []

    def start(target: str) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(PROM_DIR / 'alerts.yml'))}]\n"
            "scrape_configs:\n"
            "  - job_name: streamsketch\n"
            f"    static_configs: [{{targets: [{json.dumps(target)}]}}]\n")
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return Prometheus(url, proc)
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("prometheus did not start: "
                             + (tmp_path / "prometheus.log").read_text()[-2000:])

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- dashboards -> queries --------------------------------------------------------
def panel_targets(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            if "expr" in t:  # PromQL; the query-API panel reads streamsketch serve instead
                out.append((panel["title"], t["expr"]))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in sorted(BUILTINS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr


def resolve_variables(prom: Prometheus, dashboard: dict, query_name: str) -> dict[str, str]:
    """Each variable's values from its label_values() query, as Grafana would list them."""
    values: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert m, f"unexpected variable query {var['query']!r}"
        selector = substitute(m.group(1), values)
        found = prom.label_values(selector, m.group(2))
        if not found:
            return {}
        if var["name"] == "query":
            assert query_name in found, (query_name, found)
            values["query"] = query_name
        elif var.get("multi"):
            values[var["name"]] = "(" + "|".join(re.escape(v) for v in found) + ")"
        else:
            values[var["name"]] = found[0]
    return values


def run_all(prom: Prometheus, query_name: str) -> list[tuple[str, str, str, int, list]]:
    rows = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        values = resolve_variables(prom, dashboard, query_name)
        for title, expr in panel_targets(dashboard):
            if not values:
                rows.append((path.stem, title, expr, 0, []))
                continue
            result = prom.query(substitute(expr, values))
            finite = [float(r["value"][1]) for r in result
                      if math.isfinite(float(r["value"][1]))]
            rows.append((path.stem, title, substitute(expr, values), len(result), finite))
    return rows


@pytest.mark.integration
def test_every_dashboard_panel_has_data(kafka, spark, topic_name, tmp_path, prometheus_at):
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce
    from streaming.observability.delta_log import DeltaLogCounter
    from streaming.observability.metrics import PipelineMetrics
    from streaming.spec.model import default_spec_path, load_spec

    assert len(DASHBOARDS) == 2
    began = time.monotonic()
    spec = load_spec(default_spec_path())
    spec = replace(spec,
                   source=replace(spec.source, topic=topic_name,
                                  bootstrap_servers=kafka.bootstrap_servers,
                                  max_offsets_per_trigger=2_000),
                   sink=replace(spec.sink, path=str(tmp_path / "delta"),
                                checkpoint=str(tmp_path / "checkpoints"), trigger_s=2.0))
    # Some data before the query starts (so the first batch has rows), then a live
    # stream whose event time follows the wall clock, from a child process.
    cfg = GeneratorConfig(seed=1, rate=RATE, users=20_000, pages=500, late=0.01,
                          malformed=0.01)
    produce(kafka.bootstrap_servers, topic_name, cfg, count=1_000, rate_limit=20_000)
    produce_log = (tmp_path / "produce.log").open("wb")
    producer = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "produce", "--quiet",
         "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic_name,
         "--rate", str(RATE), "--seed", "2", "--users", "20000", "--pages", "500",
         "--late", "0.01", "--malformed", "0.01", "--duration", str(DEADLINE_S)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=produce_log, start_new_session=True)
    metrics = PipelineMetrics()
    server = metrics.serve("127.0.0.1", 0)
    prom = prometheus_at(f"127.0.0.1:{server.server_port}")
    batches: list = []
    pipeline = Pipeline(spark, spec, on_batch=batches.append)
    metrics.attach(spark, pipeline)
    rows: list = []
    last_progress = None
    try:
        pipeline.start()
        name = pipeline.query_name
        deadline = time.monotonic() + DEADLINE_S
        # Batches with rows after a watermark exists, then enough scrapes for rate().
        while time.monotonic() < deadline:
            assert pipeline.query is not None and pipeline.query.exception() is None
            # batch 0 runs before any watermark; batch 1 has one (and late rows)
            if len([b for b in batches if b.valid]) >= 2 and batches[-1].watermark_ms > 0:
                break
            time.sleep(1)
        assert batches and batches[-1].watermark_ms > 0, f"{len(batches)} batches only"
        scrapes: list = []
        while time.monotonic() < deadline:
            time.sleep(2)
            rows = run_all(prom, name)
            scrapes = prom.query(f'count_over_time(up{{job="streamsketch"}}[{DEADLINE_S}s])')
            # every panel has data, and Prometheus has scraped the service repeatedly
            if all(r[3] and r[4] for r in rows) and scrapes and \
                    int(float(scrapes[0]["value"][1])) >= 5:
                break
        rules = prom.api("/api/v1/rules")["groups"]
        last_progress = pipeline.query.lastProgress
    finally:
        producer.send_signal(signal.SIGINT)  # first, so the query can drain and stop
        try:
            producer.wait(30)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait(10)
        produce_log.close()
        # Interrupt the running batch instead of waiting for a gap between batches
        # (there is none while the backlog lasts); it would re-run from the checkpoint.
        if pipeline.query is not None:
            pipeline.query.stop()
        pipeline.stop()
    print(f"\n{len(batches)} batches; Prometheus scraped the service "
          f"{scrapes[0]['value'][1] if scrapes else 0} times; "
          f"{sum(len(g['rules']) for g in rules)} alert rules loaded; "
          f"{time.monotonic() - began:.0f} s")
    if last_progress is not None:
        src = last_progress.sources[0]
        print(f"last progress: batch {last_progress.batchId}, {src.description} "
              f"end {src.endOffset} latest {src.latestOffset} metrics {src.metrics}")
    print(f"{'dashboard':<24} {'panel':<36} {'series':>6}  value(s)  query")
    for dash, title, expr, n, finite in rows:
        shown = ", ".join(f"{v:.4g}" for v in finite[:3]) or "-"
        print(f"{dash:<24} {title[:36]:<36} {n:>6}  {shown:<24}  {expr}")
    empty = [(d, t, e) for d, t, e, n, finite in rows if not n or not finite]
    assert not empty, f"panels without data: {empty}"
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    assert int(float(scrapes[0]["value"][1])) >= 5

    # the listener saw the query end (events arrive asynchronously)
    def sample(metric: str) -> float | None:
        return metrics.registry.get_sample_value(metric, {"query": name})

    for _ in range(100):
        if sample("streamsketch_query_up") == 0:
            break
        time.sleep(0.1)
    metrics.detach()
    server.shutdown()
    print(f"after stop: query_up {sample('streamsketch_query_up')}, "
          f"query_failed {sample('streamsketch_query_failed')}")
    assert sample("streamsketch_query_up") == 0
    # Delta commits and files from the log replay agree with Delta itself
    from delta.tables import DeltaTable

    assert pipeline.tables is not None
    for table, path in pipeline.tables.all().items():
        version = DeltaTable.forPath(spark, path).history(1).collect()[0]["version"]
        files = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0]["numFiles"]
        print(f"delta {table}: version {version}, {files} files")
        assert DeltaLogCounter(path).refresh() == (version + 1, files)
