"""Sketches per window x group: how a cell's partial sketches merge, and the row they make.

Per micro-batch:

1. the engine's one pass (:mod:`streaming.engine.onepass`) builds, in every input
   partition, one partial sketch per (window, pane, group, sketch) with the
   vectorised grouped builders of the ``sketches`` package, and sends it to every
   window containing the pane. Raw rows never leave the partition;
2. the merge stage (:mod:`streaming.engine.reduce`, on the executors, one task per
   slice of the keys) merges the partials of each pane (for a Count-Min with top-k,
   then offers it every distinct item the partitions saw, so its candidates are
   those of a one-pass build over the whole batch: the bytes do not depend on how
   the batch was split), then the panes of the window in a fixed order
   (:func:`merge_cell`), then, when the window is compacted, the rows stored by
   earlier batches.

Merging is exact for HLL registers, Count-Min counters and Bloom bits, so the
stored bytes do not depend on how events were split into partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streaming.engine.aggregates import group_map
from streaming.spec.windows import SketchSpec, WindowSpec
from streaming.units import US

#: the percentiles a quantiles sketch's row carries in ``stats`` (p50, p95, p99)
QUANTILES = (0.5, 0.95, 0.99)


def merge_cell(partials: Sequence[tuple[int, bytes, bytes | None]],
               read: Callable[[bytes], Any] | None = None) -> Any:
    """One cell's sketch from this batch's partials: (pane, bytes, items) triples.

    The partials of each pane are merged first (re-ranked over the items every
    partition saw, for a Count-Min with top-k), then the panes in order of their start.
    ``read`` turns bytes into a sketch (the cell's :meth:`SketchSpec.read`; by default
    ``sketches.from_bytes``).
    """
    import sketches

    read = read or sketches.from_bytes
    panes: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for pane, data, items in partials:
        panes.setdefault(pane, []).append((data, items))
    out = None
    for pane in sorted(panes):
        parts = panes[pane]
        # a fixed order of partials: the bytes must not depend on the shuffle's order
        parts.sort(key=lambda p: p[0])
        sketch = read(parts[0][0])
        for data, _ in parts[1:]:
            sketch.merge(read(data))
        if parts[0][1] is not None and len(parts) > 1:
            seen: list[Any] = []
            for _, items in parts:
                seen += orjson.loads(items)
            sketch.rerank(seen)
        if out is None:
            out = sketch
        else:
            out.merge(sketch)
    return out


def describe(kind: str, sketch: Any) -> tuple[float | None, float | None, float | None,
                                              list | None, dict[str, float]]:
    """(estimate, lower bound, upper bound, top-k, stats) of a sketch, as stored."""
    if kind == "hll":
        est, lo, hi = sketch.estimate_with_bounds(2)
        return (float(est), float(lo), float(hi), None,
                {"relative_error": float(sketch.relative_error())})
    if kind == "cms":
        top = [(str(item), int(count)) for item, count in sketch.top()]
        return (float(sketch.total), None, None, top,
                {"total": float(sketch.total), "error_bound": float(sketch.error_bound())})
    if kind == "bloom":
        return (float(sketch.estimate()), None, None, None,
                {"fill_ratio": float(sketch.fill_ratio()),
                 "expected_fpr": float(sketch.expected_fpr())})
    if kind == "quantiles":
        # estimate: the median, with its certain bounds; stats: the usual percentiles
        est, lo, hi = sketch.quantiles_with_bounds((0.5, *QUANTILES))
        stats = {f"p{round(q * 100):d}": float(v)
                 for q, v in zip(QUANTILES, est[1:].tolist(), strict=True)}
        stats.update(count=float(sketch.count), relative_error=float(sketch.relative_error()))
        return float(est[0]), float(lo[0]), float(hi[0]), None, stats
    return (float(sketch.estimate()), float(sketch.lower_bound(2)),
            float(sketch.upper_bound(2)), None, {})


def partial_record(window: WindowSpec, sk: SketchSpec, start_us: int, group: str,
                   data: bytes, last_batch: int, updated_us: int) -> dict[str, Any]:
    """The row (without ``final``) of a cell's partial state in an open window: its bytes.

    Its estimate, bounds, top-k and stats are left empty: a partial row holds one
    batch's events of the window, and the window's values come from merging its rows
    (what readers do); the final row carries them.
    """
    return {"window_name": window.name, "window_start": start_us,
            "window_end": start_us + window.size_s * US, "group_key": group,
            "group": group_map(window.group_by, group),
            "sketch_name": sk.name, "kind": sk.kind, "field": sk.field, "bytes": data,
            "estimate": None, "lower_bound": None, "upper_bound": None, "top_k": None,
            "stats": None, "last_batch": last_batch, "updated_at": updated_us}


def sketch_record(window: WindowSpec, sk: SketchSpec, start_us: int, group: str,
                  sketch: Any, last_batch: int, updated_us: int) -> dict[str, Any]:
    """The table row (without ``final``) of a cell's merged sketch."""
    est, lo, hi, top, stats = describe(sk.kind, sketch)
    return {"window_name": window.name, "window_start": start_us,
            "window_end": start_us + window.size_s * US, "group_key": group,
            "group": group_map(window.group_by, group),
            "sketch_name": sk.name, "kind": sk.kind,
            "field": sk.field, "bytes": sketch.to_bytes(), "estimate": est,
            "lower_bound": lo, "upper_bound": hi,
            "top_k": None if top is None else [{"item": i, "count": c} for i, c in top],
            "stats": list(stats.items()), "last_batch": last_batch, "updated_at": updated_us}
