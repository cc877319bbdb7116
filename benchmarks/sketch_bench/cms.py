"""Group ``cms``: Count-Min updates and queries against Apache DataSketches."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.sketch_bench.harness import (
    CMS_DELTA,
    CMS_EPSILON,
    CMS_TOP_K,
    DS_ERR,
    FREQ_LG_MAX_K,
    OURS_ERR,
    Data,
    Results,
    ds,
    measure_ours_update,
    measure_throughput,
    ours,
    per_item_update,
    skipped_each,
)
from benchmarks.sketch_bench.ours import our_cms, our_cms_dims


def group_cms(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "cms"
    width = math.ceil(math.e / CMS_EPSILON)
    depth = math.ceil(math.log(1.0 / CMS_DELTA))
    if ours is None:
        for tk in (0, CMS_TOP_K):
            skipped_each(
                res,
                key=f"cms{tk}.{{d}}.ours",
                group=g,
                name=f"CMS update top_k={tk}",
                impl="sketches",
                reason=OURS_ERR,
            )
    else:
        width, depth = our_cms_dims(our_cms(0))
        for tk in (0, CMS_TOP_K):
            measure_ours_update(
                data,
                res,
                probes,
                key=f"cms{tk}.{{d}}.ours",
                group=g,
                name=f"CMS update top_k={tk}",
                setup=lambda tk=tk: our_cms(tk),
                repeat=repeat,
                label=f"cms top_k={tk} update strings",
                note=f"eps={CMS_EPSILON}, delta={CMS_DELTA} -> width {width}, depth {depth}",
            )
    if ds is None:
        skipped_each(
            res,
            key="cms.{d}.datasketches",
            group=g,
            name="CMS update",
            impl="datasketches",
            reason=DS_ERR,
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
            fn=per_item_update(items),
            setup=lambda: ds.count_min_sketch(depth, width),
            repeat=repeat,
            note=f"count_min_sketch(num_hashes={depth}, num_buckets={width})",
        )
    for d, kind, items, sketch in (
        ("strings", "str", strs, "frequent_strings_sketch"),
        ("int64", "int", ints, "frequent_items_sketch"),
    ):
        measure_throughput(
            res,
            key=f"freq.{d}.datasketches",
            group=g,
            name="frequent items update",
            impl="datasketches",
            data=d,
            input_desc=f"per-item update({kind}) via map",
            items=data.n,
            fn=per_item_update(items),
            setup=lambda sketch=sketch: getattr(ds, sketch)(FREQ_LG_MAX_K),
            repeat=repeat,
            note=f"{sketch}(lg_max_k={FREQ_LG_MAX_K})",
        )
