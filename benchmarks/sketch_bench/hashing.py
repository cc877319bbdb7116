"""Group ``hash``: hashing throughput of ints and strings."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from benchmarks.sketch_bench.harness import (
    FORM_LABEL,
    OURS_ERR,
    Data,
    Results,
    Row,
    measure_throughput,
    ours,
    skipped_each,
)


def group_hash(data: Data, res: Results, repeat: int, probes: dict[str, Any]) -> None:
    g = "hash"
    if ours is None:
        skipped_each(
            res, key="hash.{d}.ours", group=g, name="hash64", impl="sketches", reason=OURS_ERR
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
