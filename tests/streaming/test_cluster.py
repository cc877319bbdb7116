"""The job on a real Spark standalone cluster: a master and two workers on 127.0.0.1.

Both are started from pyspark's own distribution (``spark-class``), as a user would
start them on their machines. ``streamsketch run --master spark://...`` over a
two-partition topic must write the same tables as the same run in local mode, the
batch's one pass must run as one task per input partition, and every Parquet file of
the tables must have been written by a Python worker of an executor (the process its
footer names, seen running in a worker's executor folder), not by the driver.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVENTS = 6_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not open port {port} in {timeout} s")


@pytest.fixture
def standalone(tmp_path):
    """A Spark standalone master and two one-core workers; yields (master URL, UI port)."""
    from pyspark.find_spark_home import _find_spark_home

    from streaming.runtime.jvm import find_java

    find_java()
    spark_class = str(Path(_find_spark_home()) / "bin" / "spark-class")
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
               PYSPARK_PYTHON=sys.executable)
    port, ui = _free_port(), _free_port()
    procs = []
    logs = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        log = (tmp_path / f"{name}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen([spark_class, *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        master = start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(ui)], "master")
        _wait_port(port, master, "the Spark master")
        url = f"spark://127.0.0.1:{port}"
        for i in range(2):
            start(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                   "--cores", "1", "--memory", "1G", "--webui-port", str(_free_port()),
                   "--work-dir", str(tmp_path / f"work{i}")], f"worker{i}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json").read())
            except OSError:  # the master's UI opens a moment after its RPC port
                state = {"workers": []}
            if sum(w["state"] == "ALIVE" for w in state["workers"]) == 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("two workers did not register with the master")
        yield url, ui
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        for log in logs:
            log.close()


def _spec_file(root: Path, topic: str, bootstrap: str) -> Path:
    from streaming.spec.model import default_spec_path

    text = default_spec_path().read_text()
    text = text.replace('topic = "clickstream"', f'topic = "{topic}"')
    text = text.replace('bootstrap_servers = "127.0.0.1:9092"',
                        f'bootstrap_servers = "{bootstrap}"')
    text = text.replace('path = "./data/delta"', f'path = "{root / "delta"}"')
    text = text.replace('checkpoint = "./data/checkpoints"', f'checkpoint = "{root / "ck"}"')
    text = text.replace("port = 9108", "port = 9108\nenabled = false")
    path = root / "spec.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _executor_processes(work: list[Path], seen: dict[int, int], done: threading.Event) -> None:
    """Until ``done``: every process whose working directory is under a worker's folder
    (an executor and the Python workers it forks run in work/<app>/<executor>/), by pid,
    with the index of its worker."""
    roots = [str(w.resolve()) + os.sep for w in work]
    while not done.is_set():
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in seen:
                continue
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd") + os.sep
            except OSError:
                continue
            for i, root in enumerate(roots):
                if cwd.startswith(root):
                    seen[int(entry)] = i
        time.sleep(0.1)


def _run(spec: Path, master: str, work: list[Path] | None = None) -> tuple[str, dict[int, int]]:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=str(REPO))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    seen: dict[int, int] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_executor_processes, args=(work or [], seen, done),
                               daemon=True)
    watcher.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "streaming.cli", "run", "--spec",
                               str(spec), "--available-now", "--master", master], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
    finally:
        done.set()
        watcher.join(5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr, seen


def _writers(root: Path) -> dict[str, set[int]]:
    """Per table, the pids named as writer in the footers of all its Parquet files (live
    and replaced ones alike)."""
    import pyarrow.parquet as pq

    from streaming.engine.table_files import WRITER_KEY

    out: dict[str, set[int]] = {}
    for name in ("aggregates", "sketches", "quarantine"):
        for f in (root / "delta" / name).rglob("*.parquet"):
            writer = pq.read_metadata(f).metadata[WRITER_KEY].decode()
            out.setdefault(name, set()).add(int(writer.rsplit(":", 1)[1]))
    return out


def _content(root: Path) -> dict:
    """The tables without bookkeeping columns, in a canonical order."""
    from streaming.engine.tables import read_table

    out = {}
    for name, drop in (("aggregates", {"last_batch", "updated_at"}),
                       ("sketches", {"last_batch", "updated_at"}),
                       ("quarantine", {"batch_id", "quarantined_at"})):
        rows = read_table(str(root / "delta" / name)).to_pylist()
        out[name] = sorted(json.dumps({k: v for k, v in r.items() if k not in drop},
                                      sort_keys=True, default=repr) for r in rows)
    return out


def test_a_standalone_cluster_writes_what_local_mode_writes(kafka, topic_name, tmp_path,
                                                            standalone):
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    url, ui = standalone
    produce(kafka.bootstrap_servers, topic_name,
            GeneratorConfig(seed=5, rate=50.0, late=0.01, malformed=0.01, out_of_order=0.05),
            count=EVENTS, partitions=2)
    on_cluster, executors = _run(_spec_file(tmp_path / "cluster", topic_name,
                                            kafka.bootstrap_servers), url,
                                 [tmp_path / "work0", tmp_path / "work1"])
    _run(_spec_file(tmp_path / "local", topic_name, kafka.bootstrap_servers), "local[2]")
    batches = re.findall(r"batch \d+: (\d+) rows .*?, (\d+) tasks?;", on_cluster)
    assert batches, on_cluster[-2000:]
    assert sum(int(rows) for rows, _ in batches) == EVENTS
    # one pass per input partition: the first batch reads both partitions
    assert int(batches[0][1]) == 2, on_cluster[-2000:]
    state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json").read())
    apps = state["activeapps"] + state["completedapps"]
    assert any(a["name"] == "streamsketch" for a in apps), apps
    # the merge stage ran on the workers: every file of every table was written by a
    # process living in a worker's executor folder, and both workers took part
    writers = _writers(tmp_path / "cluster")
    assert set(writers) == {"aggregates", "sketches", "quarantine"}, writers
    assert executors, "no process ran in a worker's folder"
    for name, pids in writers.items():
        assert pids <= set(executors), (name, pids, executors)
    assert {executors[p] for pids in writers.values() for p in pids} == {0, 1}, (writers,
                                                                              executors)
    cluster_tables = _content(tmp_path / "cluster")
    assert cluster_tables == _content(tmp_path / "local")
    assert all(cluster_tables.values())
