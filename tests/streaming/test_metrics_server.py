"""The /metrics serving process: renders bounded by time, not by scrapers; lifetimes tied."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streaming.errors import ConfigError
from streaming.observability.server import SnapshotServer

REPO = Path(__file__).resolve().parents[2]
CT = "text/plain; version=0.0.4; charset=utf-8"


class Renders:
    """A render function that counts its calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.errors = 0

    def __call__(self) -> bytes:
        if self.fail:
            raise RuntimeError("render broke")
        self.calls += 1
        return (b"# TYPE streamsketch_renders gauge\n"
                b"streamsketch_renders %d\n" % self.calls)

    def error(self) -> None:
        self.errors += 1


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"] == CT
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_first_scrape_gets_a_render_and_the_server_adds_its_own_series():
    r = Renders()
    server = SnapshotServer(r, "127.0.0.1", 0, content_type=CT, max_age=0.2)
    try:
        first = scrape(server.server_port)
        assert first["streamsketch_renders"] == 1
        assert first["streamsketch_metrics_scrapes_total"] == 1
        assert 0 <= first["streamsketch_metrics_snapshot_age_seconds"] < 5
        time.sleep(0.3)  # older than max_age: the next scrape asks for a new render
        second = scrape(server.server_port)
        assert second["streamsketch_renders"] == 2
        assert second["streamsketch_metrics_scrapes_total"] == 2
    finally:
        server.shutdown()
    assert not server.alive


def test_ten_scrapers_back_to_back_cost_one_render_per_max_age():
    r = Renders()
    max_age = 0.25
    server = SnapshotServer(r, "127.0.0.1", 0, content_type=CT, max_age=max_age)
    answers: list[float] = []
    failures: list[str] = []

    def scraper() -> None:
        for _ in range(40):
            try:
                answers.append(scrape(server.server_port)["streamsketch_renders"])
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(repr(exc))

    try:
        t0 = time.monotonic()
        threads = [threading.Thread(target=scraper) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
    assert not failures, failures[:3]
    assert len(answers) == 400
    # a render is asked for only when the bytes are max_age old: the count is bounded
    # by the elapsed time, whatever the number of scrapes
    assert r.calls <= elapsed / max_age + 1, (r.calls, elapsed)
    assert max(answers) == r.calls


def test_a_failing_render_serves_the_previous_bytes_and_is_counted():
    r = Renders()
    server = SnapshotServer(r, "127.0.0.1", 0, content_type=CT, max_age=0.05,
                            on_error=r.error)
    try:
        assert scrape(server.server_port)["streamsketch_renders"] == 1
        r.fail = True
        time.sleep(0.1)
        assert scrape(server.server_port)["streamsketch_renders"] == 1
        assert r.errors == 1
    finally:
        server.shutdown()
    assert r.errors == 1  # our own shutdown is not an error


def test_a_busy_port_is_a_config_error():
    server = SnapshotServer(Renders(), "127.0.0.1", 0, content_type=CT, max_age=0.5)
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1"):
            SnapshotServer(Renders(), "127.0.0.1", server.server_port, content_type=CT,
                           max_age=0.5)
    finally:
        server.shutdown()


def test_the_serving_process_dying_is_counted():
    r = Renders()
    server = SnapshotServer(r, "127.0.0.1", 0, content_type=CT, max_age=0.5,
                            on_error=r.error)
    try:
        scrape(server.server_port)
        server._proc.kill()
        assert wait_until(lambda: r.errors == 1)
        assert not server.alive
    finally:
        server.shutdown()


DRIVER = textwrap.dedent(f"""
    import sys, time
    from streaming.observability.server import SnapshotServer
    s = SnapshotServer(lambda: b"x 1\\n", "127.0.0.1", 0, content_type={CT!r},
                       max_age=0.5)
    print(s.server_port, s._proc.pid, flush=True)
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of an exited child whose parent is gone is reaped by init; read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_the_serving_process_ends_with_its_driver(sig):
    """SIGKILL of the driver (a crash) or Ctrl-C to the group: the child goes too."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert driver.stdout is not None
        port, child = (int(x) for x in driver.stdout.readline().split())
        assert scrape(port)["x"] == 1
        if sig == signal.SIGINT:
            os.killpg(driver.pid, sig)  # what a terminal's Ctrl-C does
        else:
            driver.send_signal(sig)     # the driver alone
        driver.wait(10)
        assert wait_until(lambda: _gone(child)), "the serving process outlived its driver"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)
    err = driver.stderr.read() if driver.stderr else ""
    # the child never prints a traceback of its own (the driver's KeyboardInterrupt may)
    assert "streaming/observability/server.py" not in err, err
