"""The Count-Min sketch's grouped build: one sketch per group in one vectorised pass.

One sort counts the distinct (group, item) pairs (:class:`~sketches._topk.GroupPairs`),
so the cost is O(rows + groups): groups within the exact limit take their slice of
that table, and counters are allocated only for the groups past it.

Example:
    >>> from sketches import CountMinSketch
    >>> [p.is_exact for p in build(CountMinSketch, [0, 1], ["x", "y"], 2, {"top_k": 1})]
    [True, True]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sketches import _topk
from sketches._base import iter_grouped
from sketches._cms_bytes import write_exact_many

if TYPE_CHECKING:
    from sketches.cms import CountMinSketch

__all__ = ["build"]

_CHUNK = 1 << 18
_NO_HASHES = np.empty(0, dtype=np.uint64)
_NO_HASHES.flags.writeable = False


def build(
    cls: type[CountMinSketch], codes: Any, values: Any, n_groups: int, params: dict[str, Any],
    as_bytes: bool = False,
) -> list[Any]:
    """``CountMinSketch.from_groups`` (see there); with ``as_bytes``, each sketch's
    ``to_bytes()`` instead (``group_bytes``): the exact tables with items are then
    written all at once, never built as objects."""
    template = cls(**params)
    n_groups, chunks = iter_grouped(template, codes, values, n_groups)
    size = template._width * template._depth
    pairs = _topk.GroupPairs()
    for group, hashes, column, rows in chunks:
        pairs.add(group, hashes, column, rows)
    group, hashes, counts = pairs.table()
    bounds = np.searchsorted(group, np.arange(n_groups + 1)).tolist()
    totals = np.zeros(n_groups, dtype=np.int64)
    np.add.at(totals, group, counts)
    slot = np.full(n_groups, -1, dtype=np.int64)
    dense_groups = np.flatnonzero(np.diff(bounds) > template.exact_limit)
    slot[dense_groups] = np.arange(dense_groups.size)
    in_dense = slot[group] >= 0
    dense_pairs, exact_pairs = np.flatnonzero(in_dense), np.flatnonzero(~in_dense)
    counters = np.zeros(dense_groups.size * size, dtype=np.int64)
    for a in range(0, dense_pairs.size, _CHUNK):
        sel = dense_pairs[a : a + _CHUNK]
        idx = template._flat_indices(hashes[sel]) + slot[group[sel]] * size
        np.add.at(counters, idx.reshape(-1), np.tile(counts[sel], template._depth))
    cand_bounds: list[int] = [0] * (n_groups + 1)
    cand_hashes, cand_items = _NO_HASHES, list[Any]()
    if template._top_k and dense_pairs.size:

        def estimate(g: np.ndarray, h: np.ndarray) -> np.ndarray:
            idx = template._flat_indices(h) + slot[g] * size
            return counters[idx].min(axis=0)

        cand_group, cand_hashes, cand_items = pairs.select(
            estimate, template.capacity, within=dense_pairs
        )
        cand_bounds = np.searchsorted(cand_group, np.arange(n_groups + 1)).tolist()
    written = None
    if as_bytes and template._top_k:
        exact = slot < 0
        data, item_bytes = pairs.encoded(exact_pairs)
        written = write_exact_many(
            template.to_bytes()[:23], np.where(exact, np.diff(bounds), 0), totals,
            counts[exact_pairs], data, item_bytes, exact,
        )
        exact_pairs = exact_pairs[:0]
    items: list[Any] = [None] * group.size
    if template._top_k and exact_pairs.size:
        for j, item in zip(exact_pairs.tolist(), pairs.items(exact_pairs), strict=True):
            items[j] = item
    out = []
    slots = slot.tolist()
    for i in range(n_groups):
        if written is not None and slots[i] < 0:
            out.append(written[0][written[1][i] : written[1][i + 1]].tobytes())
            continue
        sketch = cls(**params)
        sketch._total = int(totals[i])
        a, b = bounds[i], bounds[i + 1]
        if slots[i] >= 0:
            row = counters[slots[i] * size : (slots[i] + 1) * size]
            sketch._to_counters()
            sketch._counters = row.reshape(sketch._depth, -1).copy()
            ca, cb = cand_bounds[i], cand_bounds[i + 1]
            sketch._cand_hashes, sketch._cand_items = cand_hashes[ca:cb], cand_items[ca:cb]
        elif b > a:
            sketch._ex_hashes, sketch._ex_counts = hashes[a:b].copy(), counts[a:b].copy()
            sketch._ex_items = items[a:b] if template._top_k else None
        out.append(sketch.to_bytes() if as_bytes else sketch)
    return out
