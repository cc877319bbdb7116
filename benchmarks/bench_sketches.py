#!/usr/bin/env python
"""Throughput benchmark: ``sketches`` (pure NumPy) against established sketch libraries.

Run from the repository root::

    python -m benchmarks.bench_sketches            # full run, 10 M items, 3 repeats
    python -m benchmarks.bench_sketches --quick    # smoke run, 1 M items, 1 repeat
    python benchmarks/bench_sketches.py --only hll,merge --out results-hll.json

Every number printed or written is measured in the same run; ratios and the
PASS/MISS lines are computed from those measurements.  A missed target is
reported, never raised: the exit code is 0 whenever the benchmark ran.

Groups (``--only``): hash, hll, cms, bloom, merge, estimate, memory.

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
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_sketches.py`` without an install
    sys.path.append(str(_REPO_ROOT))

GROUPS = ("hash", "hll", "cms", "bloom", "merge", "estimate", "memory")
DEFAULT_OUT = _HERE / "results" / "sketches.json"

HLL_P = 14
CMS_EPSILON = 0.001
CMS_DELTA = 0.01
CMS_TOP_K = 20
FREQ_LG_MAX_K = 10
BLOOM_FPR = 0.01
MERGE_SKETCHES = 1000
MERGE_ITEMS_EACH = 10_000
ESTIMATE_COPIES = 200
QUERY_N = 1_000_000
FPR_PROBE_N = 1_000_000
STRING_DISTINCT = 1_000_000
PROBE_N = 1_000_000


# --------------------------------------------------------------------------- #
# Optional imports                                                            #
# --------------------------------------------------------------------------- #


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        return None, f"{type(exc).__name__}: {exc}"


def _load_ours() -> tuple[Any, str | None]:
    mod, err = _try_import("sketches")
    if mod is None:
        return None, err
    try:
        mod.HyperLogLog(HLL_P).update(np.array([1, 2], dtype=np.int64))
    except Exception as exc:  # noqa: BLE001
        return (
            None,
            f"sketches imported but HyperLogLog is not usable yet: {type(exc).__name__}: {exc}",
        )
    return mod, None


pa, _PA_ERR = _try_import("pyarrow")
datasketch, _DATASKETCH_ERR = _try_import("datasketch")
ds, _DS_ERR = _try_import("datasketches")
rbloom, _RBLOOM_ERR = _try_import("rbloom")
ours, _OURS_ERR = _load_ours()


# --------------------------------------------------------------------------- #
# Results                                                                     #
# --------------------------------------------------------------------------- #


@dataclass
class Row:
    key: str  # stable id used for ratios, e.g. "hll.int64.ours"
    group: str
    name: str
    impl: str
    data: str
    input: str
    unit: str  # "items/s", "ms", "us/call", "MiB"
    items: int = 0  # items processed per timed call (throughput rows)
    times_s: list[float] = field(default_factory=list)
    median: float | None = None  # in ``unit``
    best: float | None = None  # in ``unit``; the best of the repeats
    note: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        status = row.error if row.error else f"{_fmt_value(row.median, row.unit)}"
        print(f"  [{row.group}] {row.name} / {row.impl} / {row.data}: {status}", flush=True)
        return row

    def get(self, key: str) -> Row | None:
        for row in self.rows:
            if row.key == key and row.error is None and row.median is not None:
                return row
        return None


# --------------------------------------------------------------------------- #
# Timing helpers                                                              #
# --------------------------------------------------------------------------- #


def _time_calls(
    fn: Callable[[Any], Any], setup: Callable[[], Any] | None, repeat: int
) -> list[float]:
    """Wall time of ``fn(setup())`` ``repeat`` times; setup is never timed; GC off while timing."""
    times = []
    for _ in range(repeat):
        state = setup() if setup is not None else None
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn(state)
            t1 = time.perf_counter()
        finally:
            if was_enabled:
                gc.enable()
        times.append(t1 - t0)
        del state
    return times


def _consume(iterator: Any) -> None:
    collections.deque(iterator, maxlen=0)


def measure_throughput(
    results: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    input_desc: str,
    items: int,
    fn: Callable[[Any], Any],
    setup: Callable[[], Any] | None,
    repeat: int,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Row:
    row = Row(
        key=key,
        group=group,
        name=name,
        impl=impl,
        data=data,
        input=input_desc,
        unit="items/s",
        items=items,
        note=note,
        extra=dict(extra or {}),
    )
    try:
        times = _time_calls(fn, setup, repeat)
        row.times_s = times
        row.median = items / statistics.median(times)
        row.best = items / min(times)
    except Exception as exc:  # noqa: BLE001 - record and go on
        row.error = f"{type(exc).__name__}: {exc}"
    return results.add(row)


def skipped(
    results: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    reason: str,
    unit: str = "items/s",
) -> Row:
    return results.add(
        Row(
            key=key,
            group=group,
            name=name,
            impl=impl,
            data=data,
            input="-",
            unit=unit,
            error=f"skipped: {impl} unavailable",
            extra={"reason": reason},
        )
    )


# --------------------------------------------------------------------------- #
# Data                                                                        #
# --------------------------------------------------------------------------- #


class Data:
    """Seeded inputs, built once; baseline-friendly views are built lazily and never timed."""

    def __init__(self, n: int, seed: int, slow_n: int) -> None:
        t0 = time.perf_counter()
        self.n = n
        self.seed = seed
        self.slow_n = min(slow_n, n)
        rng = np.random.default_rng(seed)
        info = np.iinfo(np.int64)
        self.ints = rng.integers(info.min, info.max, size=n, dtype=np.int64, endpoint=True)
        # 1 M distinct "user-<id>" strings; ids log-uniform in [1e5, 1e11) so lengths spread
        # over 11-16 bytes; the n values are uniform draws from that pool.
        raw_ids = np.floor(10.0 ** rng.uniform(5.0, 11.0, size=STRING_DISTINCT * 6 // 5))
        pool_ids = np.unique(raw_ids.astype(np.int64))
        rng.shuffle(pool_ids)
        pool_ids = pool_ids[:STRING_DISTINCT]
        pool = np.array([f"user-{i}" for i in pool_ids.tolist()], dtype=object)
        idx = rng.integers(0, len(pool), size=n)
        self.str_obj = pool[idx]  # object array sharing the pool's str objects
        self.str_arrow = (
            pa.array(pool.tolist(), type=pa.string()).take(pa.array(idx)) if pa else None
        )
        self.distinct_strings = int(np.unique(idx).size)
        lengths = np.array([len(s) for s in pool.tolist()])
        self.string_len = (int(lengths.min()), float(lengths.mean()), int(lengths.max()))
        self.build_s = time.perf_counter() - t0
        self._lists: dict[str, list[Any]] = {}

    def int_list(self) -> list[int]:
        if "int" not in self._lists:
            self._lists["int"] = self.ints.tolist()
        return self._lists["int"]

    def str_list(self) -> list[str]:
        if "str" not in self._lists:
            self._lists["str"] = self.str_obj.tolist()
        return self._lists["str"]

    def strings(self, form: str) -> Any:
        return self.str_arrow if form == "arrow" else self.str_obj

    def describe(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "seed": self.seed,
            "int64": "uniform random over the full int64 range (numpy default_rng)",
            "strings": {
                "format": "'user-<id>'",
                "distinct_in_pool": STRING_DISTINCT,
                "distinct_present": self.distinct_strings,
                "length_bytes_min_mean_max": list(self.string_len),
                "distribution": "uniform draws from the pool",
                "forms": ["numpy object array", "pyarrow StringArray"]
                if pa
                else ["numpy object array"],
            },
            "slow_subset_n": self.slow_n,
            "build_seconds": round(self.build_s, 3),
        }


FORM_LABEL = {"arrow": "pyarrow StringArray", "object": "numpy object array"}


def pick_string_form(
    data: Data, op: Callable[[Any], Any], probes: dict[str, Any], label: str
) -> str:
    """Time ``op`` once on each string form (first ``PROBE_N`` items) and return the faster one."""
    forms = ["object"] + (["arrow"] if data.str_arrow is not None else [])
    m = min(PROBE_N, data.n)
    rates: dict[str, Any] = {}
    for form in forms:
        sample = data.strings(form)[:m]
        try:
            op(data.strings(form)[:1000])  # warm-up
            t = min(_time_calls(lambda _s, s=sample: op(s), None, 1))
            rates[form] = m / t
        except Exception as exc:  # noqa: BLE001
            rates[form] = f"{type(exc).__name__}: {exc}"
    usable = {f: r for f, r in rates.items() if isinstance(r, float)}
    chosen = max(usable, key=usable.get) if usable else forms[0]
    probes[label] = {"probe_items": m, "items_per_s": rates, "chosen": chosen}
    return chosen


def _form_desc(form: str, probes: dict[str, Any], label: str) -> str:
    p = probes.get(label, {})
    rates = p.get("items_per_s", {})
    others = ", ".join(
        f"{f} {_fmt_rate(r)}" if isinstance(r, float) else f"{f} failed" for f, r in rates.items()
    )
    return f"{FORM_LABEL[form]} (fastest; probe on {p.get('probe_items', 0):,}: {others})"


# --------------------------------------------------------------------------- #
# Adapters for our package (tolerant of small API differences)                 #
# --------------------------------------------------------------------------- #


def our_hll() -> Any:
    return ours.HyperLogLog(HLL_P)


def our_cms(top_k: int) -> Any:
    return ours.CountMinSketch(epsilon=CMS_EPSILON, delta=CMS_DELTA, top_k=top_k)


def our_cms_dims(cms: Any) -> tuple[int, int]:
    width = getattr(cms, "width", None)
    depth = getattr(cms, "depth", None)
    if not isinstance(width, (int, np.integer)) or not isinstance(depth, (int, np.integer)):
        width = math.ceil(math.e / CMS_EPSILON)
        depth = math.ceil(math.log(1.0 / CMS_DELTA))
    return int(width), int(depth)


def our_bloom(capacity: int) -> Any:
    return ours.BloomFilter(capacity, BLOOM_FPR)


def our_union(sks: list[Any]) -> tuple[Callable[[list[Any]], Any], str]:
    if hasattr(ours, "union"):
        return (lambda s: ours.union(*s)), "sketches.union(*sketches)"
    return our_repeated_merge, "repeated .merge() into an empty sketch"


def our_repeated_merge(sks: list[Any]) -> Any:
    acc = our_hll()
    for sk in sks:
        acc.merge(sk)
    return acc


def our_copy(sk: Any) -> Any:
    cls = type(sk)
    if hasattr(sk, "to_bytes") and hasattr(cls, "from_bytes"):
        return cls.from_bytes(sk.to_bytes())
    import copy

    return copy.deepcopy(sk)


def ds_hll_batch_supported() -> str | None:
    """Return a description if this datasketches build accepts an array in hll_sketch.update."""
    for arg, desc in ((np.arange(4, dtype=np.int64), "numpy int64 array"), ([1, 2, 3], "list")):
        try:
            sk = ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)
            sk.update(arg)
            if sk.get_estimate() > 1.5:
                return desc
        except Exception:  # noqa: BLE001
            pass
    return None


# --------------------------------------------------------------------------- #
# Groups                                                                      #
# --------------------------------------------------------------------------- #


def group_hash(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "hash"
    if ours is None:
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"hash.{d}.ours",
                group=g,
                name="hash64",
                impl="sketches",
                data=d,
                reason=_OURS_ERR,
            )
        return
    ours.hash64(data.ints[:1000])
    measure_throughput(
        res,
        key="hash.int64.ours",
        group=g,
        name="hash64",
        impl="sketches",
        data="int64",
        input_desc="numpy int64 array",
        items=data.n,
        fn=lambda _: ours.hash64(data.ints),
        setup=None,
        repeat=repeat,
    )
    # The floor is measured on both string forms; the faster one is the "strings" row.
    rows = {}
    for form in ("object", "arrow"):
        if form == "arrow" and data.str_arrow is None:
            continue
        s = data.strings(form)
        try:
            ours.hash64(s[:1000])
        except Exception:  # noqa: BLE001 - recorded by the measured row below
            pass
        rows[form] = measure_throughput(
            res,
            key=f"hash.strings-{form}.ours",
            group=g,
            name="hash64",
            impl="sketches",
            data=f"strings ({form})",
            input_desc=FORM_LABEL[form],
            items=data.n,
            fn=lambda _, s=s: ours.hash64(s),
            setup=None,
            repeat=repeat,
        )
    ok = {f: r for f, r in rows.items() if r.error is None}
    if ok:
        best_form = max(ok, key=lambda f: ok[f].median)
        best = ok[best_form]
        probes["hash64 strings"] = {
            "chosen": best_form,
            "items_per_s": {f: r.median for f, r in ok.items()},
        }
        res.rows.append(
            Row(
                **{
                    **asdict(best),
                    "key": "hash.strings.ours",
                    "data": "strings",
                    "note": f"best form: {FORM_LABEL[best_form]}",
                    "extra": {"alias_of": best.key},
                }
            )
        )


def group_hll(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "hll"
    name = f"HLL p{HLL_P} update"
    # ours
    if ours is None:
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"hll.{d}.ours",
                group=g,
                name=name,
                impl="sketches",
                data=d,
                reason=_OURS_ERR,
            )
    else:
        our_hll().update(data.ints[:1000])
        measure_throughput(
            res,
            key="hll.int64.ours",
            group=g,
            name=name,
            impl="sketches",
            data="int64",
            input_desc="numpy int64 array",
            items=data.n,
            fn=lambda sk: sk.update(data.ints),
            setup=our_hll,
            repeat=repeat,
        )
        form = pick_string_form(data, lambda s: our_hll().update(s), probes, "hll update strings")
        s = data.strings(form)
        measure_throughput(
            res,
            key="hll.strings.ours",
            group=g,
            name=name,
            impl="sketches",
            data="strings",
            input_desc=_form_desc(form, probes, "hll update strings"),
            items=data.n,
            fn=lambda sk: sk.update(s),
            setup=our_hll,
            repeat=repeat,
        )

    # datasketch (pure Python, per-item bytes): subset
    m = data.slow_n
    if datasketch is None:
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"hll.{d}.datasketch",
                group=g,
                name=name,
                impl="datasketch",
                data=d,
                reason=_DATASKETCH_ERR,
            )
    else:
        raw = data.ints[:m].astype("<i8").tobytes()
        int_bytes = [raw[i : i + 8] for i in range(0, len(raw), 8)]
        str_bytes = [x.encode() for x in data.str_obj[:m].tolist()]
        note = f"timed on a {m:,}-item subset (pure Python); rate scaled to items/s"
        for d, items in (("int64", int_bytes), ("strings", str_bytes)):
            measure_throughput(
                res,
                key=f"hll.{d}.datasketch",
                group=g,
                name=name,
                impl="datasketch",
                data=d,
                input_desc="per-item update(bytes) via map; bytes pre-built",
                items=m,
                fn=lambda sk, items=items: _consume(map(sk.update, items)),
                setup=lambda: datasketch.HyperLogLog(p=HLL_P),
                repeat=repeat,
                note=note,
                extra={"subset": True},
            )
        del int_bytes, str_bytes

    # Apache DataSketches
    if ds is None:
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"hll.{d}.datasketches",
                group=g,
                name=name,
                impl="datasketches",
                data=d,
                reason=_DS_ERR,
            )
            skipped(
                res,
                key=f"cpc.{d}.datasketches",
                group=g,
                name=f"CPC lg_k={HLL_P} update",
                impl="datasketches",
                data=d,
                reason=_DS_ERR,
            )
        return
    batch = ds_hll_batch_supported()
    probes["datasketches hll batch update"] = batch or "not available: per-item update only"

    def hll_setup() -> Any:
        return ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)

    if batch == "numpy int64 array":
        measure_throughput(
            res,
            key="hll.int64.datasketches",
            group=g,
            name=name,
            impl="datasketches",
            data="int64",
            input_desc="batch update(numpy int64 array)",
            items=data.n,
            fn=lambda sk: sk.update(data.ints),
            setup=hll_setup,
            repeat=repeat,
            note="hll_sketch HLL_8",
        )
    else:
        ints = data.int_list()
        measure_throughput(
            res,
            key="hll.int64.datasketches",
            group=g,
            name=name,
            impl="datasketches",
            data="int64",
            input_desc="per-item update(int) via map (no batch API)",
            items=data.n,
            fn=lambda sk: _consume(map(sk.update, ints)),
            setup=hll_setup,
            repeat=repeat,
            note="hll_sketch HLL_8",
        )
    strs = data.str_list()
    measure_throughput(
        res,
        key="hll.strings.datasketches",
        group=g,
        name=name,
        impl="datasketches",
        data="strings",
        input_desc="per-item update(str) via map (no batch API)",
        items=data.n,
        fn=lambda sk: _consume(map(sk.update, strs)),
        setup=hll_setup,
        repeat=repeat,
        note="hll_sketch HLL_8",
    )
    ints = data.int_list()
    for d, items in (("int64", ints), ("strings", strs)):
        measure_throughput(
            res,
            key=f"cpc.{d}.datasketches",
            group=g,
            name=f"CPC lg_k={HLL_P} update",
            impl="datasketches",
            data=d,
            input_desc="per-item update via map (no batch API)",
            items=data.n,
            fn=lambda sk, items=items: _consume(map(sk.update, items)),
            setup=lambda: ds.cpc_sketch(HLL_P),
            repeat=repeat,
            note="cpc_sketch",
        )


def group_cms(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "cms"
    width = math.ceil(math.e / CMS_EPSILON)
    depth = math.ceil(math.log(1.0 / CMS_DELTA))
    if ours is None:
        for tk in (0, CMS_TOP_K):
            for d in ("int64", "strings"):
                skipped(
                    res,
                    key=f"cms{tk}.{d}.ours",
                    group=g,
                    name=f"CMS update top_k={tk}",
                    impl="sketches",
                    data=d,
                    reason=_OURS_ERR,
                )
    else:
        width, depth = our_cms_dims(our_cms(0))
        for tk in (0, CMS_TOP_K):
            nm = f"CMS update top_k={tk}"
            dims = f"eps={CMS_EPSILON}, delta={CMS_DELTA} -> width {width}, depth {depth}"
            our_cms(tk).update(data.ints[:1000])
            measure_throughput(
                res,
                key=f"cms{tk}.int64.ours",
                group=g,
                name=nm,
                impl="sketches",
                data="int64",
                input_desc="numpy int64 array",
                items=data.n,
                fn=lambda sk: sk.update(data.ints),
                setup=lambda tk=tk: our_cms(tk),
                repeat=repeat,
                note=dims,
            )
            label = f"cms top_k={tk} update strings"
            form = pick_string_form(data, lambda s, tk=tk: our_cms(tk).update(s), probes, label)
            s = data.strings(form)
            measure_throughput(
                res,
                key=f"cms{tk}.strings.ours",
                group=g,
                name=nm,
                impl="sketches",
                data="strings",
                input_desc=_form_desc(form, probes, label),
                items=data.n,
                fn=lambda sk, s=s: sk.update(s),
                setup=lambda tk=tk: our_cms(tk),
                repeat=repeat,
                note=dims,
            )
    if ds is None:
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"cms.{d}.datasketches",
                group=g,
                name="CMS update",
                impl="datasketches",
                data=d,
                reason=_DS_ERR,
            )
        return
    ints, strs = data.int_list(), data.str_list()
    for d, items in (("int64", ints), ("strings", strs)):
        measure_throughput(
            res,
            key=f"cms.{d}.datasketches",
            group=g,
            name="CMS update",
            impl="datasketches",
            data=d,
            input_desc="per-item update via map (no batch API)",
            items=data.n,
            fn=lambda sk, items=items: _consume(map(sk.update, items)),
            setup=lambda: ds.count_min_sketch(depth, width),
            repeat=repeat,
            note=f"count_min_sketch(num_hashes={depth}, num_buckets={width})",
        )
    measure_throughput(
        res,
        key="freq.strings.datasketches",
        group=g,
        name="frequent items update",
        impl="datasketches",
        data="strings",
        input_desc="per-item update(str) via map",
        items=data.n,
        fn=lambda sk: _consume(map(sk.update, strs)),
        setup=lambda: ds.frequent_strings_sketch(FREQ_LG_MAX_K),
        repeat=repeat,
        note=f"frequent_strings_sketch(lg_max_k={FREQ_LG_MAX_K})",
    )
    measure_throughput(
        res,
        key="freq.int64.datasketches",
        group=g,
        name="frequent items update",
        impl="datasketches",
        data="int64",
        input_desc="per-item update(int) via map",
        items=data.n,
        fn=lambda sk: _consume(map(sk.update, ints)),
        setup=lambda: ds.frequent_items_sketch(FREQ_LG_MAX_K),
        repeat=repeat,
        note=f"frequent_items_sketch(lg_max_k={FREQ_LG_MAX_K})",
    )


def _absent_queries(data: Data, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys that were never inserted: int64 outside the data, strings with another prefix."""
    rng = np.random.default_rng(data.seed + 1)
    q = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=m * 2, dtype=np.int64)
    q = q[~np.isin(q, data.ints)][:m]
    s = np.array([f"absent-{i}" for i in range(m)], dtype=object)
    return q, s


