#!/usr/bin/env python
"""Memory and event time of a year-long recorded log, through backfill and through Kafka.

    python -m benchmarks.bench_memory [--events 337000] [--modes backfill,kafka]

The log: ``--events`` flight-like events spread over a year in event-time order
(``carrier`` takes 16 values, ``tailnum`` ~5,000, ``dest`` ~300), one JSON line
each. The spec: hourly windows by carrier, ``count``/``sum``/``max`` of distance, an
HLL p14 of tail numbers, a Count-Min (epsilon 0.001, delta 0.01, top 20) of
destinations and a Bloom filter (100k at 1 %) of tail numbers, a 2-hour watermark,
200,000 records per batch.

* ``backfill``: ``streamsketch replay LOG --spec S --backfill`` in a child process;
* ``kafka``: the log replayed into a 3-partition topic keyed by carrier (each
  partition in event-time order, densities differing over time), then
  ``streamsketch run --spec S --available-now`` in a child process.

For each: wall seconds, the peak resident memory of the whole process tree (the
child, its JVM and Python workers; sampled every 50 ms from /proc): the peak of the
summed RSS (the target's measure), each part's own peak, and the peak of the summed
PSS (shared pages counted once: what the tree really holds), the records
quarantined as late (none is late in the log), and whether every (hour x carrier)
count equals the log's own, computed here independently. Results go to
``benchmarks/results/memory.json``; nothing fails on a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
RESULTS = _HERE / "results"

SPEC = """
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = 200000

[events]
time_field = "ts"
watermark = "2 hours"
[events.fields]
carrier = "string"
tailnum = "string"
dest = "string"
distance = "double"

[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["carrier"]
metrics = ["count", "sum(distance)", "max(distance)"]

  [[windows.sketches]]
  name = "tails"
  kind = "hll"
  field = "tailnum"
  precision = 14

  [[windows.sketches]]
  name = "dests"
  kind = "cms"
  field = "dest"
  epsilon = 0.001
  delta = 0.01
  top_k = 20

  [[windows.sketches]]
  name = "seen_tails"
  kind = "bloom"
  field = "tailnum"
  capacity = 100000
  error_rate = 0.01

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
enabled = false
"""


def make_log(path: Path, events: int, seed: int) -> Counter:
    """The log, and its own count per (hour start in s, carrier)."""
    rng = np.random.default_rng(seed)
    start = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp())
    # density that shifts over the year: more flights in summer
    t = np.sort(start + (rng.beta(2.0, 2.0, events) * 365 * 86400).astype(np.int64))
    carriers = [f"C{i:02d}" for i in range(16)]
    carrier = rng.choice(16, events, p=np.arange(16, 0, -1) / 136)
    tail = rng.integers(0, 5000, events)
    dest = rng.zipf(1.5, events) % 300
    dist = np.round(rng.lognormal(6.5, 0.6, events), 1)
    truth: Counter = Counter()
    with path.open("w") as fh:
        for i in range(events):
            ts = dt.datetime.fromtimestamp(int(t[i]), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            c = carriers[carrier[i]]
            fh.write(json.dumps({"ts": ts, "carrier": c, "tailnum": f"N{tail[i]:04d}",
                                 "dest": f"D{dest[i]:03d}", "distance": float(dist[i])})
                     + "\n")
            truth[(int(t[i]) - int(t[i]) % 3600, c)] += 1
    return truth


def _role(pid: int) -> str:
    """Which part of the run a process is: the JVM, a Spark Python worker or the driver."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ")
    except OSError:
        return "driver"
    if b"java" in cmd.split(b" ", 1)[0]:
        return "jvm"
    if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
        return "python_workers"
    return "driver"


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
        out.append(p)
    return out


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(key)), None)
    except OSError:
        return None


