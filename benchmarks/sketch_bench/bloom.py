"""Group ``bloom``: Bloom filter inserts, lookups and false positives against rbloom."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.sketch_bench.harness import (
    BLOOM_FPR,
    FPR_PROBE_N,
    OURS_ERR,
    RBLOOM_ERR,
    Data,
    Results,
    fmt_fpr,
    form_desc,
    measure_ours_update,
    measure_throughput,
    ours,
    pick_string_form,
    rbloom,
    skipped_each,
)
from benchmarks.sketch_bench.ours import our_bloom


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
            skipped_each(
                res,
                key=f"bloom-{op}.{{d}}.ours",
                group=g,
                name=f"Bloom {op}",
                impl="sketches",
                reason=OURS_ERR,
            )
    else:
        measure_ours_update(
            data,
            res,
            probes,
            key="bloom-update.{d}.ours",
            group=g,
            name="Bloom update",
            setup=lambda: our_bloom(cap),
            repeat=repeat,
            label="bloom update strings",
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
            ("strings", bs, sc, form_desc(form_c, probes, "bloom contains strings")),
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
                note=f"all inserted keys; measured FPR {fmt_fpr(fpr)}",
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
            skipped_each(
                res,
                key=f"bloom-{op}.{{d}}.rbloom",
                group=g,
                name=f"Bloom {op}",
                impl="rbloom",
                reason=RBLOOM_ERR,
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
            note=f"all inserted keys; measured FPR {fmt_fpr(fpr)}",
            extra={"measured_fpr_absent_keys": fpr, "absent_keys": m},
        )
        del bf
