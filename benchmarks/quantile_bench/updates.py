"""Update, grouped build and merge: ours (both bucket mappings) against the baselines.

Also measured here, untimed: each library's largest relative error at ``QS``, the
serialised sizes, and for the cells mapping its bound and its accuracy on mixed
signs, zeros, subnormals, NaN and infinities.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.quantile_bench.harness import (
    ACCURACY,
    GROUPS,
    KLL_K,
    QS,
    Report,
    consume,
    datasketches,
    ddsketch,
    exact_lower,
    max_rel_error,
    pa,
    sketches,
)

MAPPINGS = {"log": "", "cells": "cells."}  # mapping -> infix of its row keys


def bench_ours(x: np.ndarray, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    """``update`` (NumPy and Arrow input) and ``from_groups`` with each mapping."""
    quality: dict[str, Any] = {}
    if sketches is None:
        return quality
    qs_cls = sketches.QuantileSketch
    exact = exact_lower(x, QS)
    codes = np.random.default_rng(args.seed + 1).integers(0, GROUPS, x.size)
    arrow = pa.array(x) if pa is not None else None
    for mapping, infix in MAPPINGS.items():
        label = f'QuantileSketch(mapping="{mapping}")'

        def update(values: Any, mapping: str = mapping) -> Any:
            return qs_cls(ACCURACY, mapping=mapping).update(values)

        rep.add(
            f"update.ours.{infix}numpy",
            f"{label}.update(float64 array)",
            "values/s",
            x.size,
            lambda u=update: u(x),
            repeat=args.repeat_fast,
        )
        if arrow is not None:
            rep.add(
                f"update.ours.{infix}arrow",
                f"{label}.update(pyarrow array)",
                "values/s",
                x.size,
                lambda u=update: u(arrow),
                repeat=args.repeat_fast,
            )
        rep.add(
            "from_groups.ours.cells" if infix else "from_groups.ours.numpy",
            f"{label}.from_groups, {GROUPS} groups",
            "values/s",
            x.size,
            lambda m=mapping: qs_cls.from_groups(
                codes, x, GROUPS, relative_accuracy=ACCURACY, mapping=m
            ),
            repeat=args.repeat,
        )
        ours = update(x)
        quality["ours" if not infix else "ours.cells"] = {
            "max_rel_error": max_rel_error(ours.quantiles(QS), exact),
            "bound": ours.bucket_accuracy,
            "bytes": len(ours.to_bytes()),
            "buckets": ours.num_buckets,
        }
    quality["ours.cells"].update(mixed_accuracy(args.seed + 2))
    return quality


def mixed_accuracy(seed: int) -> dict[str, Any]:
    """The cells mapping on both signs, zeros, subnormals, NaN and infinities."""
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-320, -3e-315, 1e300, -1e-300]
    mixed = np.concatenate(
        [rng.lognormal(0, 3, 50_000), -rng.lognormal(0, 3, 50_000), rng.uniform(-1, 1, 20_000)]
    )
    mixed = np.concatenate([mixed, special])
    rng.shuffle(mixed)
    finite = mixed[np.isfinite(mixed)]
    many_qs = list(np.linspace(0.0, 1.0, 1001))
    exact = exact_lower(finite, many_qs)
    sketch = sketches.QuantileSketch(ACCURACY, mapping="cells").update(mixed)
    got = sketch.quantiles(many_qs)
    zero = exact == 0.0
    return {
        "mixed_max_rel_error": float(
            np.max(np.abs(got[~zero] - exact[~zero]) / np.abs(exact[~zero]))
        ),
        "mixed_counts_ok": bool(
            np.all(got[zero] == 0.0)
            and sketch.count == finite.size
            and sketch.skipped == mixed.size - finite.size
            and sketch.zero_count == int(np.count_nonzero(finite == 0.0))
        ),
    }


def bench_baselines(x: np.ndarray, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    """``ddsketch`` per value (on a subset) and KLL batch and per value."""
    quality: dict[str, Any] = {}
    exact = exact_lower(x, QS)
    n, r, fast = x.size, args.repeat, args.repeat_fast
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
            repeat=fast,
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
        for mapping, infix in MAPPINGS.items():
            ours = [cls(ACCURACY, mapping=mapping).update(p) for p in parts]
            rep.add(
                f"merge.ours.{infix}union",
                f'{label}: union(*sketches), mapping="{mapping}"',
                "ms",
                k,
                lambda o=ours: sketches.union(*o),
                repeat=args.repeat,
            )
            if not infix:

                def loop(o: list[Any] = ours) -> None:
                    acc = cls(ACCURACY)
                    for s in o:
                        acc.merge(s)

                rep.add(
                    "merge.ours.loop", f"{label}: repeated merge", "ms", k, loop, repeat=args.repeat
                )
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
