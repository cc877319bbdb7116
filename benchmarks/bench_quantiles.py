#!/usr/bin/env python
"""Quantile sketches: ``sketches.QuantileSketch`` against ``ddsketch`` and DataSketches' KLL.

Run from the repository root::

    python -m benchmarks.bench_quantiles            # 5 M values, 9 or 3 repeats (~1 min)
    python -m benchmarks.bench_quantiles --quick    # 1 M values, 3 or 1 repeats

Rows of well under a second (batch updates, profile, ceilings) are repeated
``--repeat-fast`` times, the others ``--repeat`` times; each reports the median and
the best. The parts live in ``benchmarks/quantile_bench/``: ``harness`` (settings,
timing, rows), ``updates`` (update, grouped build and merge, and the accuracy
figures), ``ceilings`` (profile, ceilings, alternatives), ``report`` (targets and the
printed report).

One data set, built once from ``--seed`` and never timed: ``n`` log-normal float64
values (``mu=0, sigma=2``). Every library gets the same values:

* ours, with each bucket mapping (``"log"``, the default, and ``"cells"``):
  ``QuantileSketch(relative_accuracy=0.01, mapping=m).update(array)`` on the NumPy
  array, and on the same values as a pyarrow array; ``from_groups`` into 1,000 groups.
* ``ddsketch.DDSketch(relative_accuracy=0.01)``: pure Python, one ``add`` per value,
  driven by ``map`` over a pre-built list (not timed); timed on the first
  ``--slow-n`` values and reported as values/s.
* DataSketches ``kll_doubles_sketch(k=200)``: its ``update`` takes a NumPy array
  (timed as "batch") or one float (timed through ``map`` over a pre-built list).

Where the time goes, on the same values: ``profile.ours.*`` (the log mapping phase by
phase, the cells mapping's counting pass), ``ceiling.*`` (the least any bucket
histogram does per value: ``--chunk``-value chunks, reused buffers, cells of
``--cell-bits`` significand bits) and ``alt.*`` (what else was tried); see
``benchmarks/quantile_bench/ceilings.py``.

Merge: ``--merge-sketches`` sketches of ``--merge-items`` values each (consecutive
slices of the data) are built untimed, then merged: ours with ``union(*sketches)``
(each mapping) and with repeated ``merge`` into an empty sketch, the baselines with
their ``merge`` into an empty sketch.

Also measured, untimed: the largest relative error of each library's quantiles
against the exact lower quantile (``np.sort(values)[floor(q (n - 1))]``) at a few
``q``, the serialised size, and for the cells mapping its bound and its accuracy on
mixed signs, zeros, subnormals, NaN and infinities. Targets (informational, never
failing the run): update >= 20x the fastest baseline row, judged on
``update.ours.cells.numpy`` (every other update and ceiling row is set against it
too), and merging 1,000 sketches < 50 ms. Results go to
``benchmarks/results/quantiles.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_quantiles.py`` without install
    sys.path.append(str(_REPO_ROOT))

from benchmarks.quantile_bench.ceilings import bench_ceilings, bench_profile  # noqa: E402
from benchmarks.quantile_bench.harness import (  # noqa: E402
    DD_ERR,
    DEFAULT_OUT,
    DS_ERR,
    OURS_ERR,
    PA_ERR,
    Report,
    machine_info,
    shown_path,
)
from benchmarks.quantile_bench.report import print_report, profile, targets  # noqa: E402
from benchmarks.quantile_bench.updates import (  # noqa: E402
    bench_baselines,
    bench_merge,
    bench_ours,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="values (default 5 M; --quick: 1 M)")
    p.add_argument(
        "--repeat", type=int, default=None, help="repeats of the other rows (default 3; --quick: 1)"
    )
    p.add_argument(
        "--repeat-fast",
        type=int,
        default=None,
        help="repeats of the rows of well under a second: batch updates, profile, "
        "ceilings (default 9; --quick: 3)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: --n 1000000 --repeat 1")
    p.add_argument("--slow-n", type=int, default=200_000, help="subset for pure-Python ddsketch")
    p.add_argument("--merge-sketches", type=int, default=1000)
    p.add_argument("--merge-items", type=int, default=10_000)
    p.add_argument(
        "--cell-bits",
        type=int,
        default=7,
        choices=range(6, 11),
        help="significand bits of the ceilings' cells (default 7, the cells mapping's at 0.01)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=1 << 18,
        help="values per chunk of the ceilings (default 262,144)",
    )
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path")
    args = p.parse_args(argv)
    args.n = args.n or (1_000_000 if args.quick else 5_000_000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.repeat_fast = args.repeat_fast or (3 if args.quick else 9)
    if args.n <= args.merge_items or min(args.repeat, args.repeat_fast, args.chunk) < 1:
        p.error("--n must exceed --merge-items; --repeat, --repeat-fast, --chunk be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    errors = {"sketches": OURS_ERR, "ddsketch": DD_ERR, "datasketches": DS_ERR, "pyarrow": PA_ERR}
    unavailable = {k: v for k, v in errors.items() if v}
    for lib, err in unavailable.items():
        print(f"note: {lib} unavailable ({err}); its rows are skipped")
    out = Path(args.out)
    meta = {
        "benchmark": "bench_quantiles",
        "schema_version": 2,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "args": {**vars(args), "out": shown_path(out)},
        "machine": machine_info(),
        "unavailable": unavailable,
        "data": f"{args.n:,} log-normal(0, 2) float64 values, numpy default_rng({args.seed})",
    }
    x = np.random.default_rng(args.seed).lognormal(0.0, 2.0, args.n)
    rep = Report()
    print(f"[update] {args.n:,} values, {args.repeat} repeat(s)")
    quality = bench_ours(x, args, rep)
    quality.update(bench_baselines(x, args, rep))
    print("[profile] our update, phase by phase")
    bench_profile(x, args, rep)
    print(f"[ceilings] {args.chunk:,}-value chunks")
    bench_ceilings(x, args, rep)
    print(f"[merge] {args.merge_sketches:,} sketches of {args.merge_items:,} values")
    bench_merge(x, args, rep)
    goals = targets(rep)
    meta["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    meta["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["profile"] = profile(rep)
    print_report(rep, meta, quality, goals)

    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "rows": rep.rows, "quality": quality, "targets": goals}
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {shown_path(out)} ({meta['elapsed_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
