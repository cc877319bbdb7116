"""Group ``datasketches``: our DataSketches-format sketches (``DataSketchesHLL``,
``ThetaSketch``) against Apache DataSketches: update throughput, and the merge of
many stored byte images timed from the bytes to the estimate."""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from benchmarks.sketch_bench.harness import (
    DS_ERR,
    OURS_ERR,
    Data,
    Results,
    ds,
    measure_ms,
    measure_ours_update,
    measure_throughput,
    ours,
    per_item_update,
    skipped,
    skipped_each,
)
from benchmarks.sketch_bench.ours import ds_batch_supported, ds_hll_batch_supported

G = "datasketches"
DS_LG_K = 12  # lgK of both kinds (Spark's default), and the precision of our HLL compared
DS_MERGE_SKETCHES = 10_000
DS_MERGE_ITEMS_EACH = 1_000  # > 384 coupons: every HLL image is in HLL (register) mode
HLL_AGREE = 0.02  # ours vs DataSketches estimate of the same union (estimators differ)
THETA_AGREE = 1e-9  # same hashes and theta: the same count / theta


def _stamp(res: Results) -> None:
    """Record the load average on this group's rows that have none yet."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for row in res.rows:
        if row.group == G and "loadavg" not in row.extra:
            row.extra["loadavg"] = load


def group_datasketches(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    _ours_updates(data, res, repeat, probes)
    _ds_updates(data, res, repeat, probes)
    _merges(data, res, repeat)
    _stamp(res)


def _ours_updates(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    kinds = (
        (
            "dshll",
            f"DataSketches HLL lg{DS_LG_K} update",
            "DataSketchesHLL",
            lambda: ours.DataSketchesHLL(DS_LG_K),
        ),
        (
            "hll12",
            f"HLL p{DS_LG_K} update (our format)",
            "HyperLogLog",
            lambda: ours.HyperLogLog(DS_LG_K),
        ),
        ("theta", f"Theta lg{DS_LG_K} update", "ThetaSketch", lambda: ours.ThetaSketch(DS_LG_K)),
    )
    for prefix, name, cls, setup in kinds:
        if ours is None:
            skipped_each(
                res, key=prefix + ".{d}.ours", group=G, name=name, impl="sketches", reason=OURS_ERR
            )
            continue
        measure_ours_update(
            data,
            res,
            probes,
            key=prefix + ".{d}.ours",
            group=G,
            name=name,
            setup=setup,
            repeat=repeat,
            label=f"{cls}({DS_LG_K}) update strings",
            note=f"{cls}({DS_LG_K})",
        )
        _stamp(res)


def _ds_updates(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    kinds = (
        ("dshll", f"DataSketches HLL lg{DS_LG_K} update", f"hll_sketch({DS_LG_K}, HLL_8)"),
        ("theta", f"Theta lg{DS_LG_K} update", f"update_theta_sketch({DS_LG_K})"),
    )
    if ds is None:
        for prefix, name, _ in kinds:
            skipped_each(
                res,
                key=prefix + ".{d}.datasketches",
                group=G,
                name=name,
                impl="datasketches",
                reason=DS_ERR,
            )
        return
    makers = {
        "dshll": lambda: ds.hll_sketch(DS_LG_K, ds.tgt_hll_type.HLL_8),
        "theta": lambda: ds.update_theta_sketch(DS_LG_K),
    }
    batches = {"dshll": ds_hll_batch_supported(), "theta": ds_batch_supported(makers["theta"])}
    ints, strs = data.int_list(), data.str_list()
    for prefix, name, note in kinds:
        batch = batches[prefix]
        probes[f"datasketches {note} batch update"] = batch or "not available: per-item update only"
        for d, items in (("int64", ints), ("strings", strs)):
            measure_throughput(
                res,
                key=f"{prefix}.{d}.datasketches",
                group=G,
                name=name,
                impl="datasketches",
                data=d,
                input_desc=f"per-item update({d}) via map from a pre-built list"
                + ("" if batch else " (no batch API)"),
                items=data.n,
                fn=per_item_update(items),
                setup=makers[prefix],
                repeat=repeat,
                note=note,
            )
            _stamp(res)
        if batch == "numpy int64 array":
            measure_throughput(
                res,
                key=f"{prefix}.int64.datasketches-batch",
                group=G,
                name=name,
                impl="datasketches",
                data="int64",
                input_desc="batch update(numpy int64 array)",
                items=data.n,
                fn=lambda sk: sk.update(data.ints),
                setup=makers[prefix],
                repeat=repeat,
                note=note,
            )
            _stamp(res)


def _merges(data: Data, res: Results, repeat: int) -> None:
    s, e = DS_MERGE_SKETCHES, DS_MERGE_ITEMS_EACH
    names = {k: f"merge {s:,} {k} lg{DS_LG_K} images" for k in ("HLL", "Theta")}
    keys = {"HLL": "dshll-merge.int64", "Theta": "theta-merge.int64"}
    if ours is None or ds is None:
        reason = OURS_ERR or DS_ERR or ""  # the images are ours; both sides need both
        for kind in names:
            for impl, lib in (("ours", "sketches"), ("datasketches", "datasketches")):
                skipped(
                    res,
                    key=f"{keys[kind]}.{impl}",
                    group=G,
                    name=names[kind],
                    impl=lib,
                    data="int64",
                    reason=reason,
                    unit="ms",
                )
        return
    theta_union = importlib.import_module("sketches.theta").theta_union
    info = np.iinfo(np.int64)
    rng = np.random.default_rng(data.seed + 3)
    values = rng.integers(info.min, info.max, size=s * e, dtype=np.int64, endpoint=True)
    codes = np.repeat(np.arange(s), e)
    blobs = {
        "HLL": [
            sk.to_bytes()
            for sk in ours.DataSketchesHLL.from_groups(codes, values, s, precision=DS_LG_K)
        ],
        "Theta": [
            sk.to_bytes() for sk in ours.ThetaSketch.from_groups(codes, values, s, lg_k=DS_LG_K)
        ],
    }
    del values, codes
    modes = sorted({b[7] & 3 for b in blobs["HLL"]})  # 2 = HLL (register) mode
    desc = (
        f"{s:,} stored images x ~{e:,} distinct int64 each, written by sketches "
        "(building not timed); timed from the bytes to the estimate"
    )
    got: dict[str, Any] = {}

    def ours_hll(_: Any) -> None:
        u = ours.union(*[ours.DataSketchesHLL.from_bytes(b) for b in blobs["HLL"]])
        got["HLL.ours"] = (u.estimate(), u)

    def ds_hll(_: Any) -> None:
        u = ds.hll_union(DS_LG_K)
        for b in blobs["HLL"]:
            u.update(ds.hll_sketch.deserialize(b))
        r = u.get_result(ds.tgt_hll_type.HLL_8)
        got["HLL.datasketches"] = (r.get_estimate(), r)

    def ours_theta(_: Any) -> None:
        u = theta_union(*[ours.ThetaSketch.from_bytes(b, lg_k=DS_LG_K) for b in blobs["Theta"]])
        got["Theta.ours"] = (u.estimate(), u)

    def ds_theta(_: Any) -> None:
        u = ds.theta_union(DS_LG_K)
        for b in blobs["Theta"]:
            u.update(ds.compact_theta_sketch.deserialize(b))
        r = u.get_result()
        got["Theta.datasketches"] = (r.get_estimate(), r)

    runs = {
        ("HLL", "ours"): (
            ours_hll,
            "sketches.union(*[DataSketchesHLL.from_bytes(b) ...]).estimate()",
        ),
        ("HLL", "datasketches"): (
            ds_hll,
            f"hll_union({DS_LG_K}).update(hll_sketch.deserialize(b))"
            " x N; get_result(HLL_8).get_estimate()",
        ),
        ("Theta", "ours"): (
            ours_theta,
            f"sketches.theta.theta_union(*[ThetaSketch.from_bytes(b, lg_k={DS_LG_K}) ...])"
            ".estimate()",
        ),
        ("Theta", "datasketches"): (
            ds_theta,
            f"theta_union({DS_LG_K}).update(compact_theta_sketch"
            ".deserialize(b)) x N; get_result().get_estimate()",
        ),
    }
    for (kind, impl), (fn, note) in runs.items():
        measure_ms(
            res,
            key=f"{keys[kind]}.{impl}",
            group=G,
            name=names[kind],
            impl="sketches" if impl == "ours" else "datasketches",
            data="int64",
            input_desc=desc,
            fn=fn,
            setup=None,
            repeat=repeat,
            note=note,
            extra={
                "true_distinct": s * e,
                "image_bytes_each": len(blobs[kind][0]),
                "hll_modes": modes if kind == "HLL" else None,
            },
        )
        if f"{kind}.{impl}" in got:
            res.rows[-1].extra["estimate"] = float(got[f"{kind}.{impl}"][0])
        _stamp(res)
    for kind, tol in (("HLL", HLL_AGREE), ("Theta", THETA_AGREE)):
        if f"{kind}.ours" not in got or f"{kind}.datasketches" not in got:
            continue
        (a, ua), (b, ub) = got[f"{kind}.ours"], got[f"{kind}.datasketches"]
        rel = abs(a - b) / abs(b) if b else abs(a - b)
        if kind == "HLL":  # the same registers? (the estimators differ, the state must not)
            same = bool(
                np.array_equal(
                    ua.registers(),
                    ours.DataSketchesHLL.from_bytes(ub.serialize_compact()).registers(),
                )
            )
        else:  # the same compact bytes?
            same = ua.to_bytes() == ub.serialize()
        check = {
            "ours": a,
            "datasketches": b,
            "relative_difference": rel,
            "tolerance": tol,
            "state_equal": same,
        }
        for row in res.rows:
            if row.key == f"{keys[kind]}.ours":
                row.extra["agreement"] = check
        print(
            f"  [{G}] {kind} union estimate: ours {a:,.3f}, DataSketches {b:,.3f}, "
            f"true {s * e:,}; relative difference {rel:.3g} (tolerance {tol:g}); "
            f"{'registers' if kind == 'HLL' else 'bytes'} equal: {same}",
            flush=True,
        )
