"""Group ``merge``: merging many sketches."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.sketch_bench.harness import (
    DS_ERR,
    HLL_P,
    MERGE_ITEMS_EACH,
    MERGE_SKETCHES,
    OURS_ERR,
    Data,
    Results,
    consume,
    ds,
    measure_ms,
    ours,
    skipped,
)
from benchmarks.sketch_bench.ours import our_hll, our_repeated_merge, our_union


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
            reason=OURS_ERR,
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
        measure_ms(
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
            measure_ms(
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
            reason=DS_ERR,
            unit="ms",
        )
        return
    dsks = []
    for c in chunks:
        sk = ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)
        consume(map(sk.update, c.tolist()))
        dsks.append(sk)
    dout: list[Any] = []

    def ds_union(_: Any) -> None:
        u = ds.hll_union(HLL_P)
        for sk in dsks:
            u.update(sk)
        dout.append(u.get_result(ds.tgt_hll_type.HLL_8))

    measure_ms(
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
