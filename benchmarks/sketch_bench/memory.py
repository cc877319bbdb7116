"""Group ``memory``: peak extra memory of updates."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.sketch_bench.harness import (
    FORM_LABEL,
    HLL_P,
    OURS_ERR,
    Data,
    Results,
    Row,
    ours,
    pa,
    skipped,
)
from benchmarks.sketch_bench.ours import our_hll


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
                reason=OURS_ERR,
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
