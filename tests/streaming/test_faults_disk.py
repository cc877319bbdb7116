"""Disk, log, signal and worker faults against exact ground truth: real Kafka, Spark, Delta.

One topic of generated records (valid ones and malformed ones, none late: the
watermark is a day) is read by every test; the truth is computed from the records
and the (partition, offset) the broker acknowledged for each, never from the
pipeline's output: per minute window the count, the exact sum of ``amount`` and
the Count-Min counters of ``page`` over the valid records, and the positions of the
malformed ones, each in ``quarantine`` once.

* Disk full in a Delta write: the tables live on a small tmpfs that is filled while
  a batch is held between two of its writes. The run fails (exit 1, the last line
  names "No space left on device"), the batch's earlier write stays, the later one is
  absent; with space again a restart is exact.
* A damaged ``_delta_log`` (the newest commit of a table emptied, cut short or
  garbled): the run refuses in one line naming the table and the commit (exit 2),
  and no file of the tables or the checkpoint changes.
* SIGTERM to the driver, or to its whole process group, while a batch is held
  between two writes: the batch completes, the job stops with exit 143 and a line
  saying so, no JVM is left behind, and a restart is exact.
* A Spark Python worker SIGKILLed in the middle of a batch, on its task's first
  attempt: with the default master (local mode with task retries) the task runs
  again and the result is exact.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

integration = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_EVENTS = 1_200
PER_TRIGGER = 200          # 6 batches, 100 records of each of the 2 partitions apiece
LAST_BATCH = N_EVENTS // PER_TRIGGER - 1
START = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
RUN_TIMEOUT_S = 420

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = {per_trigger}

[events]
time_field = "ts"
watermark = "1 day"
[events.fields]
user_id = "string"
page = "string"
amount = "double"

[[windows]]
name = "minutely"
size = "1 minute"
metrics = ["count", "sum(amount)"]

  [[windows.sketches]]
  name = "pages"
  kind = "cms"
  field = "page"
  epsilon = 0.01
  delta = 0.01
  top_k = 5

[sink]
path = "{sink}"
checkpoint = "{root}/ck"
trigger = "1 second"

[metrics]
enabled = false
"""


