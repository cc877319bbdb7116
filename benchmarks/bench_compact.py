#!/usr/bin/env python
"""Small sketches stay small: memory, grouped builds and unions, against a baseline tree.

Run from the repository root::

    python -m benchmarks.bench_compact              # full run, a few minutes on 2 cores
    python -m benchmarks.bench_compact --quick      # smaller counts, for a smoke run
    python -m benchmarks.bench_compact --readme     # also regenerate the figures section
                                                    # of benchmarks/README.md from the JSON

Every figure is measured in the same run. Each measurement runs in its own child
process that imports either this tree's ``sketches`` or the baseline's (``--baseline``,
default ``main``, exported with ``git archive`` into a temporary directory), so both
are timed on the same machine, the same data and the same load.

* ``memory``: resident memory (RSS growth of the child, after ``gc``) of ``--sketches``
  sketches of each kind held at once: HyperLogLog p14, Count-Min epsilon 0.001 delta
  0.01 top_k 20, Bloom filter capacity 100,000 at 1 %, each fed 5-50 strings. The
  baseline's dense sketches would need ~15 GB at full size, so the baseline builds
  ``--baseline-sample`` of each kind and the total is extrapolated from them (marked
  as such).
* ``from_groups``: one grouped build per kind over ``--rows`` strings (a pyarrow
  StringArray) in ``--groups`` groups, wall time and the child's peak RSS.
* ``union``: ``sketches.union`` of ``--union`` small HyperLogLogs and of as many small
  Count-Min sketches (5-50 strings each), the building not timed.
* ``dense``: update throughput of a fresh sketch over ``--dense-n`` int64 values
  (HyperLogLog p14, Count-Min top_k 0, Bloom filter sized for the data): the two
  trees alternate for ``--dense-rounds`` rounds of 3 updates each, and the best of
  all is kept, so a change of load during the run does not favour either.
* ``bench_sketches``: this tree's ``benchmarks/bench_sketches.py --only hll``, whose
  targets include HLL p14 int64 >= 5x Apache DataSketches on the same data.

The exit code is 0 whenever the benchmark ran; missed goals print as ``MISS``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
DEFAULT_OUT = _HERE / "results" / "compact.json"
README = _HERE / "README.md"
BEGIN, END = "<!-- bench_compact:begin -->", "<!-- bench_compact:end -->"
PARAMS: dict[str, dict[str, Any]] = {
    "hll": {"precision": 14},
    "cms": {"epsilon": 0.001, "delta": 0.01, "top_k": 20},
    "bloom": {"capacity": 100_000, "error_rate": 0.01},
}
CLASSES = {"hll": "HyperLogLog", "cms": "CountMinSketch", "bloom": "BloomFilter"}
GOAL_MEMORY_MB = 300.0
GOAL_UNION_S = 1.0


# --------------------------------------------------------------------------- #
# Child-process work (imports whichever ``sketches`` is first on sys.path)    #
# --------------------------------------------------------------------------- #


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _small_inputs(count: int, seed: int) -> list[list[str]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 51, size=count)
    ids = rng.integers(0, 1_000_000, size=int(sizes.sum())).tolist()
    out, at = [], 0
    for size in sizes.tolist():
        out.append([f"user-{i}" for i in ids[at : at + size]])
        at += size
    return out


def _warm_up(sk: Any) -> None:
    """Import everything lazily imported (pyarrow, pandas) before measuring."""
    for kind, cls in CLASSES.items():
        getattr(sk, cls)(**PARAMS[kind]).update(["warm", "up"]).to_bytes()


def work_memory(count: int, seed: int) -> dict[str, Any]:
    import sketches as sk

    _warm_up(sk)
    inputs = {kind: _small_inputs(count, seed + i) for i, kind in enumerate(CLASSES)}
    held: list[Any] = []
    out: dict[str, Any] = {"count": count}
    gc.collect()
    before = _rss()
    for kind, cls in CLASSES.items():
        start = _rss()
        t0 = time.perf_counter()
        held.extend(getattr(sk, cls)(**PARAMS[kind]).update(v) for v in inputs[kind])
        build_s = time.perf_counter() - t0
        gc.collect()
        out[kind] = {"rss_bytes": _rss() - start, "build_s": build_s}
    out["total_rss_bytes"] = _rss() - before
    out["held"] = len(held)
    return out


def work_from_groups(kind: str, rows: int, groups: int, seed: int, repeat: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    import sketches as sk

    _warm_up(sk)
    rng = np.random.default_rng(seed)
    values = pa.array([f"user-{i}" for i in rng.integers(0, 1_000_000, size=rows).tolist()])
    codes = rng.integers(0, groups, size=rows)
    cls = getattr(sk, CLASSES[kind])
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        built = cls.from_groups(codes, values, groups, **PARAMS[kind])
        times.append(time.perf_counter() - t0)
        assert len(built) == groups
        del built
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"times_s": times, "best_s": min(times), "peak_rss_bytes": peak}


def work_union(kind: str, count: int, seed: int) -> dict[str, Any]:
    import sketches as sk

    _warm_up(sk)
    cls = getattr(sk, CLASSES[kind])
    parts = [cls(**PARAMS[kind]).update(v) for v in _small_inputs(count, seed)]
    times = []
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        merged = sk.union(*parts)
        times.append(time.perf_counter() - t0)
    result = merged.estimate() if kind == "hll" else merged.total
    return {"times_s": times, "best_s": min(times), "result": result}


def work_dense(kind: str, n: int, seed: int) -> dict[str, Any]:
    import numpy as np

    import sketches as sk

    _warm_up(sk)
    data = np.random.default_rng(seed).integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    every: dict[str, dict[str, Any]] = {
        "hll": {"precision": 14},
        "cms": {"epsilon": 0.001, "delta": 0.01},
        "bloom": {"capacity": n, "error_rate": 0.01},
    }
    params = every[kind]
    cls = getattr(sk, CLASSES[kind])
    times = []
    for _ in range(3):
        fresh = cls(**params)
        gc.collect()
        t0 = time.perf_counter()
        fresh.update(data)
        times.append(time.perf_counter() - t0)
    return {"times_s": times, "items_per_s": n / min(times)}


WORK: dict[str, Callable[..., dict[str, Any]]] = {
    "memory": work_memory,
    "from_groups": work_from_groups,
    "union": work_union,
    "dense": work_dense,
}


# --------------------------------------------------------------------------- #
# Parent: trees, children, report                                             #
# --------------------------------------------------------------------------- #


def export_baseline(ref: str, into: Path) -> str:
    """``git archive <ref> sketches`` into ``into``; returns the commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", ref], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = into / "baseline.tar"
    with open(archive, "wb") as fh:
        subprocess.run(
            ["git", "archive", commit, "sketches"], cwd=_REPO_ROOT, stdout=fh, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return commit


def run_child(tree: Path, task: str, **kwargs: Any) -> dict[str, Any]:
    """Run one task in a child process importing ``sketches`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    spec = json.dumps({"task": task, "kwargs": kwargs})
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", spec],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench_sketches(n: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_sketches",
        "--only",
        "hll",
        "--n",
        str(n),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=_REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    doc = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["key"]: r for r in doc["rows"]}
    hll = rows.get("hll.int64.ours", {})
    return {
        "n": n,
        "hll_int64_ours_items_per_s": hll.get("median"),
        "hll_int64_datasketches_items_per_s": rows.get("hll.int64.datasketches", {}).get("median"),
        "targets": [t for t in doc["targets"] if "HLL update int64" in t["target"]],
    }


def _mb(b: float) -> float:
    return b / 1e6


def build_report(res: dict[str, Any]) -> list[str]:
    """Markdown lines of the figures (printed, and written into README.md with --readme)."""
    a = res["args"]
    ours, base = res["ours"], res["baseline"]
    lines = [
        f"Measured {res['created_utc']} on {res['machine']['cpu_count']} CPUs "
        f"(load average {res['machine']['loadavg_at_start'][0]:.2f} at start, "
        f"{res['machine']['loadavg_at_end'][0]:.2f} at end), this tree at "
        f"`{(res['machine']['git_commit'] or '?')[:10]}` against `{a['baseline']}` at "
        f"`{res['baseline_commit'][:10]}`, by `python -m benchmarks.bench_compact"
        f"{' --quick' if a['quick'] else ''}`.",
        "",
        f"**Memory** of {a['sketches']:,} sketches of each kind held at once, each fed 5-50 "
        "strings (RSS growth of the process):",
        "",
        "| kind | this tree, total | per sketch | baseline per sketch | baseline total |",
        "| --- | --- | --- | --- | --- |",
    ]
    mem, bmem = ours["memory"], base["memory"]
    total_base = 0.0
    for kind in CLASSES:
        if "error" in mem or "error" in bmem:
            break
        per = mem[kind]["rss_bytes"] / mem["count"]
        bper = bmem[kind]["rss_bytes"] / bmem["count"]
        total_base += bper * a["sketches"]
        lines.append(
            f"| {CLASSES[kind]} {PARAMS[kind]} | {_mb(mem[kind]['rss_bytes']):.1f} MB "
            f"| {per / 1024:.2f} KiB | {bper / 1024:.1f} KiB "
            f"| ~{_mb(bper * a['sketches']):,.0f} MB (extrapolated from {bmem['count']:,}) |"
        )
    if "error" not in mem and "error" not in bmem:
        total = mem["total_rss_bytes"]
        status = "PASS" if _mb(total) <= GOAL_MEMORY_MB * a["sketches"] / 20_000 else "MISS"
        lines.append(
            f"| all {3 * a['sketches']:,} | **{_mb(total):.1f} MB** "
            f"| {total / (3 * mem['count']) / 1024:.2f} KiB | | ~{_mb(total_base):,.0f} MB |"
        )
        lines += ["", f"{status}: goal <= {GOAL_MEMORY_MB:.0f} MB for 60,000 (<= 5 KiB each)."]
    lines += [
        "",
        f"**`from_groups`** over {a['rows']:,} strings in {a['groups']:,} groups "
        "(best of the timed repeats; peak RSS of the process):",
        "",
        "| kind | this tree | peak RSS | baseline | peak RSS | speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in CLASSES:
        o, b = ours["from_groups"][kind], base["from_groups"][kind]
        if "error" in o or "error" in b:
            lines.append(f"| {CLASSES[kind]} | {o.get('error', '')} | | {b.get('error', '')} | | |")
            continue
        lines.append(
            f"| {CLASSES[kind]} | {o['best_s']:.2f} s | {_mb(o['peak_rss_bytes']):,.0f} MB "
            f"| {b['best_s']:.2f} s | {_mb(b['peak_rss_bytes']):,.0f} MB "
            f"| {b['best_s'] / o['best_s']:.1f}x |"
        )
    lines += [
        "",
        f"**Union** of {a['union']:,} small sketches (5-50 strings each; best of 3):",
        "",
        "| kind | this tree | baseline | goal |",
        "| --- | --- | --- | --- |",
    ]
    for kind in ("hll", "cms"):
        o, b = ours["union"][kind], base["union"][kind]
        if "error" in o:
            lines.append(f"| {CLASSES[kind]} | {o['error']} | | |")
            continue
        status = "PASS" if o["best_s"] < GOAL_UNION_S else "MISS"
        btxt = b.get("error") or f"{b['best_s'] * 1000:.0f} ms"
        lines.append(
            f"| {CLASSES[kind]} | {o['best_s'] * 1000:.0f} ms | {btxt} "
            f"| {status} < {GOAL_UNION_S:.0f} s |"
        )
    lines += [
        "",
        f"**Dense update** of a fresh sketch over {a['dense_n']:,} int64 (best of "
        f"{3 * a['dense_rounds']}, the trees alternating):",
        "",
        "| kind | this tree | baseline | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for kind in CLASSES:
        o, b = ours["dense"][kind], base["dense"][kind]
        if "error" in o or "error" in b:
            continue
        lines.append(
            f"| {CLASSES[kind]} | {o['items_per_s'] / 1e6:.1f} M/s "
            f"| {b['items_per_s'] / 1e6:.1f} M/s | {o['items_per_s'] / b['items_per_s']:.2f} |"
        )
    bs = res.get("bench_sketches", {})
    if bs and "error" not in bs:
        rate = bs["hll_int64_ours_items_per_s"]
        lines += [
            "",
            f"`bench_sketches --only hll --n {bs['n']:,}` in the same run: HLL p14 int64 "
            f"{rate / 1e6:.1f} M/s ({'PASS' if rate >= 100e6 else 'MISS'} >= 100 M/s).",
        ]
        lines += [f"{t['status']}: {t['target']} ({t['detail']})." for t in bs["targets"]]
    elif bs:
        lines += ["", f"`bench_sketches --only hll` failed: {bs['error']}"]
    return lines


def write_readme(lines: list[str]) -> None:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    p.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    p.add_argument("--sketches", type=int, default=None, help="small sketches per kind (20,000)")
    p.add_argument("--baseline-sample", type=int, default=300, help="baseline sketches per kind")
    p.add_argument("--rows", type=int, default=None, help="from_groups rows (1,000,000)")
    p.add_argument("--groups", type=int, default=None, help="from_groups groups (20,000)")
    p.add_argument("--union", type=int, default=None, help="sketches per union (10,000)")
    p.add_argument("--dense-n", type=int, default=None, help="dense update items (10,000,000)")
    p.add_argument(
        "--dense-rounds", type=int, default=3, help="alternating rounds of the dense part (3)"
    )
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path")
    p.add_argument("--readme", action="store_true", help="rewrite the figures in README.md")
    args = p.parse_args(argv)
    full = {"sketches": 20_000, "rows": 1_000_000, "groups": 20_000, "union": 10_000}
    quick = {"sketches": 2_000, "rows": 100_000, "groups": 2_000, "union": 1_000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dense_n is None:
        args.dense_n = 1_000_000 if args.quick else 10_000_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        import sketches

        spec = json.loads(args.worker)
        result = WORK[spec["task"]](**spec["kwargs"])
        print(json.dumps({**result, "sketches_module": sketches.__file__}))
        return 0
    started = time.perf_counter()
    res: dict[str, Any] = {
        "benchmark": "bench_compact",
        "schema_version": 1,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "worker"},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg()),
            "git_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True
            ).stdout.strip()
            or None,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        res["baseline_commit"] = export_baseline(args.baseline, Path(tmp))
        trees = {"ours": _REPO_ROOT, "baseline": Path(tmp) / "tree"}
        for name, tree in trees.items():
            print(f"[{name}] {tree if name == 'ours' else args.baseline}", flush=True)
            count = args.sketches if name == "ours" else min(args.baseline_sample, args.sketches)
            out: dict[str, Any] = {"memory": run_child(tree, "memory", count=count, seed=args.seed)}
            print(f"  memory: {out['memory']}", flush=True)
            out["from_groups"] = {}
            for kind in CLASSES:
                out["from_groups"][kind] = run_child(
                    tree,
                    "from_groups",
                    kind=kind,
                    rows=args.rows,
                    groups=args.groups,
                    seed=args.seed,
                    repeat=3 if name == "ours" else 1,
                )
                print(f"  from_groups {kind}: {out['from_groups'][kind]}", flush=True)
            out["union"] = {
                kind: run_child(tree, "union", kind=kind, count=args.union, seed=args.seed)
                for kind in ("hll", "cms")
            }
            print(f"  union: {out['union']}", flush=True)
            res[name] = out
        # Dense throughput is compared in alternating rounds, so that a change of the
        # machine's load between the two trees does not pass for a difference.
        for name in trees:
            res[name]["dense"] = {kind: {"times_s": [], "items_per_s": 0.0} for kind in CLASSES}
        for round_no in range(args.dense_rounds):
            for name, tree in trees.items():
                for kind in CLASSES:
                    got = run_child(tree, "dense", kind=kind, n=args.dense_n, seed=args.seed)
                    into = res[name]["dense"][kind]
                    if "error" in got:
                        into["error"] = got["error"]
                        continue
                    into["times_s"] += got["times_s"]
                    into["items_per_s"] = max(into["items_per_s"], got["items_per_s"])
            print(f"  dense round {round_no + 1}/{args.dense_rounds} done", flush=True)
        for name in trees:
            print(f"  dense {name}: {res[name]['dense']}", flush=True)
    print("[bench_sketches --only hll]", flush=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res["bench_sketches"] = run_bench_sketches(
        args.dense_n, out_path.with_name(out_path.stem + "-bench_sketches-hll.json")
    )
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    lines = build_report(res)
    res["report_markdown"] = lines
    out_path.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print("\n" + "\n".join(lines))
    print(f"\nwrote {out_path} ({res['elapsed_seconds']:.0f} s)")
    if args.readme:
        write_readme(lines)
        print(f"rewrote the figures in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
