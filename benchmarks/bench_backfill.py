#!/usr/bin/env python
"""Throughput of ``streamsketch replay LOG --spec S --backfill`` with the bundled spec.

Run from the repository root::

    python -m benchmarks.bench_backfill                      # the 5 M-event log
    python -m benchmarks.bench_backfill --count 1000000 --records-per-batch 500000

The log is the one :mod:`benchmarks.bench_replay` writes (plain generated events,
one per line, the demo's mix of defects), reused if present. The backfill runs
the whole pipeline (the engine's one pass: decode, quarantine, windows, sketches;
then the Delta writes) over it into a temporary folder, in this process (a
backfill needs no JVM). Rows:

* ``read``: the backfill's own log reader alone (raw lines into Arrow batches),
  its ceiling;
* ``backfill``: the whole run, first batch to last commit, with the seconds per
  batch phase summed and the process's CPU seconds.

Results go to ``benchmarks/results/backfill.json``; every figure is measured in
the run that wrote it, with the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.append(str(_REPO_ROOT))

from benchmarks.bench_produce import machine  # noqa: E402
from benchmarks.bench_replay import ensure_log  # noqa: E402

RESULTS = _HERE / "results"


def bench_read(path: Path, per_batch: int) -> dict[str, Any]:
    from streaming.logs.backfill import LogRecords, Position
    from streaming.logs.reader import ReadOptions

    t0, c0 = time.perf_counter(), time.process_time()
    records = LogRecords([path], ReadOptions(raw=True, keep_lost=True), Position())
    n = 0
    while True:
        _, _, count = records.take(per_batch)
        if not count:
            break
        n += count
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"row": "read", "events": n, "seconds": wall, "events_per_s": n / wall,
            "cpu_us_per_event": cpu / max(n, 1) * 1e6}


def bench_backfill(path: Path, per_batch: int, home: Path) -> dict[str, Any]:
    from streaming.logs.backfill import backfill, backfill_spec
    from streaming.spec.model import default_spec_path, load_spec

    spec = load_spec(default_spec_path())
    spec = replace(spec, sink=replace(spec.sink, path=str(home / "delta"),
                                      checkpoint=str(home / "ck")),
                   metrics=replace(spec.metrics, enabled=False))
    spec = backfill_spec(spec, [path])
    phases: dict[str, float] = {}
    done = [0]

    def on_batch(s: Any) -> None:
        for k, v in s.phase_s.items():
            phases[k] = phases.get(k, 0.0) + v
        done[0] += s.rows
        print(f"  batch {s.batch_id}: {s.rows:,} rows in {s.duration_s:.1f} s "
              f"({done[0]:,} so far)", flush=True)

    c0 = time.process_time()
    stats = backfill(None, spec, [path], records_per_batch=per_batch, on_batch=on_batch)
    cpu = time.process_time() - c0
    return {"row": "backfill", "events": stats.records, "seconds": stats.seconds,
            "cpu_us_per_event": cpu / max(stats.records, 1) * 1e6,
            "events_per_s": stats.events_per_second, "batches": stats.batches,
            "records_per_batch": per_batch,
            "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
            "quarantined": stats.quarantined}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5_000_000, help="events (default: %(default)s)")
    ap.add_argument("--records-per-batch", type=int, default=500_000,
                    help="records per backfill batch (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--out", type=Path, default=RESULTS / "backfill.json")
    args = ap.parse_args(argv)

    path, _ = ensure_log(args.count, args.seed)
    report: dict[str, Any] = {"benchmark": "backfill", "schema_version": 1,
                              "created_utc": _dt.datetime.now(_dt.UTC).isoformat(),
                              "count": args.count, "log": {"name": path.name,
                                                           "bytes": path.stat().st_size},
                              "machine": machine()}
    rows = [bench_read(path, args.records_per_batch)]
    print(f"read:     {rows[0]['events_per_s']:>12,.0f} events/s", flush=True)
    home = Path(tempfile.mkdtemp(prefix="streamsketch-bench-backfill-"))
    try:
        rows.append(bench_backfill(path, args.records_per_batch, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    b = rows[1]
    print(f"backfill: {b['events_per_s']:>12,.0f} events/s ({b['events']:,} events, "
          f"{b['seconds']:.1f} s, {b['batches']} batches of {b['records_per_batch']:,}; "
          f"phase seconds {json.dumps(b['phase_seconds'])}) (target >= 100,000)")
    report["rows"] = rows
    report["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