def write_spec(root: Path, source: dict, sink: Path | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(SPEC.format(topic=source["topic"], bootstrap=source["bootstrap"],
                                per_trigger=PER_TRIGGER, sink=sink or root / "delta",
                                root=root))
    return path


def load(spec_file: Path, source: dict):
    from dataclasses import replace

    from streaming.spec.model import load_spec

    spec = load_spec(spec_file)  # KAFKA_BOOTSTRAP_SERVERS may override; the test's broker wins
    return replace(spec, source=replace(spec.source, bootstrap_servers=source["bootstrap"]))


# -- the topic and its truth -------------------------------------------------------------
def truth(records, positions) -> dict:
    """Exact expectations from the generated records and their acknowledged positions."""
    windows: dict[dt.datetime, dict] = {}
    bad: set[tuple[int, int]] = set()
    for r, pos in zip(records, positions, strict=True):
        if r.kind != "valid":
            bad.add(pos)
            continue
        ts = dt.datetime.fromisoformat(r.event["ts"])
        start = ts.replace(second=0, microsecond=0)
        w = windows.setdefault(start, {"count": 0, "amounts": [], "pages": []})
        w["count"] += 1
        if r.event["amount"] is not None:
            w["amounts"].append(Decimal(repr(r.event["amount"])))
        w["pages"].append(r.event["page"])
    return {"windows": windows, "bad": bad}


@pytest.fixture(scope="module")
def source(kafka):
    """One topic of known records over 2 partitions, and its truth."""
    from test_faults_kafka import create_topic, send

    from streaming.kafka.generator import GeneratorConfig, generate

    topic = f"disk-faults-{os.getpid()}"
    records = list(generate(GeneratorConfig(seed=18, rate=4.0, start_time=START, users=400,
                                            pages=60, malformed=0.04), N_EVENTS))
    assert {r.kind for r in records} - {"valid"}, "no malformed record generated"
    create_topic(kafka.bootstrap_servers, topic, 2)
    positions = send(kafka.bootstrap_servers, topic,
                     [(r.key, r.value, i % 2) for i, r in enumerate(records)])
    return {"topic": topic, "bootstrap": kafka.bootstrap_servers,
            "truth": truth(records, positions)}


def assert_exact(spec, expected: dict) -> None:
    """Every record counted once: aggregates, Count-Min counters and quarantine vs truth."""
    import sketches
    from streaming.engine.tables import read_table

    windows = expected["windows"]
    got: dict = {}
    for r in read_table(f"{spec.sink.path}/aggregates").to_pylist():
        assert r["window_start"] not in got, f"window {r['window_start']} stored twice"
        got[r["window_start"]] = (r["count"], r["sum_amount"])
    assert got == {start: (w["count"], sum(w["amounts"]) if w["amounts"] else None)
                   for start, w in windows.items()}
    sketch = spec.window("minutely").sketches[0]
    rows = read_table(f"{spec.sink.path}/sketches").to_pylist()
    assert sorted(r["window_start"] for r in rows) == sorted(windows)
    for r in rows:
        stored = sketches.from_bytes(bytes(r["bytes"]))
        built = sketch.new().update(windows[r["window_start"]]["pages"])
        assert np.array_equal(stored.counters, built.counters), r["window_start"]
        assert stored.total == windows[r["window_start"]]["count"]
    q = read_table(f"{spec.sink.path}/quarantine").to_pylist()
    positions = [(r["partition"], r["offset"]) for r in q]
    assert len(positions) == len(set(positions)), "a record was quarantined twice"
    assert set(positions) == expected["bad"]


# -- processes ---------------------------------------------------------------------------
FAULT_ENV = ("STREAMSKETCH_CRASH_AT", "STREAMSKETCH_CRASH_DELAY_MS", "STREAMSKETCH_PAUSE_AT",
             "STREAMSKETCH_PAUSE_S", "STREAMSKETCH_PAUSE_RESUME", "STREAMSKETCH_KILL_WORKER",
             "STREAMSKETCH_KILL_WORKER_MARKER")


class Cli:
    """``streamsketch run --available-now`` in its own process group; stderr read live."""

    def __init__(self, spec_file: Path, env: dict[str, str], *, master: str | None = None):
        argv = [sys.executable, "-m", "streaming.cli", "run", "--spec", str(spec_file),
                "--available-now"]
        if master is not None:
            argv += ["--master", master]
        base = {k: v for k, v in os.environ.items()
                if k != "KAFKA_BOOTSTRAP_SERVERS" and k not in FAULT_ENV}
        self.proc = subprocess.Popen(argv, cwd=REPO, env={**base, **env},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = RUN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, ln) for ln in self.lines):
                return
            if self.proc.poll() is not None:
                self._reader.join(10)
                if any(re.search(pattern, ln) for ln in self.lines):
                    return
                pytest.fail(f"the run ended (exit {self.proc.returncode}) before a line "
                            f"matching {pattern!r}: {self.tail()}")
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s: {self.tail()}")

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run did not end within {timeout:.0f} s: {self.tail()}")
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def last_line(self) -> str:
        """The last line of our own (the JVM may log after it, from its own threads)."""
        return next((ln for ln in reversed(self.lines) if ln.startswith("streamsketch:")), "")

    def batches(self) -> list[int]:
        return [int(m.group(1)) for ln in self.lines if (m := re.match(r"batch (\d+): ", ln))]


def run_here(spark, spec_file: Path, capsys) -> tuple[int, str]:
    """``streamsketch run --available-now`` in this process, on the tests' Spark session."""
    from streaming.cli import main

    kept = spark.conf.get("spark.sql.shuffle.partitions")
    earlier = capsys.readouterr()
    try:
        rc = main(["run", "--spec", str(spec_file), "--available-now"])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", kept)
    err = capsys.readouterr().err
    with capsys.disabled():  # what the test printed before, for the log of the run
        sys.stdout.write(earlier.out)
    return rc, err


def restart_is_exact(spark, spec_file: Path, source: dict, capsys) -> None:
    rc, err = run_here(spark, spec_file, capsys)
    assert rc == 0, err[-3000:]
    assert_exact(load(spec_file, source), source["truth"])


