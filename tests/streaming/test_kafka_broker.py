"""The embedded broker: bad input fails fast (unit) and start/stop works for real (integration)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.errors import BrokerError
from streaming.kafka.broker import LocalKafka, broker_ready, free_port, port_in_use


def test_port_in_use_is_refused_before_any_jvm(tmp_path, monkeypatch):
    import streaming.runtime.jvm as jvm

    monkeypatch.setattr(jvm, "resolve", lambda *a, **k: pytest.fail("must not resolve jars"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port)
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            LocalKafka(tmp_path, port=port).start()


def test_status_of_a_fresh_home_is_stopped(tmp_path):
    st = LocalKafka(tmp_path / "k").status()
    assert not st.running and st.pid is None
    assert LocalKafka(tmp_path / "k").stop() is False


def test_stale_pid_file_is_not_running(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    home = tmp_path / "k"
    home.mkdir()
    (home / "broker.pid").write_text(proc.stdout)
    assert not LocalKafka(home).status().running


def test_nothing_listening_is_not_ready():
    assert broker_ready(f"127.0.0.1:{free_port()}", timeout=1.0) is False


@pytest.mark.integration
def test_cli_start_status_stop(tmp_path):
    port = free_port()
    cli = [sys.executable, "-m", "streaming.cli", "kafka"]
    common = ["--home", str(tmp_path), "--port", str(port)]
    started = subprocess.run(cli + ["start", *common], capture_output=True, text=True,
                             timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        status = subprocess.run(cli + ["status", "--json", *common], capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0 and '"running": true' in status.stdout
        assert broker_ready(f"127.0.0.1:{port}")
        again = subprocess.run(cli + ["start", *common], capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 2
        assert again.stderr.count("\n") == 1 and "already running" in again.stderr
        assert (tmp_path / "kafka" / "logs" / "server.log").stat().st_size > 0
    finally:
        stopped = subprocess.run(cli + ["stop", *common], capture_output=True, text=True,
                                 timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = subprocess.run(cli + ["status", *common], capture_output=True, text=True, timeout=30)
    assert status.returncode == 3 and "stopped" in status.stdout
    assert not port_in_use(port)


@pytest.mark.integration
def test_broker_that_never_becomes_ready_is_a_clear_error(tmp_path):
    broker = LocalKafka(tmp_path, port=free_port())
    with pytest.raises(BrokerError, match="did not become ready within"):
        broker.start(timeout=0.5)
    assert not broker.status().running


def test_a_relative_home_is_made_absolute(tmp_path, monkeypatch):
    # the broker process runs with its home as working directory: a relative config
    # path (the default home is ./.streamsketch) would point nowhere from there
    monkeypatch.chdir(tmp_path)
    broker = LocalKafka(Path(".streamsketch") / "kafka", port=free_port())
    assert broker.home == tmp_path / ".streamsketch" / "kafka"
