#!/usr/bin/env python
"""How long `streamsketch run --available-now` takes over an empty topic: start-up alone.

Run from the repository root::

    python -m benchmarks.bench_startup            # 3 rounds each way, local broker

Each round runs the command as shipped (the bundled spec pointed at an empty topic of a
local broker and at fresh folders, as ``bench_pipeline`` writes it) in a process of its
own, alternately with the driver's class archive (``streamsketch jars`` writes it; see
:func:`streaming.runtime.session.class_archive`) and without it
(``STREAMSKETCH_CLASS_ARCHIVE=0``), with ``--verbose``, and takes its phases from the
lines that prints (``phase: WHAT: S s (at T s)``): the tables ready (JVM and Spark
session up, checkpoint and tables checked), the first batch committed (the query
started, the batch's offsets planned, the batch run: over no offsets it runs no Spark
job), and exit. Results go to ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
DEFAULT_OUT = _HERE / "results" / "startup.json"


#: a line of `run --verbose`: "phase: WHAT: 1.23 s (at 4.56 s)"
_PHASE = re.compile(r"^phase: (.*): ([0-9.]+) s \(at ([0-9.]+) s\)$")


def one_run(spec: Path, archive: bool) -> dict[str, Any]:
    """One `run --available-now --verbose`: its phases as it prints them (seconds each),
    and the times after the process started that the tables were ready, the first batch
    committed and the process exited."""
    shutil.rmtree(spec.parent / "delta", ignore_errors=True)
    shutil.rmtree(spec.parent / "ck", ignore_errors=True)
    env = dict(os.environ, STREAMSKETCH_CLASS_ARCHIVE="1" if archive else "0")
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec", str(spec),
                             "--available-now", "--verbose"], cwd=_REPO_ROOT, env=env,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    phases: dict[str, float] = {}
    marks: dict[str, float] = {}
    last_at = 0.0
    assert proc.stderr is not None
    for line in proc.stderr:
        m = _PHASE.match(line.strip())
        if m is None:
            continue
        name = re.sub(r" \(\d+ rows\)$", "", m.group(1))
        phases[name] = float(m.group(2))
        last_at = float(m.group(3))
        if name.startswith("checkpoint and tables"):
            marks["tables_ready"] = float(m.group(3))
        elif name.startswith("first batch ran"):
            marks["first_batch"] = float(m.group(3))
    code = proc.wait()
    marks["exit"] = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"run exited with {code}")
    if set(marks) != {"tables_ready", "first_batch", "exit"}:
        raise RuntimeError(f"run --verbose printed no phase lines for {set(marks) ^ {'exit'}}")
    phases["process exit"] = marks["exit"] - last_at  # after the last phase line
    return {"archive": archive, **{k: round(v, 3) for k, v in marks.items()},
            "phases": {k: round(v, 3) for k, v in phases.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    from kafka.admin import KafkaAdminClient, NewTopic

    from benchmarks.bench_pipeline import spec_file
    from streaming.kafka.broker import LocalKafka, free_port
    from streaming.runtime import jvm
    from streaming.runtime.session import class_archive, write_class_archive

    archive = write_class_archive() or class_archive(list(jvm.resolve("spark").jars))
    home = Path(tempfile.mkdtemp(prefix="streamsketch-bench-startup-"))
    broker = LocalKafka(home / "kafka", port=free_port(), heap="512m")
    broker.start(timeout=120)
    report: dict[str, Any] = {
        "benchmark": "startup", "created_utc": dt.datetime.now(dt.UTC).isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "class_archive_bytes": archive.stat().st_size if archive.exists() else None}
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic("empty", 2, 1)])
        admin.close()
        spec = spec_file("empty", broker.bootstrap_servers, home / "job", 200_000)
        runs = []
        for i in range(args.rounds):
            for with_archive in (True, False):
                runs.append(one_run(spec, with_archive))
                print(f"round {i + 1}: {runs[-1]}", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)
    report["runs"] = runs
    report["median"] = {
        "with_archive" if flag else "without_archive": {
            k: statistics.median(r[k] for r in runs if r["archive"] == flag)
            for k in ("tables_ready", "first_batch", "exit")} for flag in (True, False)}
    with_archive = [r["phases"] for r in runs if r["archive"]]
    report["median_phases_with_archive"] = {
        name: statistics.median(p[name] for p in with_archive if name in p)
        for name in with_archive[0]}
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["median"], indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
