#!/usr/bin/env python
"""Latency of ``streamsketch query`` over a year of stored windows, process start included.

Run from the repository root::

    python -m benchmarks.bench_query                  # 7 runs per query, both layouts
    python -m benchmarks.bench_query --runs 3 --layouts one-file --spark

The table: a year (2025) of hourly windows x 16 groups (``country``) with 3
sketches each (HLL p12 ``users``, Count-Min 272x5 top-10 ``pages``, Bloom
1,000 @ 1 % ``seen_users``) and exact metrics, from ~1.1 M generated events
(8 an hour per group): 140,160 window rows in ``aggregates`` and 420,480 in
``sketches``, written with delta-rs (``tests/streaming/query_tables.py``), in
two layouts:

* ``one-file``: one append per table, one Parquet file each (a compacted table),
  delta-rs's default row groups (one, here);
* ``one-file-64k``: the same with row groups of 65,536 rows (several per file);
* ``many-files``: 365 appends per table (a table nobody compacted).

Each query (``distinct``, ``topk``, ``contains``, ``aggregate`` over the whole
year) runs ``--runs`` times as a fresh ``python -m streaming.cli query ...``
process; the wall time of each process is measured from outside, with its CPU
seconds (user + system: less sensitive to a busy machine). ``--spark``
adds one run of each query with ``--engine spark`` for comparison.

Tables are built once under ``benchmarks/results/query-tables/`` and reused.
Results go to ``benchmarks/results/query.json`` with the load average before
and after; the goal of issue #17 is a median under 0.5 s per query.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.append(str(_REPO_ROOT))

RESULTS = _HERE / "results"
YEAR = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)
HOURS = 365 * 24
GROUPS = 16
PER_GROUP_HOUR = 8
#: layout -> (appends per table, rows per Parquet row group or None for delta-rs's default)
LAYOUTS = {"one-file": (1, None), "one-file-64k": (1, 65_536), "many-files": (365, None)}

SPEC = """
[source]
topic = "clickstream"
[events]
time_field = "ts"
watermark = "2 minutes"
[events.fields]
user_id = "string"
page = "string"
country = "string"
amount = "double"