def max_batch(path: Path, column: str) -> int | None:
    from streaming.engine.tables import read_table

    values = [r[column] for r in read_table(str(path)).select([column]).to_pylist()]
    return max(values, default=None)


# -- 1. disk full during a Delta write ---------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (a real filesystem that fills up), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the disk-full test has no other honest "
                    "way to fill a disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk-full test "
                    "needs one")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the filesystem refuses with ENOSPC."""
    ballast = disk / "ballast"
    chunk = b"\xa5" * (1 << 16)
    with ballast.open("wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    assert shutil.disk_usage(disk).free < (1 << 16)
    return ballast


@integration
@pytest.mark.slow  # a CLI run (its own JVM) and a restart: about a minute
@pytest.mark.parametrize(("held_at", "failing", "written"), [
    ("after_quarantine@2", "aggregates", "quarantine"),
    ("after_aggregates@2", "sketches", "aggregates"),
])
def test_disk_full_in_a_delta_write_fails_loudly_and_a_restart_is_exact(
        spark, source, tmp_path, small_disk, capsys, held_at, failing, written):
    root = tmp_path / "job"
    spec_file = write_spec(root, source, sink=small_disk / "delta")
    resume = tmp_path / "resume"
    run = Cli(spec_file, {"STREAMSKETCH_PAUSE_AT": held_at, "STREAMSKETCH_PAUSE_S": "120",
                          "STREAMSKETCH_PAUSE_RESUME": str(resume)})
    try:
        run.wait_for(r"fault: pausing at ")
        ballast = fill(small_disk)
        resume.touch()
        rc = run.finish()
    finally:
        run.kill()
    print(f"\ndisk full at {held_at}: exit {rc}: {run.last_line()[:300]}")
    assert rc == 1, run.tail()
    failure = [ln for ln in run.lines if ln.startswith("streamsketch:")
               and "fault:" not in ln]
    assert len(failure) == 1 and failure[0] == run.last_line(), run.tail()
    assert run.lines.index(failure[0]) >= len(run.lines) - 3, run.tail()  # at the end
    assert failure[0].startswith("streamsketch: the query failed: ")
    assert "No space left on device" in failure[0]
    assert run.batches() == [0, 1], run.tail()
    # the batch's write before the disk filled is in; the failing one left nothing
    paths = {"quarantine": ("quarantine", "batch_id"), "aggregates": ("aggregates", "last_batch"),
             "sketches": ("sketches", "last_batch")}
    table, column = paths[written]
    assert max_batch(small_disk / "delta" / table, column) == 2
    table, column = paths[failing]
    assert max_batch(small_disk / "delta" / table, column) == 1
    ballast.unlink()
    restart_is_exact(spark, spec_file, source, capsys)


# -- 2. a damaged _delta_log ---------------------------------------------------------------
def _newest_commit(table: Path) -> Path:
    return max((table / "_delta_log").glob("*.json"))


DAMAGE = {
    "emptied": lambda data: b"",
    "cut short": lambda data: data[: len(data) // 2],
    "garbled": lambda data: data[:30] + b"\x00\xff#garbage#" + data[42:],
}


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` (tables and checkpoint) with its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_job(spark, source, tmp_path_factory):
    """A job that consumed the whole topic: tables and checkpoint to copy and damage."""
    from streaming.engine.pipeline import Pipeline

    root = tmp_path_factory.mktemp("finished")
    spec_file = write_spec(root, source)
    spec = load(spec_file, source)
    Pipeline(spark, spec).run(available_now=True, timeout=RUN_TIMEOUT_S)
    assert_exact(spec, source["truth"])
    return root


@integration
@pytest.mark.parametrize(("table", "how"), [("aggregates", "emptied"),
                                            ("sketches", "cut short"),
                                            ("quarantine", "garbled"),
                                            ("aggregates", "garbled")])
def test_damaged_delta_log_fails_loudly_and_changes_nothing(
        spark, source, finished_job, tmp_path, capsys, table, how):
    root = tmp_path / "job"
    shutil.copytree(finished_job, root)
    spec_file = write_spec(root, source)
    newest = _newest_commit(root / "delta" / table)
    newest.write_bytes(DAMAGE[how](newest.read_bytes()))
    before = _fingerprint(root)
    rc, err = run_here(spark, spec_file, capsys)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    print(f"\n{table} {how}: exit {rc}: {last}")
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    version = int(newest.stem)
    assert re.fullmatch(rf"streamsketch: error: table {re.escape(str(root / 'delta' / table))} "
                        rf"is damaged: commit {version} of its _delta_log \({newest.name}\) "
                        r"(is empty|is not valid JSON .*); .*start fresh", last), last
    # nothing recreated, nothing written, no batch planned
    assert _fingerprint(root) == before


def test_check_log_refuses_what_delta_rs_would_read_silently(tmp_path):
    """Without a JVM: an emptied commit, anywhere after the newest Delta checkpoint, and a gap.

    delta-rs reads an empty commit as one without actions: the rows it added vanish
    and the files it removed come back (so rows show twice).
    """
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from streaming.engine.tables import check_log
    from streaming.errors import CheckpointError

    path = tmp_path / "t"
    write_deltalake(str(path), pa.table({"x": [1, 2]}))
    write_deltalake(str(path), pa.table({"x": [3]}), mode="overwrite")
    write_deltalake(str(path), pa.table({"x": [4]}), mode="append")
    check_log(str(path))
    log = path / "_delta_log"
    keep = {p.name: p.read_bytes() for p in log.iterdir()}

    def damaged(name: str, data: bytes | None) -> str:
        for n, d in keep.items():
            (log / n).write_bytes(d)
        if data is None:
            (log / name).unlink()
        else:
            (log / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            check_log(str(path))
        return str(info.value)

    commit = "{:020d}.json".format
    # what reading it would give: the overwrite (version 1) undone, rows 1 and 2 back
    (log / commit(1)).write_bytes(b"")
    assert sorted(DeltaTable(str(path)).to_pyarrow_table()["x"].to_pylist()) == [1, 2, 4]
    assert "commit 1 of its _delta_log (00000000000000000001.json) is empty" in damaged(
        commit(1), b"")
    assert "commit 2 " in damaged(commit(2), b"\n")
    assert "commit 2 " in damaged(commit(2), keep[commit(2)][:-20])
    assert "commit 1 of its _delta_log (00000000000000000001.json) is missing" in damaged(
        commit(1), None)
    # a commit before the newest Delta checkpoint is not read any more: not checked
    for n, d in keep.items():
        (log / n).write_bytes(d)
    DeltaTable(str(path)).create_checkpoint()
    (log / commit(1)).write_bytes(b"")
    check_log(str(path))
    assert sorted(DeltaTable(str(path)).to_pyarrow_table()["x"].to_pylist()) == [3, 4]


# -- 3. SIGTERM in the middle of a batch ------------------------------------------------------
def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@integration
@pytest.mark.slow  # a CLI run (its own JVM) and a restart
@pytest.mark.parametrize("to, sig", [("driver", signal.SIGTERM),
                                     ("process group", signal.SIGTERM),
                                     ("process group", signal.SIGINT)],
                         ids=["sigterm-driver", "sigterm-group", "ctrl-c-group"])
def test_sigterm_mid_batch_stops_cleanly_and_a_restart_is_exact(spark, source, tmp_path,
                                                                capsys, to, sig):
    """SIGTERM (a supervisor) or Ctrl-C (a terminal: SIGINT to the process group)."""
    name = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    root = tmp_path / "job"
    spec_file = write_spec(root, source)
    resume = tmp_path / "resume"
    run = Cli(spec_file, {"STREAMSKETCH_PAUSE_AT": "after_aggregates@2",
                          "STREAMSKETCH_PAUSE_S": "120",
                          "STREAMSKETCH_PAUSE_RESUME": str(resume)})
    try:
        run.wait_for(r"fault: pausing at after_aggregates@2")
        began = time.monotonic()
        if to == "driver":
            os.kill(run.proc.pid, sig)
        else:
            os.killpg(run.proc.pid, sig)
        run.wait_for(rf"^streamsketch: {name}: stopping once the running batch has committed",
                     timeout=30)
        # the batch, held between its aggregates and sketches writes, goes on
        resume.touch()
        rc = run.finish(timeout=120)
        took = time.monotonic() - began
    finally:
        run.kill()
    print(f"\n{name} to the {to}: exit {rc} {took:.1f} s after the signal: {run.last_line()}")
    assert rc == 128 + sig, run.tail()
    assert "Traceback" not in "\n".join(run.lines), run.tail()
    assert re.fullmatch(rf"streamsketch: stopped on {name} \(batch (\d+) committed by this "
                        r"run\); a restart resumes from the checkpoint", run.last_line()), \
        run.tail()
    done = run.batches()
    assert done[:3] == [0, 1, 2] and max(done) < LAST_BATCH, done  # stopped before the end
    # the held batch completed: its sketches are written too
    assert max_batch(root / "delta" / "sketches", "last_batch") == max(done)
    assert _group_gone(run.proc.pid, 30), "processes of the stopped run are left behind"
    restart_is_exact(spark, spec_file, source, capsys)


# -- 4. a Python worker killed in the middle of a batch ------------------------------------
@integration
@pytest.mark.slow  # a CLI run with its own JVM
def test_python_worker_killed_mid_batch_is_retried_and_exact(source, tmp_path):
    root = tmp_path / "job"
    spec_file = write_spec(root, source)
    marker = tmp_path / "worker-killed"
    # offset 250 of either partition is read by batch 2 (100 records of each per batch)
    run = Cli(spec_file, {"STREAMSKETCH_KILL_WORKER": "250",
                          "STREAMSKETCH_KILL_WORKER_MARKER": str(marker)})  # default master
    try:
        rc = run.finish()
    finally:
        run.kill()
    assert marker.exists(), "no Python worker was killed"
    print(f"\nworker killed ({marker.read_text().strip()}): exit {rc}")
    assert rc == 0, run.tail()
    text = "\n".join(run.lines)
    assert re.search(r"Lost task .*Python worker exited unexpectedly", text), run.tail()
    assert run.batches() == list(range(LAST_BATCH + 1))
    assert_exact(load(spec_file, source), source["truth"])


def test_local_masters_retry_failed_tasks():
    from streaming.runtime.session import (
        LOCAL_TASK_ATTEMPTS,
        SparkOptions,
        local_master,
        spark_conf,
    )

    attempts = LOCAL_TASK_ATTEMPTS
    assert attempts > 1
    assert local_master("local") == f"local[1,{attempts}]"
    assert local_master("local[2]") == f"local[2,{attempts}]"
    assert local_master("local[*]") == f"local[*,{attempts}]"
    # a master that names its retries, and every cluster master, as given
    for given in ("local[2,1]", "local[*,3]", "spark://h:7077", "local-cluster[2,1,1024]",
                  "yarn"):
        assert local_master(given) == given
    assert spark_conf(SparkOptions(), [])["spark.master"] == f"local[*,{attempts}]"


# -- helpers of this file -----------------------------------------------------------------
def test_truth_counts_every_record_once():
    from streaming.kafka.generator import Record

    records = [Record(b"k", json.dumps({"ts": "2026-11-24T09:00:30Z", "page": "/a",
                                        "amount": 1.5}).encode(), "valid",
                      {"ts": "2026-11-24T09:00:30Z", "page": "/a", "amount": 1.5}),
               Record(b"k", b"{", "malformed:invalid_json", None),
               Record(b"k", b"x", "valid", {"ts": "2026-11-24T09:01:00Z", "page": "/b",
                                            "amount": None})]
    t = truth(records, [(0, 0), (1, 0), (0, 1)])
    m0, m1 = (dt.datetime(2026, 11, 24, 9, i, tzinfo=dt.UTC) for i in (0, 1))
    assert t["bad"] == {(1, 0)}
    assert {k: (w["count"], w["amounts"], w["pages"]) for k, w in t["windows"].items()} == {
        m0: (1, [Decimal("1.5")], ["/a"]), m1: (1, [], ["/b"])}
