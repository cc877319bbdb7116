#!/usr/bin/env python
"""Throughput benchmark: ``sketches`` (pure NumPy) against established sketch libraries.

Run from the repository root::

    python -m benchmarks.bench_sketches            # full run, 10 M items, 3 repeats
    python -m benchmarks.bench_sketches --quick    # smoke run, 1 M items, 1 repeat
    python benchmarks/bench_sketches.py --only hll,merge --out results-hll.json

Every number printed or written is measured in the same run; ratios and the
PASS/MISS lines are computed from those measurements.  A missed target is
reported, never raised: the exit code is 0 whenever the benchmark ran.

Groups (``--only``): hash, hll, cms, bloom, merge, estimate, memory, datasketches
(our DataSketches-format HLL and Theta against Apache DataSketches: updates, and
merges of 10,000 stored images); each is a module of ``benchmarks/sketch_bench/``
(``harness`` holds what they share, ``report`` the ratios, targets and printed report).

Baselines and what they are fed:

* datasketch ``HyperLogLog(p=14)``: pure Python, per-item ``update(bytes)``.
  Too slow for the full data, so it is timed on a ``--slow-n`` subset and the
  rate is reported as items/s (marked "subset").
* Apache DataSketches (``datasketches``): C++ behind per-item Python calls.
  Each sketch is probed for a batch (NumPy array) ``update``; where there is
  none, items are fed from a pre-built Python list through ``map`` (the
  cheapest way to drive a per-item API from Python).  The list conversion is
  not timed.
* rbloom ``Bloom``: bulk ``update(iterable)`` from a pre-built Python list;
  membership has no bulk API, so ``__contains__`` is driven through ``map``.

Our sketches receive NumPy int64 arrays, and for strings whichever of a NumPy
object array or a pyarrow StringArray a probe finds faster (printed per row).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_sketches.py`` without an install
    sys.path.append(str(_REPO_ROOT))

from benchmarks.sketch_bench.bloom import group_bloom  # noqa: E402
from benchmarks.sketch_bench.cms import group_cms  # noqa: E402
from benchmarks.sketch_bench.datasketches_format import group_datasketches  # noqa: E402
from benchmarks.sketch_bench.estimate import group_estimate  # noqa: E402
from benchmarks.sketch_bench.harness import (  # noqa: E402
    DATASKETCH_ERR,
    DEFAULT_OUT,
    DS_ERR,
    GROUPS,
    OURS_ERR,
    PA_ERR,
    RBLOOM_ERR,
    Data,
    Results,
    Row,
)
from benchmarks.sketch_bench.hashing import group_hash  # noqa: E402
from benchmarks.sketch_bench.hll import group_hll  # noqa: E402
from benchmarks.sketch_bench.memory import group_memory  # noqa: E402
from benchmarks.sketch_bench.merge import group_merge  # noqa: E402
from benchmarks.sketch_bench.report import (  # noqa: E402
    compute_ratios,
    compute_targets,
    machine_info,
    print_report,
)

GROUP_FUNCS = {
    "hash": group_hash,
    "hll": group_hll,
    "cms": group_cms,
    "bloom": group_bloom,
    "merge": group_merge,
    "estimate": group_estimate,
    "memory": group_memory,
    "datasketches": group_datasketches,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="items per data set (default 10,000,000; --quick: 1,000,000)",
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="timed repeats per row (default 3; --quick: 1)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: n=1,000,000 and repeat=1")
    p.add_argument("--only", default=None, help=f"comma list of groups: {','.join(GROUPS)}")
    p.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="JSON output path (default benchmarks/results/sketches.json)",
    )
    p.add_argument(
        "--slow-n",
        type=int,
        default=500_000,
        help="subset size for the pure-Python datasketch baseline (default 500,000)",
    )
    p.add_argument("--seed", type=int, default=20240601, help="data seed")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 1_000_000 if args.quick else 10_000_000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.n < 1000 or args.repeat < 1:
        p.error("--n must be >= 1000 and --repeat >= 1")
    if args.only:
        groups = [g.strip() for g in args.only.split(",") if g.strip()]
        bad = [g for g in groups if g not in GROUPS]
        if bad:
            p.error(f"unknown group(s) {bad}; choose from {', '.join(GROUPS)}")
        args.groups = [g for g in GROUPS if g in groups]
    else:
        args.groups = list(GROUPS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "benchmark": "bench_sketches",
        "schema_version": 1,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "repeat": args.repeat,
        "groups": args.groups,
        "args": {k: v for k, v in vars(args).items() if k != "groups"},
        "machine": machine_info(),
        "unavailable": {
            k: v
            for k, v in {
                "sketches": OURS_ERR,
                "pyarrow": PA_ERR,
                "datasketch": DATASKETCH_ERR,
                "datasketches": DS_ERR,
                "rbloom": RBLOOM_ERR,
            }.items()
            if v
        },
    }
    for lib, err in meta["unavailable"].items():
        print(f"note: {lib} unavailable ({err}); its rows are skipped", flush=True)
    print(f"building data: n={args.n:,} int64 and strings (seed {args.seed}) ...", flush=True)
    data = Data(args.n, args.seed, args.slow_n)
    meta["data"] = data.describe()
    print(f"  done in {data.build_s:.1f} s", flush=True)

    res = Results()
    probes: dict[str, Any] = {}
    for group in args.groups:
        print(f"[{group}]", flush=True)
        t0 = time.perf_counter()
        try:
            GROUP_FUNCS[group](data, res, args.repeat, probes)
        except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others
            res.rows.append(
                Row(
                    key=f"{group}.error",
                    group=group,
                    name=f"{group} group",
                    impl="-",
                    data="-",
                    input="-",
                    unit="-",
                    error=f"group failed: {type(exc).__name__}: {exc}",
                )
            )
            print(f"  group {group} failed: {type(exc).__name__}: {exc}", flush=True)
        meta.setdefault("group_seconds", {})[group] = round(time.perf_counter() - t0, 2)

    ratios = compute_ratios(res)
    targets = compute_targets(res)
    meta["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    print_report(res, ratios, targets, meta)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **meta,
        "string_input_probes": probes,
        "rows": [asdict(r) for r in res.rows],
        "ratios": ratios,
        "targets": targets,
    }
    out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({meta['elapsed_seconds']:.0f} s total)")
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
