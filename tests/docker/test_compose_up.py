"""End to end in containers: `docker compose up` builds the image, starts the
stack, and Prometheus ends up holding the pipeline's `streamsketch_` series;
Grafana logs in only with the password of its secret file, and refuses to start
with an empty one.

Runs only where a Docker engine (with the compose plugin) answers; it builds the
application image and waits for Spark, so it takes minutes.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from compose_helpers import COMPOSE_FILE, ROOT

pytestmark = pytest.mark.docker

PROMETHEUS = "http://127.0.0.1:9090"
GRAFANA = "http://127.0.0.1:3000"
METRICS = "http://127.0.0.1:9108/metrics"
SERIES_TIMEOUT_S = 600


def _engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


def _get(url: str, *, auth: tuple[str, str] | None = None, timeout: float = 10) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _need_compose() -> None:
    if not _engine_answers():
        pytest.skip("no Docker engine answers")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the Docker engine answers, but the docker compose plugin is missing")


def _password_file(folder: Path, password: str) -> Path:
    """A secret file Grafana (uid 472 in its container) can read: compose bind-mounts
    it with its host mode."""
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "grafana_admin_password"
    path.write_text(password + "\n")
    path.chmod(0o644)
    return path


def _compose_env(password_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
    return {**env, "GRAFANA_ADMIN_PASSWORD_FILE": str(password_file),
            "GRAFANA_ADMIN_USER": "admin"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _need_compose()
    password = secrets.token_urlsafe(24)
    env = _compose_env(_password_file(tmp_path_factory.mktemp("secrets"), password))
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", f"streamsketch-e2e-{os.getpid()}"]
    try:
        up = subprocess.run(base + ["up", "-d", "--build", "--wait", "--wait-timeout", "900"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
        if up.returncode != 0:
            logs = subprocess.run(base + ["logs", "--tail", "50"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            pytest.fail(f"docker compose up failed:\n{up.stderr[-4000:]}\n{logs.stdout[-6000:]}")
        yield {"password": password}
    finally:
        subprocess.run(base + ["down", "-v", "--remove-orphans"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(3600)
def test_prometheus_collects_the_pipeline_metrics(stack):
    status, body = _get(METRICS)
    assert status == 200 and "streamsketch_" in body
    query = urllib.parse.urlencode({"query": 'count({__name__=~"streamsketch_.+"})'})
    deadline = time.monotonic() + SERIES_TIMEOUT_S
    while True:
        status, body = _get(f"{PROMETHEUS}/api/v1/query?{query}")
        result = json.loads(body)["data"]["result"] if status == 200 else []
        if result and float(result[0]["value"][1]) > 0:
            break
        assert time.monotonic() < deadline, f"no streamsketch_ series in Prometheus: {body}"
        time.sleep(10)
    status, body = _get(f"{PROMETHEUS}/api/v1/targets?state=active")
    health = {t["scrapeUrl"]: t["health"] for t in json.loads(body)["data"]["activeTargets"]}
    assert any("9108" in url and h == "up" for url, h in health.items()), health


@pytest.mark.timeout(600)
def test_grafana_requires_login_and_serves_the_dashboards(stack):
    status, _ = _get(f"{GRAFANA}/api/search?type=dash-db")
    assert status == 401, "Grafana answers without a login"
    status, _ = _get(f"{GRAFANA}/api/search?type=dash-db", auth=("admin", "admin"))
    assert status == 401, "admin/admin logs in"
    status, body = _get(f"{GRAFANA}/api/search?type=dash-db", auth=("admin", stack["password"]))
    assert status == 200, body
    titles = {d["title"] for d in json.loads(body)}
    expected = {json.loads(p.read_text())["title"] for p in (ROOT / "dashboards").rglob("*.json")}
    assert expected <= titles, f"not provisioned: {expected - titles}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("content", ["", "\n"])
def test_grafana_refuses_to_start_with_an_empty_password_file(tmp_path, content):
    """Grafana alone (no dependencies): an empty secret would mean admin/admin."""
    _need_compose()
    secret = _password_file(tmp_path / "secrets", "")
    secret.write_text(content)
    env = _compose_env(secret)
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p",
            f"streamsketch-e2e-grafana-{os.getpid()}"]
    try:
        run = subprocess.run(base + ["run", "--rm", "--no-deps", "grafana"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=800)
    finally:
        subprocess.run(base + ["down", "--remove-orphans"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "grafana: no admin password in /run/secrets/grafana_admin_password" in \
        run.stdout + run.stderr
