"""High-cardinality group-by: ``streamsketch run`` against the same job written plainly in Spark.

    python -m benchmarks.bench_cardinality [--events 1000000] [--users 1000000]
        [--pages 50000] [--per-trigger 200000] [--skip plain]

One topic on the embedded broker holds ``--events`` clickstream events whose event
times span a few 5-minute windows, from ``--users`` users and ``--pages`` pages, so a
window holds hundreds of thousands of (window, user) cells. Over it, in the same run:

1. **ours**: ``streamsketch run --spec S --available-now`` as shipped (a child process,
   its defaults), with two windows: per user (count, sum(amount), HLL of pages) and per
   page (count, sum(amount), HLL of users), 5 minutes each;
2. **plain Spark**: the same job the way it is usually written — ``from_json`` ->
   ``withWatermark`` -> ``groupBy(window, key).agg(count, sum, approx_count_distinct)``
   -> a delta-spark sink, two queries, the same trigger bound
   (:mod:`benchmarks.plain_spark_job`, a child process);
3. **state store**: the other design engine v3 could have taken, Spark's own state per
   (window, group) with ``applyInPandasWithState`` and our HyperLogLog, to the ``noop``
   sink (:mod:`benchmarks.statestore_job`; left out unless ``--skip`` is given without
   ``state``: at ~1 ms a group it wants a smaller ``--events``).

Each is timed from process start to exit, with the peak resident memory of its whole
process tree (JVM, Python workers). Every (window, user) and (window, page) count of
ours is checked against the generated events. Figures are printed and written to
``benchmarks/results/cardinality.json``; nothing here fails on a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.bench_memory import run_measured

RESULTS = Path(__file__).parent / "results"
START = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
WINDOW_S = 300

SPEC = """
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = {per_trigger}

[events]
time_field = "ts"
time_format = "iso8601"
watermark = "2 minutes"
[events.fields]
user_id = "string"
session_id = "string"
page = "string"
action = "string"
amount = "double"
country = "string"
device = "string"

[[windows]]
name = "by_user"
size = "5 minutes"
group_by = ["user_id"]
metrics = ["count", "sum(amount)"]

  [[windows.sketches]]
  name = "pages"
  kind = "hll"
  field = "page"
  precision = 12

[[windows]]
name = "by_page"
size = "5 minutes"
group_by = ["page"]
metrics = ["count", "sum(amount)"]

  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 12

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"
"""


def truth(cfg: Any, events: int) -> dict[str, Counter]:
    """Counts per (window start s, key) of the generated events, by window."""
    from streaming.kafka.generator import generate

    out = {"by_user": Counter(), "by_page": Counter()}
    for rec in generate(cfg, events):
        e = rec.event
        if e is None:
            continue
        t = int(dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp())
        ws = t - t % WINDOW_S
        out["by_user"][(ws, e["user_id"])] += 1
        out["by_page"][(ws, e["page"])] += 1
    return out


def check(root: Path, want: dict[str, Counter]) -> dict[str, Any]:
    """Every cell of ``aggregates`` (partial rows merged) against the truth."""
    from streaming.engine.tables import read_table

    rows = read_table(str(root / "delta" / "aggregates"))
    got: dict[str, Counter] = {"by_user": Counter(), "by_page": Counter()}
    for name, ws, key, count in zip(rows.column("window_name").to_pylist(),
                                    rows.column("window_start").cast("int64").to_pylist(),
                                    rows.column("group_key").to_pylist(),
                                    rows.column("count").to_pylist(), strict=True):
        got[name][(ws // 1_000_000, json.loads(key)[0])] = count
    return {name: {"cells": len(want[name]), "wrong": sum(
        1 for k in set(want[name]) | set(got[name]) if want[name][k] != got[name][k])}
        for name in want}


def main(argv: list[str] | None = None) -> int:
    from streaming.kafka.broker import LocalKafka, free_port
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=50_000)
    ap.add_argument("--per-trigger", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=1_333.0,
                    help="events per second of event time (sets how many windows)")
    ap.add_argument("--skip", default="state",
                    help="comma-separated: plain, state, check (default: state; the state-store "
                         "design takes ~1 ms a group: run it on a smaller --events)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cardinality.json")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="ss-card-"))
    broker = LocalKafka(tmp / "kafka", port=free_port())
    broker.start()
    result: dict[str, Any] = {"events": args.events, "users": args.users, "pages": args.pages,
                              "per_trigger": args.per_trigger,
                              "machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "load_at_start": os.getloadavg()[0]}}
    try:
        bootstrap = broker.status().bootstrap_servers or broker.bootstrap_servers
        cfg = GeneratorConfig(seed=11, rate=args.rate, start_time=START, users=args.users,
                              pages=args.pages)
        t = time.monotonic()
        produce(bootstrap, "cards", cfg, count=args.events, partitions=2)
        result["produce_seconds"] = time.monotonic() - t
        env = dict(os.environ)
        runs = {"ours": [sys.executable, "-m", "streaming.cli", "run", "--spec",
                         "{spec}", "--available-now"]}
        for name, module in (("plain_spark", "plain_spark_job"),
                             ("state_store", "statestore_job")):
            if name.split("_")[0] not in skip:
                runs[name] = [sys.executable, "-m", f"benchmarks.{module}",
                              "--bootstrap", bootstrap, "--topic", "cards",
                              "--root", "{root}", "--per-trigger", str(args.per_trigger)]
        for name, cmd in runs.items():
            root = tmp / name
            root.mkdir()
            spec = root / "spec.toml"
            spec.write_text(SPEC.format(topic="cards", bootstrap=bootstrap, root=root,
                                        per_trigger=args.per_trigger))
            cmd = [c.format(spec=spec, root=root) for c in cmd]
            r = run_measured(cmd, env)
            r["events_per_second"] = args.events / r["seconds"]
            result[name] = r
            print(f"{name}: {r['seconds']:.1f} s, {r['events_per_second'] / 1000:.1f}k events/s, "
                  f"peak {r['peak_tree_rss_bytes'] / 2**30:.2f} GiB (exit {r['returncode']})",
                  flush=True)
        if "plain_spark" in result:
            result["ratio"] = result["plain_spark"]["seconds"] / result["ours"]["seconds"]
            print(f"ours / plain Spark: {result['ratio']:.2f}x faster")
        if "state_store" in result:
            result["state_store_ratio"] = (result["state_store"]["seconds"]
                                           / result["ours"]["seconds"])
        if "check" not in skip:
            result["check"] = check(tmp / "ours", truth(cfg, args.events))
            print(f"cells checked: {result['check']}")
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
