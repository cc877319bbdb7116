"""Targets, the update profile and the printed report of the quantile benchmark."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.quantile_bench.ceilings import PHASES
from benchmarks.quantile_bench.harness import MERGE_MS, QS, UPDATE_FACTOR, Report

#: the row the update goal is judged on: the cells mapping, NumPy input
GOAL_ROW = "update.ours.cells.numpy"
# rows also set against the fastest baseline in the targets (ours, then ceilings)
RATIO_ROWS = (
    "update.ours.cells.numpy",
    "update.ours.cells.arrow",
    "update.ours.numpy",
    "update.ours.arrow",
    "ceiling.one_pass+add_at",
    "ceiling.one_pass+lookup+add_at",
    "ceiling.one_pass+bincount",
    "ceiling.add_at",
    "ceiling.bincount",
    "ceiling.one_pass",
    "ceiling.read",
)
BASELINES = ("update.ddsketch.per_item", "update.kll.batch", "update.kll.per_item")


def targets(rep: Report) -> list[dict[str, Any]]:
    out = []
    ours = rep.median(GOAL_ROW)
    known = {k: v for k in BASELINES if (v := rep.median(k))}
    if ours and known:
        fastest = max(known, key=lambda k: known[k])
        ratio = ours / known[fastest]
        out.append(
            {
                "target": f"update >= {UPDATE_FACTOR:g}x the fastest baseline ({GOAL_ROW})",
                "status": "PASS" if ratio >= UPDATE_FACTOR else "MISS",
                "measured": ratio,
                "detail": f"{ratio:.1f}x {fastest} "
                f"({ours:,.0f} vs {known[fastest]:,.0f} values/s); "
                + ", ".join(f"{ours / v:.1f}x {k}" for k, v in known.items()),
            }
        )
        budget = 1e9 / (UPDATE_FACTOR * known[fastest])
        base_best = rep.best(fastest) or math.nan
        for key in RATIO_ROWS:
            value = rep.median(key)
            if value is None:
                continue
            ratio = value / known[fastest]
            best = (rep.best(key) or math.nan) / base_best
            out.append(
                {
                    "target": f"{key} >= {UPDATE_FACTOR:g}x {fastest}",
                    "status": "PASS" if ratio >= UPDATE_FACTOR else "MISS",
                    "measured": ratio,
                    "measured_best": best,
                    "detail": f"{ratio:.1f}x, best to best {best:.1f}x ({value:,.0f} values/s, "
                    f"{1e9 / value:.2f} ns/value; the goal leaves {budget:.2f} ns/value)",
                }
            )
    else:
        out.append({"target": "update vs baselines", "status": "N/A", "detail": "not measured"})
    for key, mapping in (("merge.ours.union", "log"), ("merge.ours.cells.union", "cells")):
        merge = rep.median(key)
        extra = ""
        if mapping == "log" and merge is not None:
            extra = f", repeated merge {rep.median('merge.ours.loop') or math.nan:.1f} ms"
        out.append(
            {
                "target": f"merge of 1,000 sketches < {MERGE_MS:g} ms ({mapping} mapping)",
                "status": "N/A" if merge is None else ("PASS" if merge < MERGE_MS else "MISS"),
                "measured": merge,
                "detail": "not measured" if merge is None else f"union {merge:.1f} ms{extra}",
            }
        )
    return out


def profile(rep: Report) -> dict[str, float]:
    """ns per value of each phase of our (log mapping) update, from the best of the
    ``profile.*`` rows (the best: a busy machine slows the phases unevenly, and the rest
    is a difference); then the cells mapping's counting pass and update."""
    ns = {}
    for key in ("update.ours.numpy", *(f"profile.ours.{k}" for k in PHASES)):
        value = rep.best(key)
        if value is None:
            return {}
        ns[key] = 1e9 / value
    out = {f"{k.removeprefix('profile.ours.')}": ns[f"profile.ours.{k}"] for k in PHASES[:-1]}
    parts = sum(out.values())
    out["range and decode (tally - the above)"] = ns["profile.ours.tally"] - parts
    out["assemble and merge (update - tally)"] = ns["update.ours.numpy"] - ns["profile.ours.tally"]
    out["update"] = ns["update.ours.numpy"]
    for key, label in (("profile.ours.cells.tally", "cells: tally"), (GOAL_ROW, "cells: update")):
        value = rep.best(key)
        if value:
            out[label] = 1e9 / value
    return out


def print_report(rep: Report, meta: dict[str, Any], quality: dict[str, Any],
                 goals: list[dict[str, Any]]) -> None:
    print(f"\n{'row':<34} {'median':>20} {'best':>20} {'ns/value':>9}  what")
    for row in rep.rows:
        if "error" in row:
            print(f"{row['key']:<34} {row['error']}")
            continue
        unit = row["unit"]
        per = f"{1e9 / row['median']:9.2f}" if unit == "values/s" else " " * 9
        print(
            f"{row['key']:<34} {row['median']:>11,.1f} {unit:<8} {row['best']:>11,.1f} "
            f"{unit:<8} {per}  {row['what']}"
        )
    if meta["profile"]:
        print("\nwhere our update's time goes (ns per value, best of the repeats)")
        for phase, ns in meta["profile"].items():
            print(f"  {phase:<44} {ns:6.2f}")
    print("\nquality (max relative error of the quantiles at " + ", ".join(map(str, QS)) + ")")
    for lib, q in quality.items():
        print(f"  {lib:<10} " + ", ".join(f"{k}={v:.4g}" for k, v in q.items()))
    print("\ntargets (informational)")
    for goal in goals:
        print(f"  {goal['status']:<4} {goal['target']}: {goal['detail']}")
