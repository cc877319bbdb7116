"""Ratios against the baselines, PASS/MISS targets, and the printed report."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from benchmarks.sketch_bench.datasketches_format import DS_LG_K, DS_MERGE_SKETCHES
from benchmarks.sketch_bench.harness import (
    CMS_TOP_K,
    HLL_P,
    MERGE_SKETCHES,
    REPO_ROOT,
    Results,
    fmt_rate,
    fmt_ratio,
    fmt_value,
)

# (label, numerator key, denominator key, kind). "speedup" = num/den of items/s;
# "faster" for latency rows = den/num (how many times less time ours takes).
RATIOS = [
    ("HLL int64: ours / datasketch", "hll.int64.ours", "hll.int64.datasketch", "throughput"),
    (
        "HLL int64: ours / DataSketches hll",
        "hll.int64.ours",
        "hll.int64.datasketches",
        "throughput",
    ),
    (
        "HLL int64: ours / DataSketches cpc",
        "hll.int64.ours",
        "cpc.int64.datasketches",
        "throughput",
    ),
    ("HLL strings: ours / datasketch", "hll.strings.ours", "hll.strings.datasketch", "throughput"),
    (
        "HLL strings: ours / DataSketches hll",
        "hll.strings.ours",
        "hll.strings.datasketches",
        "throughput",
    ),
    (
        "HLL strings: ours / DataSketches cpc",
        "hll.strings.ours",
        "cpc.strings.datasketches",
        "throughput",
    ),
    (
        "HLL int64: ours update / our hash64 floor",
        "hll.int64.ours",
        "hash.int64.ours",
        "throughput",
    ),
    (
        "HLL strings: ours update / our hash64 floor",
        "hll.strings.ours",
        "hash.strings.ours",
        "throughput",
    ),
    (
        "CMS int64 top_k=0: ours / DataSketches cms",
        "cms0.int64.ours",
        "cms.int64.datasketches",
        "throughput",
    ),
    (
        "CMS strings top_k=0: ours / DataSketches cms",
        "cms0.strings.ours",
        "cms.strings.datasketches",
        "throughput",
    ),
    (
        f"CMS int64 top_k={CMS_TOP_K}: ours / DataSketches cms",
        f"cms{CMS_TOP_K}.int64.ours",
        "cms.int64.datasketches",
        "throughput",
    ),
    (
        f"CMS strings top_k={CMS_TOP_K}: ours / DataSketches cms",
        f"cms{CMS_TOP_K}.strings.ours",
        "cms.strings.datasketches",
        "throughput",
    ),
    (
        f"CMS int64 top_k={CMS_TOP_K}: ours / DataSketches frequent_items",
        f"cms{CMS_TOP_K}.int64.ours",
        "freq.int64.datasketches",
        "throughput",
    ),
    (
        f"CMS strings top_k={CMS_TOP_K}: ours / DataSketches frequent_strings",
        f"cms{CMS_TOP_K}.strings.ours",
        "freq.strings.datasketches",
        "throughput",
    ),
    (
        "Bloom update int64: ours / rbloom",
        "bloom-update.int64.ours",
        "bloom-update.int64.rbloom",
        "throughput",
    ),
    (
        "Bloom update strings: ours / rbloom",
        "bloom-update.strings.ours",
        "bloom-update.strings.rbloom",
        "throughput",
    ),
    (
        "Bloom contains int64: ours / rbloom",
        "bloom-contains.int64.ours",
        "bloom-contains.int64.rbloom",
        "throughput",
    ),
    (
        "Bloom contains strings: ours / rbloom",
        "bloom-contains.strings.ours",
        "bloom-contains.strings.rbloom",
        "throughput",
    ),
    (
        "Merge 1,000 HLL: DataSketches time / ours time",
        "merge.int64.ours",
        "merge.int64.datasketches",
        "latency",
    ),
    (
        "HLL estimate(): DataSketches time / ours time",
        "hll-estimate.int64.ours",
        "hll-estimate.int64.datasketches",
        "latency",
    ),
    (
        "CMS query int64: ours / DataSketches",
        "cms-query.int64.ours",
        "cms-query.int64.datasketches",
        "throughput",
    ),
    (
        "CMS query strings: ours / DataSketches",
        "cms-query.strings.ours",
        "cms-query.strings.datasketches",
        "throughput",
    ),
    *(
        (
            f"DS HLL lg{DS_LG_K} {d}: ours / DataSketches per-item",
            f"dshll.{d}.ours",
            f"dshll.{d}.datasketches",
            "throughput",
        )
        for d in ("int64", "strings")
    ),
    *(
        (
            f"DS HLL lg{DS_LG_K} {d}: ours DataSketchesHLL / ours HyperLogLog({DS_LG_K})",
            f"dshll.{d}.ours",
            f"hll12.{d}.ours",
            "throughput",
        )
        for d in ("int64", "strings")
    ),
    *(
        (
            f"Theta lg{DS_LG_K} {d}: ours / DataSketches per-item",
            f"theta.{d}.ours",
            f"theta.{d}.datasketches",
            "throughput",
        )
        for d in ("int64", "strings")
    ),
    (
        f"Merge {DS_MERGE_SKETCHES:,} DS HLL images: DataSketches time / ours time",
        "dshll-merge.int64.ours",
        "dshll-merge.int64.datasketches",
        "latency",
    ),
    (
        f"Merge {DS_MERGE_SKETCHES:,} Theta images: DataSketches time / ours time",
        "theta-merge.int64.ours",
        "theta-merge.int64.datasketches",
        "latency",
    ),
]


TARGETS = [
    ("HLL update int64 >= 100x datasketch", "hll.int64.ours", "hll.int64.datasketch", 100.0),
    ("HLL update int64 >= 5x DataSketches", "hll.int64.ours", "hll.int64.datasketches", 5.0),
    ("HLL update strings >= 2x DataSketches", "hll.strings.ours", "hll.strings.datasketches", 2.0),
    ("CMS update int64 >= 2x DataSketches", "cms0.int64.ours", "cms.int64.datasketches", 2.0),
    ("CMS update strings >= 2x DataSketches", "cms0.strings.ours", "cms.strings.datasketches", 2.0),
    (
        "Bloom update int64 >= rbloom bulk add",
        "bloom-update.int64.ours",
        "bloom-update.int64.rbloom",
        1.0,
    ),
    (
        "Bloom update strings >= rbloom bulk add",
        "bloom-update.strings.ours",
        "bloom-update.strings.rbloom",
        1.0,
    ),
    *(
        t
        for d in ("int64", "strings")
        for t in (
            (
                f"DataSketchesHLL({DS_LG_K}) update {d} >= 20x DataSketches per-item",
                f"dshll.{d}.ours",
                f"dshll.{d}.datasketches",
                20.0,
            ),
            (
                f"DataSketchesHLL({DS_LG_K}) update {d} >= 0.5x our HyperLogLog({DS_LG_K})",
                f"dshll.{d}.ours",
                f"hll12.{d}.ours",
                0.5,
            ),
            (
                f"ThetaSketch({DS_LG_K}) update {d} >= 20x DataSketches per-item",
                f"theta.{d}.ours",
                f"theta.{d}.datasketches",
                20.0,
            ),
        )
    ),
]

# (label, row key whose extra["agreement"] the group filled): estimates of one union
AGREEMENTS = [
    (
        f"Merge {DS_MERGE_SKETCHES:,} DS HLL images: estimate within 2% of DataSketches",
        "dshll-merge.int64.ours",
    ),
    (
        f"Merge {DS_MERGE_SKETCHES:,} Theta images: estimate within 1e-9 of DataSketches",
        "theta-merge.int64.ours",
    ),
]


MERGE_TARGET_MS = 10.0


def compute_ratios(res: Results) -> list[dict[str, Any]]:
    out = []
    for label, num, den, kind in RATIOS:
        a, b = res.get(num), res.get(den)
        if a is None or b is None:
            continue
        if kind == "throughput":
            med, best = a.median / b.median, a.best / b.best
        else:
            med, best = b.median / a.median, b.best / a.best
        out.append(
            {
                "label": label,
                "numerator": num,
                "denominator": den,
                "kind": kind,
                "ratio_median": med,
                "ratio_best": best,
            }
        )
    return out


def compute_targets(res: Results) -> list[dict[str, Any]]:
    out = []
    for label, num, den, need in TARGETS:
        a, b = res.get(num), res.get(den)
        if a is None or b is None:
            missing = [k for k, r in ((num, a), (den, b)) if r is None]
            out.append(
                {
                    "target": label,
                    "status": "N/A",
                    "required_ratio": need,
                    "detail": f"not measured: {', '.join(missing)}",
                }
            )
            continue
        ratio = a.median / b.median
        out.append(
            {
                "target": label,
                "status": "PASS" if ratio >= need else "MISS",
                "required_ratio": need,
                "ratio_median": ratio,
                "ratio_best": a.best / b.best,
                "detail": f"{fmt_ratio(ratio)} "
                f"({fmt_rate(a.median)} vs {fmt_rate(b.median)}, medians)",
            }
        )
    m = res.get("merge.int64.ours")
    label = f"Merge {MERGE_SKETCHES:,} HLL p{HLL_P} < {MERGE_TARGET_MS:g} ms"
    if m is None:
        out.append({"target": label, "status": "N/A", "detail": "not measured: merge.int64.ours"})
    else:
        out.append(
            {
                "target": label,
                "status": "PASS" if m.median < MERGE_TARGET_MS else "MISS",
                "required_ms": MERGE_TARGET_MS,
                "median_ms": m.median,
                "best_ms": m.best,
                "detail": f"{m.median:.2f} ms median, {m.best:.2f} ms best",
            }
        )
    for label, key in AGREEMENTS:
        row = res.get(key)
        agree = row.extra.get("agreement") if row is not None else None
        if not agree:
            out.append({"target": label, "status": "N/A", "detail": f"not measured: {key}"})
            continue
        rel, tol = agree["relative_difference"], agree["tolerance"]
        out.append(
            {
                "target": label,
                "status": "PASS" if rel <= tol else "MISS",
                **agree,
                "detail": f"relative difference {rel:.3g} (ours {agree['ours']:,.3f}, "
                f"DataSketches {agree['datasketches']:,.3f}); state equal: {agree['state_equal']}",
            }
        )
    return out


def print_report(
    res: Results, ratios: list[dict[str, Any]], targets: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    headers = ("group", "benchmark", "impl", "data", "median", "best", "input / notes")
    table = []
    for r in res.rows:
        if r.extra.get("alias_of"):
            continue
        if r.error:
            table.append((r.group, r.name, r.impl, r.data, "-", "-", r.error))
            continue
        notes = r.input + (f"; {r.note}" if r.note else "")
        table.append(
            (
                r.group,
                r.name,
                r.impl,
                r.data,
                fmt_value(r.median, r.unit),
                fmt_value(r.best, r.unit),
                notes,
            )
        )
    widths = [max(len(str(x[i])) for x in table + [headers]) for i in range(len(headers) - 1)]
    print()
    print(
        f"streamsketch sketch benchmark: n={meta['n']:,}, repeat={meta['repeat']} "
        f"(median and best of repeats), {meta['machine']['cpu_count']} CPUs, "
        f"Python {meta['machine']['python']}, NumPy {meta['machine']['versions'].get('numpy')}"
    )
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)) + "  " + headers[-1]
    print(line)
    print("-" * min(len(line) + 40, 200))
    last = None
    for row in table:
        if last is not None and row[0] != last:
            print()
        last = row[0]
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False))
            + "  "
            + str(row[-1])
        )
    if ratios:
        print("\nRatios (from this run; medians, best-of-repeats in brackets)")
        lw = max(len(r["label"]) for r in ratios)
        for r in ratios:
            med, best = fmt_ratio(r["ratio_median"]), fmt_ratio(r["ratio_best"])
            print(f"  {r['label'].ljust(lw)}  {med:>9}  [{best}]")
    print("\nTargets (informational; never fail the run)")
    for t in targets:
        print(f"  {t['status']:<4}  {t['target']}: {t['detail']}")


def git_commit() -> str | None:
    """The checkout's commit, if it is a git checkout with one (else None)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit):
        return commit
    return None  # e.g. a repository without commits yet


def machine_info() -> dict[str, Any]:
    versions = {}
    for dist in ("numpy", "pyarrow", "datasketch", "datasketches", "rbloom", "streamsketch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    commit = git_commit()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
    }
