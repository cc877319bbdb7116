"""Group ``hll``: HyperLogLog updates against datasketch and Apache DataSketches."""

from __future__ import annotations

from typing import Any

from benchmarks.sketch_bench.harness import (
    DATASKETCH_ERR,
    DS_ERR,
    HLL_P,
    OURS_ERR,
    Data,
    Results,
    datasketch,
    ds,
    measure_ours_update,
    measure_throughput,
    ours,
    per_item_update,
    skipped_each,
)
from benchmarks.sketch_bench.ours import ds_hll_batch_supported, our_hll


def group_hll(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "hll"
    name = f"HLL p{HLL_P} update"
    # ours
    if ours is None:
        skipped_each(res, key="hll.{d}.ours", group=g, name=name, impl="sketches", reason=OURS_ERR)
    else:
        measure_ours_update(
            data,
            res,
            probes,
            key="hll.{d}.ours",
            group=g,
            name=name,
            setup=our_hll,
            repeat=repeat,
            label="hll update strings",
        )

    # datasketch (pure Python, per-item bytes): subset
    m = data.slow_n
    if datasketch is None:
        skipped_each(
            res,
            key="hll.{d}.datasketch",
            group=g,
            name=name,
            impl="datasketch",
            reason=DATASKETCH_ERR,
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
                fn=per_item_update(items),
                setup=lambda: datasketch.HyperLogLog(p=HLL_P),
                repeat=repeat,
                note=note,
                extra={"subset": True},
            )
        del int_bytes, str_bytes

    # Apache DataSketches
    if ds is None:
        skipped_each(
            res, key="hll.{d}.datasketches", group=g, name=name, impl="datasketches", reason=DS_ERR
        )
        skipped_each(
            res,
            key="cpc.{d}.datasketches",
            group=g,
            name=f"CPC lg_k={HLL_P} update",
            impl="datasketches",
            reason=DS_ERR,
        )
        return
    batch = ds_hll_batch_supported()
    probes["datasketches hll batch update"] = batch or "not available: per-item update only"

    def hll_setup() -> Any:
        return ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8)

    ints, strs = data.int_list(), data.str_list()
    int_row = (
        ("batch update(numpy int64 array)", lambda sk: sk.update(data.ints))
        if batch == "numpy int64 array"
        else ("per-item update(int) via map (no batch API)", per_item_update(ints))
    )
    str_row = ("per-item update(str) via map (no batch API)", per_item_update(strs))
    for d, (desc, update) in (("int64", int_row), ("strings", str_row)):
        measure_throughput(
            res,
            key=f"hll.{d}.datasketches",
            group=g,
            name=name,
            impl="datasketches",
            data=d,
            input_desc=desc,
            items=data.n,
            fn=update,
            setup=hll_setup,
            repeat=repeat,
            note="hll_sketch HLL_8",
        )
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
            fn=per_item_update(items),
            setup=lambda: ds.cpc_sketch(HLL_P),
            repeat=repeat,
            note="cpc_sketch",
        )
