"""The driver's CPU per batch, as the cells a batch touches grow tenfold.

    python -m benchmarks.bench_driver [--events 600000] [--users 5000] [--factor 20]

Two topics on the embedded broker hold the same number of clickstream events over the
same event times, one drawn from ``--users`` users (and as many pages) and the other
from ``--factor`` times as many (pages capped at 50,000), so that the second run's
(window, group) cells are about ten times the first's (the figure prints the ratio).
Over each, ``streamsketch run --available-now`` runs as shipped (the spec of
:mod:`benchmarks.bench_cardinality`: per user and per page, count, sum and HLL,
5-minute windows). Every batch line of ``run`` prints the CPU seconds the driver
process spent on it (``driver CPU``: all its threads; the executors' Python workers and
the JVM are other processes); the figure is their median per run, and the ratio of the
two medians. Every cell of both runs is checked against the generated events. Results
go to ``benchmarks/results/driver.json``; nothing here fails on a number.
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
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_cardinality import SPEC, START, check, truth
from benchmarks.bench_memory import run_measured

RESULTS = Path(__file__).parent / "results"
LINE = re.compile(r"^batch (\d+): (\d+) rows .*driver CPU ([\d.]+) s\)")


def batch_cpu(lines: list[str]) -> list[tuple[int, int, float]]:
    """(batch, rows, driver CPU seconds) of each batch line of ``run``'s output."""
    return [(int(m[1]), int(m[2]), float(m[3])) for m in map(LINE.match, lines) if m]


def main(argv: list[str] | None = None) -> int:
    from streaming.kafka.broker import LocalKafka, free_port
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--factor", type=int, default=20)
    ap.add_argument("--per-trigger", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=1_333.0,
                    help="events per second of event time (sets how many windows)")
    ap.add_argument("--out", type=Path, default=RESULTS / "driver.json")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ss-driver-"))
    broker = LocalKafka(tmp / "kafka", port=free_port())
    broker.start()
    result: dict[str, Any] = {"events": args.events, "per_trigger": args.per_trigger,
                              "factor": args.factor, "runs": [],
                              "machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "load_at_start": os.getloadavg()[0]}}
    try:
        bootstrap = broker.status().bootstrap_servers or broker.bootstrap_servers
        for users in (args.users, args.users * args.factor):
            topic = f"users-{users}"
            cfg = GeneratorConfig(seed=11, rate=args.rate, start_time=START, users=users,
                                  pages=min(users, 50_000))
            produce(bootstrap, topic, cfg, count=args.events, partitions=2)
            root = tmp / topic
            root.mkdir()
            spec = root / "spec.toml"
            spec.write_text(SPEC.format(topic=topic, bootstrap=bootstrap, root=root,
                                        per_trigger=args.per_trigger))
            r = run_measured([sys.executable, "-m", "streaming.cli", "run", "--spec",
                              str(spec), "--available-now"], dict(os.environ))
            if r["returncode"] != 0:
                raise SystemExit("streamsketch run failed:\n" + "\n".join(r["output_tail"]))
            batches = [b for b in batch_cpu(r["output_tail"]) if b[1] >= args.per_trigger // 2]
            if not batches:
                raise SystemExit("no full batch in run's output:\n" + "\n".join(r["output_tail"]))
            cells = check(root, truth(cfg, args.events))
            run = {"users": users, "seconds": r["seconds"],
                   "batches": [{"batch": b, "rows": n, "driver_cpu_s": c} for b, n, c in batches],
                   "median_driver_cpu_s": statistics.median(c for _, _, c in batches),
                   "cells": sum(v["cells"] for v in cells.values()),
                   "wrong": sum(v["wrong"] for v in cells.values()),
                   "peak_tree_rss_bytes": r["peak_tree_rss_bytes"]}
            result["runs"].append(run)
            print(f"{users:,} users: {run['cells']:,} cells ({run['wrong']} wrong), "
                  f"driver CPU per full batch median {run['median_driver_cpu_s']:.3f} s over "
                  f"{len(batches)} batches", flush=True)
        small, big = result["runs"]
        result["cells_ratio"] = big["cells"] / small["cells"]
        result["driver_cpu_ratio"] = big["median_driver_cpu_s"] / small["median_driver_cpu_s"]
        print(f"cells x{result['cells_ratio']:.1f}: driver CPU per batch "
              f"x{result['driver_cpu_ratio']:.2f}")
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_at_end"] = os.getloadavg()[0]
    result["created_utc"] = dt.datetime.now(dt.UTC).isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