def group_bloom(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "bloom"
    cap = data.n
    cfg = f"capacity={cap:,}, error_rate={BLOOM_FPR}"
    m = min(FPR_PROBE_N, data.n)
    absent_int, absent_str = _absent_queries(data, m)

    ours_filters: dict[str, Any] = {}
    if ours is None:
        for op in ("update", "contains"):
            for d in ("int64", "strings"):
                skipped(
                    res,
                    key=f"bloom-{op}.{d}.ours",
                    group=g,
                    name=f"Bloom {op}",
                    impl="sketches",
                    data=d,
                    reason=_OURS_ERR,
                )
    else:
        our_bloom(1000).update(data.ints[:1000])
        measure_throughput(
            res,
            key="bloom-update.int64.ours",
            group=g,
            name="Bloom update",
            impl="sketches",
            data="int64",
            input_desc="numpy int64 array",
            items=data.n,
            fn=lambda bf: bf.update(data.ints),
            setup=lambda: our_bloom(cap),
            repeat=repeat,
            note=f"BloomFilter({cfg})",
        )
        form_u = pick_string_form(
            data, lambda s: our_bloom(cap).update(s), probes, "bloom update strings"
        )
        su = data.strings(form_u)
        measure_throughput(
            res,
            key="bloom-update.strings.ours",
            group=g,
            name="Bloom update",
            impl="sketches",
            data="strings",
            input_desc=_form_desc(form_u, probes, "bloom update strings"),
            items=data.n,
            fn=lambda bf: bf.update(su),
            setup=lambda: our_bloom(cap),
            repeat=repeat,
            note=f"BloomFilter({cfg})",
        )
        for d, values in (("int64", data.ints), ("strings", data.str_obj)):
            bf = our_bloom(cap)
            bf.update(values)
            ours_filters[d] = bf
        bi, bs = ours_filters["int64"], ours_filters["strings"]
        form_c = pick_string_form(data, bs.contains, probes, "bloom contains strings")
        sc = data.strings(form_c)
        for d, bf, values, desc in (
            ("int64", bi, data.ints, "numpy int64 array"),
            ("strings", bs, sc, _form_desc(form_c, probes, "bloom contains strings")),
        ):
            absent = absent_int if d == "int64" else absent_str
            try:
                fpr = float(np.count_nonzero(bf.contains(absent))) / len(absent)
                hits = bool(np.all(bf.contains(values[:1000])))
            except Exception as exc:  # noqa: BLE001
                fpr, hits = f"{type(exc).__name__}: {exc}", None
            try:
                expected = float(bf.expected_fpr())
            except Exception:  # noqa: BLE001
                expected = None
            measure_throughput(
                res,
                key=f"bloom-contains.{d}.ours",
                group=g,
                name="Bloom contains",
                impl="sketches",
                data=d,
                input_desc=desc,
                items=data.n,
                fn=lambda _, bf=bf, values=values: bf.contains(values),
                setup=None,
                repeat=repeat,
                note=f"all inserted keys; measured FPR {_fmt_fpr(fpr)}",
                extra={
                    "measured_fpr_absent_keys": fpr,
                    "absent_keys": m,
                    "expected_fpr": expected,
                    "no_false_negatives_sample": hits,
                },
            )
        del ours_filters

    if rbloom is None:
        for op in ("update", "contains"):
            for d in ("int64", "strings"):
                skipped(
                    res,
                    key=f"bloom-{op}.{d}.rbloom",
                    group=g,
                    name=f"Bloom {op}",
                    impl="rbloom",
                    data=d,
                    reason=_RBLOOM_ERR,
                )
        return
    ints, strs = data.int_list(), data.str_list()
    rcfg = f"Bloom(expected_items={cap:,}, false_positive_rate={BLOOM_FPR})"
    for d, items in (("int64", ints), ("strings", strs)):
        measure_throughput(
            res,
            key=f"bloom-update.{d}.rbloom",
            group=g,
            name="Bloom update",
            impl="rbloom",
            data=d,
            input_desc="bulk update(list)",
            items=data.n,
            fn=lambda bf, items=items: bf.update(items),
            setup=lambda: rbloom.Bloom(cap, BLOOM_FPR),
            repeat=repeat,
            note=rcfg,
        )
    for d, items in (("int64", ints), ("strings", strs)):
        bf = rbloom.Bloom(cap, BLOOM_FPR)
        bf.update(items)
        absent = absent_int.tolist() if d == "int64" else absent_str.tolist()
        fpr = sum(map(bf.__contains__, absent)) / len(absent)
        measure_throughput(
            res,
            key=f"bloom-contains.{d}.rbloom",
            group=g,
            name="Bloom contains",
            impl="rbloom",
            data=d,
            input_desc="per-item __contains__ via map (no bulk API)",
            items=data.n,
            fn=lambda _, bf=bf, items=items: list(map(bf.__contains__, items)),
            setup=None,
            repeat=repeat,
            note=f"all inserted keys; measured FPR {_fmt_fpr(fpr)}",
            extra={"measured_fpr_absent_keys": fpr, "absent_keys": m},
        )
        del bf


def _measure_ms(
    res: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    input_desc: str,
    fn: Callable[[Any], Any],
    setup: Callable[[], Any] | None,
    repeat: int,
    note: str = "",
    per_call: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Row:
    """Latency row: ``ms`` total, or ``us/call`` when ``per_call`` calls happen per timed run."""
    unit = "us/call" if per_call else "ms"
    row = Row(
        key=key,
        group=group,
        name=name,
        impl=impl,
        data=data,
        input=input_desc,
        unit=unit,
        note=note,
        extra=dict(extra or {}),
    )
    try:
        times = _time_calls(fn, setup, repeat)
        row.times_s = times
        scale = 1e6 / per_call if per_call else 1e3
        row.median = statistics.median(times) * scale
        row.best = min(times) * scale
    except Exception as exc:  # noqa: BLE001
        row.error = f"{type(exc).__name__}: {exc}"
    return res.add(row)


def group_merge(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "merge"
    name = f"merge {MERGE_SKETCHES:,} HLL p{HLL_P}"
    rng = np.random.default_rng(data.seed + 2)
    chunks = rng.integers(
        0, np.iinfo(np.int64).max, size=(MERGE_SKETCHES, MERGE_ITEMS_EACH), dtype=np.int64
    )
    desc = f"{MERGE_SKETCHES:,} sketches x {MERGE_ITEMS_EACH:,} items each (building not timed)"
    truth = MERGE_SKETCHES * MERGE_ITEMS_EACH
    if ours is None:
        skipped(
            res,
            key="merge.int64.ours",
            group=g,
            name=name,
            impl="sketches",
            data="int64",
            reason=_OURS_ERR,
            unit="ms",
        )
    else:
        sks = [our_hll().update(c) for c in chunks]
        # ``update`` is documented to return self; fall back if it does not.
        if any(s is None for s in sks):
            sks = []
            for c in chunks:
                s = our_hll()
                s.update(c)
                sks.append(s)
        fn, how = our_union(sks)
        out: list[Any] = []
        _measure_ms(
            res,
            key="merge.int64.ours",
            group=g,
            name=name,
            impl="sketches",
            data="int64",
            input_desc=desc,
            fn=lambda _: out.append(fn(sks)),
            setup=None,
            repeat=repeat,
            note=how,
            extra={"estimate": None, "true_distinct": truth},
        )
        if out:
            res.rows[-1].extra["estimate"] = float(out[-1].estimate())
        del out
        if how.startswith("sketches.union"):
            _measure_ms(
                res,
                key="merge-repeated.int64.ours",
                group=g,
                name=name + " (repeated)",
                impl="sketches",
                data="int64",
                input_desc=desc,
                fn=lambda _: our_repeated_merge(sks),
                setup=None,
                repeat=repeat,
                note="repeated .merge() into an empty sketch",
            )
        del sks
    if ds is None:
        skipped(
            res,
            key="merge.int64.datasketches",
            group=g,
            name=name,
            impl="datasketches",
            data="int64",
            reason=_DS_ERR,
            unit="ms",
        )
        return
    dsks = []
    for c in chunks:
        sk = ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)
        _consume(map(sk.update, c.tolist()))
        dsks.append(sk)
    dout: list[Any] = []

    def ds_union(_: Any) -> None:
        u = ds.hll_union(HLL_P)
        for sk in dsks:
            u.update(sk)
        dout.append(u.get_result(ds.tgt_hll_type.HLL_8))

    _measure_ms(
        res,
        key="merge.int64.datasketches",
        group=g,
        name=name,
        impl="datasketches",
        data="int64",
        input_desc=desc,
        fn=ds_union,
        setup=None,
        repeat=repeat,
        note="hll_union(14).update(sketch) x N + get_result(HLL_8)",
        extra={"estimate": None, "true_distinct": truth},
    )
    if dout:
        res.rows[-1].extra["estimate"] = float(dout[-1].get_estimate())


def group_estimate(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "estimate"
    m = min(QUERY_N, data.n)
    k = ESTIMATE_COPIES
    hname = f"HLL p{HLL_P} estimate()"
    hdesc = f"{k} deserialized copies, one call each (no cached result)"
    if ours is None:
        skipped(
            res,
            key="hll-estimate.int64.ours",
            group=g,
            name=hname,
            impl="sketches",
            data="int64",
            reason=_OURS_ERR,
            unit="us/call",
        )
        for d in ("int64", "strings"):
            skipped(
                res,
                key=f"cms-query.{d}.ours",
                group=g,
                name="CMS point query",
                impl="sketches",
                data=d,
                reason=_OURS_ERR,
            )
    else:
        base = our_hll()
        base.update(data.ints[:m])
        _measure_ms(
            res,
            key="hll-estimate.int64.ours",
            group=g,
            name=hname,
            impl="sketches",
            data="int64",
            input_desc=hdesc,
            fn=lambda copies: [c.estimate() for c in copies],
            setup=lambda: [our_copy(base) for _ in range(k)],
            repeat=repeat,
            per_call=k,
            note=f"sketch holds {m:,} int64",
        )
        cms = our_cms(0)
        cms.update(data.ints[:m])
        cms.estimate(data.ints[:1000])
        measure_throughput(
            res,
            key="cms-query.int64.ours",
            group=g,
            name="CMS point query",
            impl="sketches",
            data="int64",
            input_desc="estimate(numpy int64 array)",
            items=m,
            fn=lambda _: cms.estimate(data.ints[:m]),
            setup=None,
            repeat=repeat,
            note="width/depth from eps=0.001, delta=0.01, top_k=0",
        )
        cms_s = our_cms(0)
        cms_s.update(data.str_obj[:m])
        form = pick_string_form(data, cms_s.estimate, probes, "cms query strings")
        q = data.strings(form)[:m]
        measure_throughput(
            res,
            key="cms-query.strings.ours",
            group=g,
            name="CMS point query",
            impl="sketches",
            data="strings",
            input_desc=_form_desc(form, probes, "cms query strings"),
            items=m,
            fn=lambda _: cms_s.estimate(q),
            setup=None,
            repeat=repeat,
            note="width/depth from eps=0.001, delta=0.01, top_k=0",
        )
    if ds is None:
        skipped(
            res,
            key="hll-estimate.int64.datasketches",
            group=g,
            name=hname,
            impl="datasketches",
            data="int64",
            reason=_DS_ERR,
            unit="us/call",
        )
        return
    dbase = ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)
    _consume(map(dbase.update, data.ints[:m].tolist()))
    blob = dbase.serialize_updatable()
    _measure_ms(
        res,
        key="hll-estimate.int64.datasketches",
        group=g,
        name=hname,
        impl="datasketches",
        data="int64",
        input_desc=hdesc,
        fn=lambda copies: [c.get_estimate() for c in copies],
        setup=lambda: [ds.hll_sketch.deserialize(blob) for _ in range(k)],
        repeat=repeat,
        per_call=k,
        note=f"get_estimate(); sketch holds {m:,} int64",
    )
    width = math.ceil(math.e / CMS_EPSILON)
    depth = math.ceil(math.log(1.0 / CMS_DELTA))
    for d, values in (("int64", data.ints[:m].tolist()), ("strings", data.str_obj[:m].tolist())):
        sk = ds.count_min_sketch(depth, width)
        _consume(map(sk.update, values))
        measure_throughput(
            res,
            key=f"cms-query.{d}.datasketches",
            group=g,
            name="CMS point query",
            impl="datasketches",
            data=d,
            input_desc="per-item get_estimate via map",
            items=m,
            fn=lambda _, sk=sk, values=values: list(map(sk.get_estimate, values)),
            setup=None,
            repeat=repeat,
            note=f"count_min_sketch(num_hashes={depth}, num_buckets={width})",
        )


def _peak_extra_bytes(fn: Callable[[], Any]) -> tuple[int, int | None]:
    """Return (tracemalloc peak above the start, Arrow pool peak increase) while running fn."""
    pool = pa.default_memory_pool() if pa else None
    pool_before = pool.max_memory() if pool is not None else None
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    arrow = None
    if pool is not None and pool_before is not None:
        after = pool.max_memory()
        arrow = (after - pool_before) if after is not None else None
    return peak - start, arrow


def group_memory(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "memory"
    name = f"HLL p{HLL_P} update peak extra memory"
    # (key, data label, input description, values, bytes of the input's own buffers)
    cases = [("mem.int64.ours", "int64", "numpy int64 array", data.ints, data.ints.nbytes)]
    for form in ["object"] + (["arrow"] if data.str_arrow is not None else []):
        s = data.strings(form)
        cases.append(
            (f"mem.strings-{form}.ours", f"strings ({form})", FORM_LABEL[form], s, s.nbytes)
        )
    for key, d, desc, values, input_bytes in cases:
        if ours is None:
            skipped(
                res,
                key=key,
                group=g,
                name=name,
                impl="sketches",
                data=d,
                reason=_OURS_ERR,
                unit="MiB",
            )
            continue
        row = Row(
            key=key,
            group=g,
            name=name,
            impl="sketches",
            data=d,
            input=desc,
            unit="MiB",
            items=data.n,
        )
        try:
            sk = our_hll()
            extra_b, arrow_b = _peak_extra_bytes(lambda sk=sk, values=values: sk.update(values))
            row.median = row.best = extra_b / 2**20
            row.extra = {
                "tracemalloc_peak_extra_bytes": extra_b,
                "input_buffer_bytes": int(input_bytes),
                "arrow_pool_peak_increase_bytes": arrow_b,
            }
            row.note = (
                "tracemalloc (NumPy + Python allocations); "
                f"input buffers {input_bytes / 2**20:.0f} MiB"
                + (f"; Arrow pool peak +{arrow_b / 2**20:.1f} MiB" if arrow_b else "")
            )
        except Exception as exc:  # noqa: BLE001
            row.error = f"{type(exc).__name__}: {exc}"
        res.add(row)


GROUP_FUNCS = {
    "hash": group_hash,
    "hll": group_hll,
    "cms": group_cms,
    "bloom": group_bloom,
    "merge": group_merge,
    "estimate": group_estimate,
    "memory": group_memory,
}


# --------------------------------------------------------------------------- #
# Ratios and targets                                                          #
# --------------------------------------------------------------------------- #

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
                "detail": f"{_fmt_ratio(ratio)} "
                f"({_fmt_rate(a.median)} vs {_fmt_rate(b.median)}, medians)",
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
    return out


# --------------------------------------------------------------------------- #
# Output                                                                      #
# --------------------------------------------------------------------------- #


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e9:
        return f"{v / 1e9:.2f} G/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.1f} /s"


def _fmt_ratio(v: float) -> str:
    if v >= 10:
        return f"{v:.1f}x"
    if v >= 0.1:
        return f"{v:.2f}x"
    return f"{v:.3g}x"


def _fmt_fpr(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "items/s":
        return _fmt_rate(v)
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "us/call":
        return f"{v:.1f} us"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:g} {unit}"


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
                _fmt_value(r.median, r.unit),
                _fmt_value(r.best, r.unit),
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
            med, best = _fmt_ratio(r["ratio_median"]), _fmt_ratio(r["ratio_best"])
            print(f"  {r['label'].ljust(lw)}  {med:>9}  [{best}]")
    print("\nTargets (informational; never fail the run)")
    for t in targets:
        print(f"  {t['status']:<4}  {t['target']}: {t['detail']}")


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
    commit: str | None = None
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
    if commit is not None and not (
        len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    ):
        commit = None  # e.g. a repository without commits yet
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


# --------------------------------------------------------------------------- #
# Main                                                                        #
# --------------------------------------------------------------------------- #


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
                "sketches": _OURS_ERR,
                "pyarrow": _PA_ERR,
                "datasketch": _DATASKETCH_ERR,
                "datasketches": _DS_ERR,
                "rbloom": _RBLOOM_ERR,
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
