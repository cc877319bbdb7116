#!/usr/bin/env python
"""Quantile sketches: ``sketches.QuantileSketch`` against ``ddsketch`` and DataSketches' KLL.

Run from the repository root::

    python -m benchmarks.bench_quantiles            # 5 M values, 3 repeats (~1 min)
    python -m benchmarks.bench_quantiles --quick    # 1 M values, 1 repeat

One data set, built once from ``--seed`` and never timed: ``n`` log-normal float64
values (``mu=0, sigma=2``). Every library gets the same values:

* ours: ``QuantileSketch(relative_accuracy=0.01).update(array)`` on the NumPy array,
  and on the same values as a pyarrow array; ``from_groups`` into 1,000 groups.
* ``ddsketch.DDSketch(relative_accuracy=0.01)``: pure Python, one ``add`` per value,
  driven by ``map`` over a pre-built list (not timed); timed on the first
  ``--slow-n`` values and reported as values/s.
* DataSketches ``kll_doubles_sketch(k=200)``: its ``update`` takes a NumPy array
  (timed as "batch") or one float (timed through ``map`` over a pre-built list).

Merge: ``--merge-sketches`` sketches of ``--merge-items`` values each (consecutive
slices of the data) are built untimed, then merged: ours with ``union(*sketches)``
and with repeated ``merge`` into an empty sketch, the baselines with their ``merge``
into an empty sketch.

Also measured, untimed: the largest relative error of each library's quantiles
against the exact lower quantile (``np.sort(values)[floor(q (n - 1))]``) at a few
``q``, and the serialised size. Targets (informational, never failing the run):
update >= 20x the fastest baseline row, and merging 1,000 sketches < 50 ms.
Results go to ``benchmarks/results/quantiles.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_quantiles.py`` without install
    sys.path.append(str(_REPO_ROOT))

DEFAULT_OUT = _HERE / "results" / "quantiles.json"
ACCURACY = 0.01
KLL_K = 200
GROUPS = 1000
QS = [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
UPDATE_FACTOR = 20.0
MERGE_MS = 50.0


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        return None, f"{type(exc).__name__}: {exc}"


sketches, _OURS_ERR = _try_import("sketches")
ddsketch, _DD_ERR = _try_import("ddsketch")
datasketches, _DS_ERR = _try_import("datasketches")
pa, _PA_ERR = _try_import("pyarrow")


def time_calls(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall time of ``fn()`` per repeat, garbage collector off while timing."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return times


def consume(iterator: Any) -> None:
    collections.deque(iterator, maxlen=0)


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, key: str, what: str, unit: str, items: int, fn: Callable[[], Any], **kw: Any):
        row: dict[str, Any] = {"key": key, "what": what, "unit": unit, "items": items, **kw}
        try:
            times = time_calls(fn, kw.pop("repeat", 1))
            row["times_s"] = times
            if unit == "values/s":
                row["median"], row["best"] = items / statistics.median(times), items / min(times)
            else:  # ms per call
                row["median"], row["best"] = 1e3 * statistics.median(times), 1e3 * min(times)
        except Exception as exc:  # noqa: BLE001 - record and go on
            row["error"] = f"{type(exc).__name__}: {exc}"
        row.pop("repeat", None)
        self.rows.append(row)
        shown = row.get("error") or f"{row['median']:,.1f} {unit}"
        print(f"  {key:<34} {shown}", flush=True)
        return row

    def median(self, key: str) -> float | None:
        for row in self.rows:
            if row["key"] == key and "median" in row:
                return float(row["median"])
        return None


def exact_lower(values: np.ndarray, qs: list[float]) -> np.ndarray:
    ordered = np.sort(values)
    return ordered[np.floor(np.asarray(qs) * (ordered.size - 1)).astype(np.int64)]


def max_rel_error(estimates: Any, exact: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(estimates, dtype=np.float64) - exact) / exact))


def bench_update(x: np.ndarray, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    quality: dict[str, Any] = {}
    exact = exact_lower(x, QS)
    n, r = x.size, args.repeat
    if sketches is not None:
        qs_cls = sketches.QuantileSketch
        rep.add(
            "update.ours.numpy",
            "QuantileSketch.update(float64 array)",
            "values/s",
            n,
            lambda: qs_cls(ACCURACY).update(x),
            repeat=r,
        )
        if pa is not None:
            arrow = pa.array(x)
            rep.add(
                "update.ours.arrow",
                "QuantileSketch.update(pyarrow array)",
                "values/s",
                n,
                lambda: qs_cls(ACCURACY).update(arrow),
                repeat=r,
            )
        codes = np.random.default_rng(args.seed + 1).integers(0, GROUPS, n)
        rep.add(
            "from_groups.ours.numpy",
            f"QuantileSketch.from_groups, {GROUPS} groups",
            "values/s",
            n,
            lambda: qs_cls.from_groups(codes, x, GROUPS, relative_accuracy=ACCURACY),
            repeat=r,
        )
        ours = qs_cls(ACCURACY).update(x)
        quality["ours"] = {
            "max_rel_error": max_rel_error(ours.quantiles(QS), exact),
            "bytes": len(ours.to_bytes()),
            "buckets": ours.num_buckets,
        }
    if ddsketch is not None:
        subset = x[: args.slow_n].tolist()
        rep.add(
            "update.ddsketch.per_item",
            "DDSketch.add via map (subset)",
            "values/s",
            len(subset),
            lambda: consume(map(ddsketch.DDSketch(ACCURACY).add, subset)),
            repeat=r,
            note=f"first {len(subset):,} values",
        )
        dd = ddsketch.DDSketch(ACCURACY)
        consume(map(dd.add, x.tolist()))
        quality["ddsketch"] = {
            "max_rel_error": max_rel_error([dd.get_quantile_value(q) for q in QS], exact)
        }
    if datasketches is not None:
        kll = datasketches.kll_doubles_sketch
        rep.add(
            "update.kll.batch",
            "kll_doubles_sketch.update(float64 array)",
            "values/s",
            n,
            lambda: kll(KLL_K).update(x),
            repeat=r,
        )
        values = x.tolist()
        rep.add(
            "update.kll.per_item",
            "kll_doubles_sketch.update via map",
            "values/s",
            n,
            lambda: consume(map(kll(KLL_K).update, values)),
            repeat=r,
        )
        sk = kll(KLL_K)
        sk.update(x)
        # KLL's own quantile definition is inclusive; both are compared to the same exact
        quality["kll"] = {
            "max_rel_error": max_rel_error([sk.get_quantile(q) for q in QS], exact),
            "normalized_rank_error": sk.normalized_rank_error(False),
            "bytes": len(sk.serialize()),
        }
    return quality


def bench_merge(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    k, m = args.merge_sketches, args.merge_items
    parts = [x[(i * m) % (x.size - m) :][:m] for i in range(k)]
    label = f"merge {k:,} sketches of {m:,}"
    if sketches is not None:
        cls = sketches.QuantileSketch
        ours = [cls(ACCURACY).update(p) for p in parts]

        def loop() -> None:
            acc = cls(ACCURACY)
            for s in ours:
                acc.merge(s)

        rep.add(
            "merge.ours.union",
            f"{label}: union(*sketches)",
            "ms",
            k,
            lambda: sketches.union(*ours),
            repeat=args.repeat,
        )
        rep.add("merge.ours.loop", f"{label}: repeated merge", "ms", k, loop, repeat=args.repeat)
    if ddsketch is not None:
        dds = []
        for p in parts:
            d = ddsketch.DDSketch(ACCURACY)
            consume(map(d.add, p.tolist()))
            dds.append(d)

        def dd_loop() -> None:
            acc = ddsketch.DDSketch(ACCURACY)
            for d in dds:
                acc.merge(d)

        rep.add(
            "merge.ddsketch.loop", f"{label}: DDSketch.merge", "ms", k, dd_loop, repeat=args.repeat
        )
    if datasketches is not None:
        klls = []
        for p in parts:
            s = datasketches.kll_doubles_sketch(KLL_K)
            s.update(p)
            klls.append(s)

        def kll_loop() -> None:
            acc = datasketches.kll_doubles_sketch(KLL_K)
            for s in klls:
                acc.merge(s)

        rep.add("merge.kll.loop", f"{label}: kll merge", "ms", k, kll_loop, repeat=args.repeat)


def targets(rep: Report) -> list[dict[str, Any]]:
    out = []
    ours = rep.median("update.ours.numpy")
    base = {
        k: rep.median(k)
        for k in ("update.ddsketch.per_item", "update.kll.batch", "update.kll.per_item")
    }
    known = {k: v for k, v in base.items() if v}
    if ours and known:
        fastest = max(known, key=lambda k: known[k])
        ratio = ours / known[fastest]
        out.append(
            {
                "target": f"update >= {UPDATE_FACTOR:g}x the fastest baseline",
                "status": "PASS" if ratio >= UPDATE_FACTOR else "MISS",
                "measured": ratio,
                "detail": f"{ratio:.1f}x {fastest} "
                f"({ours:,.0f} vs {known[fastest]:,.0f} values/s); "
                + ", ".join(f"{ours / v:.1f}x {k}" for k, v in known.items()),
            }
        )
    else:
        out.append({"target": "update vs baselines", "status": "N/A", "detail": "not measured"})
    merge = rep.median("merge.ours.union")
    out.append(
        {
            "target": f"merge of 1,000 sketches < {MERGE_MS:g} ms",
            "status": "N/A" if merge is None else ("PASS" if merge < MERGE_MS else "MISS"),
            "measured": merge,
            "detail": "not measured"
            if merge is None
            else f"union {merge:.1f} ms, repeated merge "
            f"{rep.median('merge.ours.loop') or math.nan:.1f} ms",
        }
    )
    return out


def machine_info() -> dict[str, Any]:
    versions = {}
    for dist in ("numpy", "pyarrow", "ddsketch", "datasketches", "streamsketch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    commit = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=_REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="values (default 5 M; --quick: 1 M)")
    p.add_argument("--repeat", type=int, default=None, help="repeats (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: --n 1000000 --repeat 1")
    p.add_argument("--slow-n", type=int, default=200_000, help="subset for pure-Python ddsketch")
    p.add_argument("--merge-sketches", type=int, default=1000)
    p.add_argument("--merge-items", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path")
    args = p.parse_args(argv)
    args.n = args.n or (1_000_000 if args.quick else 5_000_000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.n <= args.merge_items or args.repeat < 1:
        p.error("--n must exceed --merge-items and --repeat be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    unavailable = {
        k: v
        for k, v in {
            "sketches": _OURS_ERR,
            "ddsketch": _DD_ERR,
            "datasketches": _DS_ERR,
            "pyarrow": _PA_ERR,
        }.items()
        if v
    }
    for lib, err in unavailable.items():
        print(f"note: {lib} unavailable ({err}); its rows are skipped")
    meta = {
        "benchmark": "bench_quantiles",
        "schema_version": 1,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "machine": machine_info(),
        "unavailable": unavailable,
        "data": f"{args.n:,} log-normal(0, 2) float64 values, numpy default_rng({args.seed})",
    }
    x = np.random.default_rng(args.seed).lognormal(0.0, 2.0, args.n)
    rep = Report()
    print(f"[update] {args.n:,} values, {args.repeat} repeat(s)")
    quality = bench_update(x, args, rep)
    print(f"[merge] {args.merge_sketches:,} sketches of {args.merge_items:,} values")
    bench_merge(x, args, rep)
    goals = targets(rep)
    meta["elapsed_seconds"] = round(time.perf_counter() - started, 1)

    print(f"\n{'row':<34} {'median':>16} {'best':>16}  what")
    for row in rep.rows:
        if "error" in row:
            print(f"{row['key']:<34} {row['error']}")
            continue
        unit = row["unit"]
        print(
            f"{row['key']:<34} {row['median']:>12,.1f} {unit:<3} {row['best']:>12,.1f} "
            f"{unit:<3}  {row['what']}"
        )
    print("\nquality (max relative error of the quantiles at " + ", ".join(map(str, QS)) + ")")
    for lib, q in quality.items():
        print(f"  {lib:<10} " + ", ".join(f"{k}={v:.4g}" for k, v in q.items()))
    print("\ntargets (informational)")
    for goal in goals:
        print(f"  {goal['status']:<4} {goal['target']}: {goal['detail']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "rows": rep.rows, "quality": quality, "targets": goals}
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({meta['elapsed_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