[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["country"]
metrics = ["count", "sum(amount)", "avg(amount)", "max(amount)"]
  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 12
  [[windows.sketches]]
  name = "pages"
  kind = "cms"
  field = "page"
  epsilon = 0.01
  delta = 0.01
  top_k = 10
  [[windows.sketches]]
  name = "seen_users"
  kind = "bloom"
  field = "user_id"
  capacity = 1000
  error_rate = 0.01

[sink]
path = "delta"
checkpoint = "checkpoints"
"""

QUERIES = {
    "distinct": ["distinct"],
    "topk": ["topk", "--k", "10"],
    "contains": ["contains", "--value", "u0000042"],
    "aggregate": ["aggregate"],
}


def build(folder: Path, files: int, row_group_rows: int | None) -> dict[str, Any]:
    """The layout's tables under ``folder`` (reused when complete)."""
    from streaming.spec.model import load_spec
    from tests.streaming.query_tables import make_events, write_tables

    marker = folder / "complete.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "spec.toml").write_text(SPEC)
    spec = load_spec(folder / "spec.toml", relative_to="spec")
    t0 = time.perf_counter()
    events = make_events(start=YEAR, hours=HOURS, per_hour=GROUPS * PER_GROUP_HOUR,
                         countries=GROUPS, users=20_000, pages=200)
    write_tables(spec, events, files=files, chunk_s=30 * 86400, row_group_rows=row_group_rows)
    info = {"events": len(events), "files": files, "row_group_rows": row_group_rows,
            "build_seconds": time.perf_counter() - t0}
    info.update(_table_info(folder / "delta"))
    marker.write_text(json.dumps(info))
    return info


def _table_info(root: Path) -> dict[str, Any]:
    from deltalake import DeltaTable

    out: dict[str, Any] = {}
    for name in ("aggregates", "sketches"):
        table = DeltaTable(str(root / name))
        files = table.file_uris()
        out[name] = {"rows": table.count(), "files": len(files),
                     "bytes": sum(p.stat().st_size for p in (root / name).glob("*.parquet"))}
    return out


def run_query(folder: Path, argv: list[str], engine: str) -> tuple[float, str]:
    """Wall seconds of one query process, and its stdout."""
    wall, _, out = timed_query(folder, argv, engine)
    return wall, out


def timed_query(folder: Path, argv: list[str], engine: str) -> tuple[float, float, str]:
    """Wall and CPU (user + system) seconds of one query process, and its stdout."""
    cmd = [sys.executable, "-m", "streaming.cli", "query", *argv, "--spec",
           str(folder / "spec.toml"), "--window", "hourly", "--from", "2025-01-01T00:00Z",
           "--to", "2026-01-01T00:00Z", "--engine", engine, "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder,
                          env={**os.environ, "PYTHONPATH": str(_REPO_ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} --engine {engine} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-300:]}")
    return wall, cpu, proc.stdout


def _summary(answer: dict[str, Any]) -> str:
    what = answer["query"]
    if what == "distinct":
        return f"~{answer['estimate']:,.0f} users, {answer['windows_merged']} sketches"
    if what == "topk":
        return f"top {answer['top'][0]['item']} {answer['top'][0]['count']:,}, " \
               f"{answer['windows_merged']} sketches"
    if what == "contains":
        return f"present={answer['probably_present']}, {answer['windows_merged']} sketches"
    return f"{len(answer['rows'])} groups, {sum(r['windows'] for r in answer['rows'])} windows"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--layouts", default=",".join(LAYOUTS),
                    help=f"comma-separated, of {', '.join(LAYOUTS)}")
    ap.add_argument("--spark", action="store_true", help="one run per query with --engine spark")
    ap.add_argument("--tables", type=Path, default=RESULTS / "query-tables")
    ap.add_argument("--out", type=Path, default=RESULTS / "query.json")
    args = ap.parse_args()

    report: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "versions": {n: importlib.metadata.version(n)
                                 for n in ("deltalake", "pyarrow", "numpy")}},
        "loadavg_before": os.getloadavg(), "runs": args.runs, "layouts": {}}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = f"{'layout':<11} {'query':<10} {'engine':<6} {'median s':>8} {'min':>6} {'max':>6}" \
           f" {'CPU s':>7}  answer"
    for layout in args.layouts.split(","):
        folder = args.tables / layout
        info = build(folder, *LAYOUTS[layout])
        print(f"\n{layout}: aggregates {info['aggregates']['rows']:,} rows in "
              f"{info['aggregates']['files']} files, sketches {info['sketches']['rows']:,} rows "
              f"in {info['sketches']['files']} files ({info['sketches']['bytes'] / 1e6:.0f} MB)")
        print(head)
        print("-" * len(head))
        rows = {}
        for name, argv in QUERIES.items():
            run_query(folder, argv, "delta")  # warm the page cache and .pyc files
            times, cpus, out = [], [], ""
            for _ in range(args.runs):
                wall, cpu, out = timed_query(folder, argv, "delta")
                times.append(wall)
                cpus.append(cpu)
            answer = json.loads(out)
            rows[name] = {"engine": "delta", "seconds": times, "cpu_seconds": cpus,
                          "median": statistics.median(times),
                          "cpu_median": statistics.median(cpus), "answer": _summary(answer),
                          "json": answer}
            print(f"{layout:<11} {name:<10} {'delta':<6} {statistics.median(times):>8.3f} "
                  f"{min(times):>6.3f} {max(times):>6.3f} {statistics.median(cpus):>7.3f}  "
                  f"{_summary(answer)}")
        report["layouts"][layout] = {"table": info, "queries": rows}
    if args.spark:  # after every delta row: a JVM next to them would slow them down
        print(f"\n{head}\n{'-' * len(head)}")
        for layout in args.layouts.split(","):
            folder, rows = args.tables / layout, report["layouts"][layout]["queries"]
            for name, argv in QUERIES.items():
                try:
                    wall, out = run_query(folder, argv, "spark")
                except RuntimeError as exc:
                    rows[f"{name}-spark"] = {"engine": "spark", "error": str(exc)}
                    print(f"{layout:<11} {name:<10} {'spark':<6} {'failed':>8}  {exc}")
                    continue
                same = json.loads(out) == rows[name]["json"]
                rows[f"{name}-spark"] = {"engine": "spark", "seconds": [wall],
                                         "same_answer": same}
                print(f"{layout:<11} {name:<10} {'spark':<6} {wall:>8.3f} {'':>6} {'':>6}  "
                      f"same answer as delta: {same}")
    report["loadavg_after"] = os.getloadavg()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