def _pss(pids: list[int]) -> int:
    """The summed proportional set size of ``pids`` (PSS: a page shared by n processes
    counts 1/n in each, so the sum is what the tree really holds; RSS counts shared
    pages in every process)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next((int(line.split()[1]) * 1024 for line in fh
                               if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return total


#: seconds between two samples of the tree's RSS, and between two walks of its processes
SAMPLE_S, WALK_S = 0.05, 0.5


def run_measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``, sampling its process tree's resident memory.

    RSS comes from each process's ``status`` (cheap) every 50 ms. PSS needs
    ``smaps_rollup``, which walks a process's page tables under its memory map's lock:
    read for the whole tree every 50 ms it cost the run it measured 5-24 % of its time
    (the bundled spec's shipped run, 3 pairs). So PSS is read only when the tree's RSS
    reaches a new high: the peak PSS is the PSS at the RSS peaks.
    """
    peak_rss, peak_pss = 0, 0
    peak_by_role: dict[str, int] = {}
    proc = subprocess.Popen(cmd, cwd=_REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        pids: list[int] = []
        roles: dict[int, str] = {}
        walked = 0.0
        while proc.poll() is None:
            if time.monotonic() - walked > WALK_S:
                pids, walked = _tree_pids(proc.pid), time.monotonic()
                roles = {p: roles.get(p) or _role(p) for p in pids}
            now: dict[str, int] = {}
            for p in pids:
                kb = _status_kb(p, "VmRSS:")
                if kb is not None:
                    now[roles[p]] = now.get(roles[p], 0) + kb * 1024
            if sum(now.values()) > peak_rss:
                peak_rss = sum(now.values())
                peak_pss = max(peak_pss, _pss(pids))
            for role, rss in now.items():
                peak_by_role[role] = max(peak_by_role.get(role, 0), rss)
            time.sleep(SAMPLE_S)

    th = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    th.start()
    out, _ = proc.communicate()
    wall = time.monotonic() - t0
    ended = time.time()
    th.join(1)
    # the run's temporary folders are this machine's, not part of the result
    tmp = re.compile(re.escape(tempfile.gettempdir()) + r"/[^\s,()]*")
    out = tmp.sub("<tmp>", out)
    return {"returncode": proc.returncode, "seconds": wall, "ended_at": ended,
            "batch_seconds": batch_seconds(out),
            "peak_tree_rss_bytes": peak_rss,
            "peak_tree_pss_bytes": peak_pss,
            "peak_rss_bytes_by_role": peak_by_role, "output_tail": out.splitlines()[-40:]}


def batch_seconds(output: str) -> float | None:
    """The seconds the batches themselves took (start-up and the last compaction left
    out), as ``run`` prints them per batch, or a backfill for all of its batches."""
    whole = re.findall(r"records in \d+ batch(?:es)?, ([\d.]+) s", output)
    if whole:
        return float(whole[-1])
    each = re.findall(r"^batch \d+: .* in ([\d.]+) s \(", output, re.MULTILINE)
    return sum(map(float, each)) if each else None


def check(root: Path, truth: Counter) -> dict[str, Any]:
    from streaming.engine.tables import read_table
    from streaming.engine.window_state import epoch_us

    rows = read_table(str(root / "delta" / "aggregates")).to_pylist()
    got = {(epoch_us(r["window_start"]) // 1_000_000, json.loads(r["group_key"])[0]): r["count"]
           for r in rows}
    late = read_table(str(root / "delta" / "quarantine"), "reason_code = 'late'").num_rows
    wrong = sum(1 for k in set(got) | set(truth) if got.get(k) != truth.get(k))
    groups = {c for _, c in truth}
    totals_wrong = sum(1 for c in groups
                       if sum(v for (_, cc), v in got.items() if cc == c)
                       != sum(v for (_, cc), v in truth.items() if cc == c))
    return {"late_quarantined": late, "cells": len(truth), "cells_wrong": wrong,
            "groups_with_wrong_total": totals_wrong}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=337_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--modes", default="backfill,kafka")
    ap.add_argument("--driver-memory", help="run --driver-memory for the kafka mode "
                    "(default: the CLI's)")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="streamsketch-bench-memory-"))
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    cli = [sys.executable, "-m", "streaming.cli"]
    report: dict[str, Any] = {"benchmark": "memory", "events": args.events,
                              "created_utc": dt.datetime.now(dt.UTC).isoformat(),
                              "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                              "rows": []}
    broker = None
    try:
        log = work / "year.jsonl"
        truth = make_log(log, args.events, args.seed)
        print(f"log: {args.events:,} events over a year, {len(truth):,} (hour x carrier) cells",
              flush=True)
        for mode in args.modes.split(","):
            root = work / mode
            root.mkdir()
            bootstrap, topic = "127.0.0.1:9", "year"
            if mode == "kafka":
                from streaming.kafka.broker import LocalKafka, free_port

                if broker is None:
                    broker = LocalKafka(work / "kafka", port=free_port())
                    broker.start()
                bootstrap = broker.bootstrap_servers
                subprocess.run([*cli, "replay", str(log), "--topic", topic, "--partitions", "3",
                                "--key-field", "carrier", "--bootstrap-servers", bootstrap,
                                "--quiet"], cwd=_REPO, env=env, check=True)
            spec = root / "spec.toml"
            spec.write_text(SPEC.format(topic=topic, bootstrap=bootstrap, root=root))
            if mode == "backfill":
                cmd = [*cli, "replay", str(log), "--spec", str(spec), "--backfill", "--quiet"]
            else:
                cmd = [*cli, "run", "--spec", str(spec), "--available-now",
                       *([f"--driver-memory={args.driver_memory}"] if args.driver_memory else [])]
            row = {"mode": mode, **run_measured(cmd, env)}
            row.update(check(root, truth))
            row["events_per_s"] = args.events / row["seconds"]
            if row["batch_seconds"]:
                row["events_per_s_batches"] = args.events / row["batch_seconds"]
            report["rows"].append(row)
            roles = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in
                              sorted(row["peak_rss_bytes_by_role"].items()))
            print(f"{mode:9} {row['seconds']:7.1f} s  {row['events_per_s']:>9,.0f} events/s  "
                  f"peak tree RSS {row['peak_tree_rss_bytes'] / 2**30:5.2f} GiB (target <= 2; "
                  f"PSS {row['peak_tree_pss_bytes'] / 2**30:.2f} GiB; "
                  f"peaks by part: {roles})  late {row['late_quarantined']:,}  "
                  f"wrong cells {row['cells_wrong']:,}  rc {row['returncode']}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
