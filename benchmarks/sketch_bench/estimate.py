"""Group ``estimate``: estimates and queries on built sketches."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.sketch_bench.harness import (
    CMS_DELTA,
    CMS_EPSILON,
    DS_ERR,
    ESTIMATE_COPIES,
    HLL_P,
    OURS_ERR,
    QUERY_N,
    Data,
    Results,
    consume,
    ds,
    form_desc,
    measure_ms,
    measure_throughput,
    ours,
    pick_string_form,
    skipped,
    skipped_each,
)
from benchmarks.sketch_bench.ours import our_cms, our_copy, our_hll


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
            reason=OURS_ERR,
            unit="us/call",
        )
        skipped_each(
            res,
            key="cms-query.{d}.ours",
            group=g,
            name="CMS point query",
            impl="sketches",
            reason=OURS_ERR,
        )
    else:
        base = our_hll()
        base.update(data.ints[:m])
        measure_ms(
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
            input_desc=form_desc(form, probes, "cms query strings"),
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
            reason=DS_ERR,
            unit="us/call",
        )
        return
    dbase = ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)
    consume(map(dbase.update, data.ints[:m].tolist()))
    blob = dbase.serialize_updatable()
    measure_ms(
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
        consume(map(sk.update, values))
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
