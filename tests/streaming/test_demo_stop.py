"""Ctrl-C of ``streamsketch demo``, as a terminal sends it: SIGINT to the process group.

Found on the landed tree: four Python tracebacks (py4j, ``KeyboardInterrupt``) and
batches still printing after "stopping ...": Spark's JVM and pyspark's own SIGINT
handler took the signal under the running batch. Now: one stopping line, the running
batch commits, "stopped", exit 0, and nothing of the demo is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_of_the_demo_stops_it_cleanly(tmp_path):
    from streaming.kafka.broker import free_port

    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "demo", "--home",
                             str(tmp_path / "home"), "--port", str(free_port()), "--rate",
                             "2000"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while sum(ln.startswith("batch ") for ln in lines) < 2:
            assert proc.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "no batch within 240 s:\n" + "".join(lines)[-3000:]
            time.sleep(0.5)
        pid_file = tmp_path / "home" / "kafka" / "broker.pid"
        broker_pid = int(pid_file.read_text().split()[0])
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    text = "".join(lines)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "Py4J" not in text, text[-3000:]
    stopping = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("stopping")]
    assert len(stopping) == 1, text[-3000:]
    stopped = [i for i, ln in enumerate(lines) if ln.strip() == "stopped"]
    assert len(stopped) == 1 and stopped[0] > stopping[0], text[-3000:]
    assert not any(ln.startswith("batch ") for ln in lines[stopped[0]:]), text[-3000:]
    # the broker the demo started is stopped too
    from streaming.kafka.broker import _pid_alive

    gone = time.monotonic() + 30
    while _pid_alive(broker_pid) and time.monotonic() < gone:
        time.sleep(0.5)
    assert not _pid_alive(broker_pid), "the demo's broker is still running"
