"""How a Count-Min sketch's state changes: counting, candidate re-ranking, merging.

Counting goes to the exact table while it stays within the exact limit, else to the
counters; after every counted chunk and every merge the heavy-hitter candidates
are the best ``capacity`` of (old candidates | new items). Functions of
:class:`~sketches.cms.CountMinSketch`, whose methods call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from sketches import _exact, _topk
from sketches._column_items import column_items
from sketches._columns import Column

if TYPE_CHECKING:
    from sketches.cms import CountMinSketch

S = TypeVar("S", bound="CountMinSketch")

_EXACT_STEP = 1 << 14  # rows per exact-mode step (at least the exact limit + 1)


def count(
    sk: CountMinSketch,
    hashes: np.ndarray,
    weights: np.ndarray | None,
    column: Column | None,
    rows: np.ndarray,
) -> None:
    """Count ``hashes`` (of ``column[rows]``) with optional positive weights.

    In exact mode the rows go in steps of a little more than the exact limit, so a
    batch of many distinct items turns into counters after one small sort; the
    rest of the batch then goes to the counters, and the candidates are the best
    of every item seen either way.
    """
    start = 0
    step = max(sk.exact_limit + 1, _EXACT_STEP)
    while sk._counters is None and start < hashes.size:
        end = start + step
        w = None if weights is None else weights[start:end]
        if not count_exact(sk, hashes[start:end], w, column, rows[start:end]):
            sk._to_counters()
            break
        start = end
    if sk._counters is None or start >= hashes.size:
        return
    if start:
        hashes, rows = hashes[start:], rows[start:]
        weights = None if weights is None else weights[start:]
    sk._add(hashes, weights)
    if sk._top_k:
        refresh(sk, hashes, column, rows)


def count_exact(
    sk: CountMinSketch,
    hashes: np.ndarray,
    weights: np.ndarray | None,
    column: Column | None,
    rows: np.ndarray,
) -> bool:
    """Add to the exact table, or return False (changing nothing) past the limit."""
    distinct, counts, first = _topk.count_distinct(hashes, weights)
    table_hashes, _, _ = sk._table()
    new = ~np.isin(distinct, table_hashes) if table_hashes.size else None
    n_new = distinct.size if new is None else int(np.count_nonzero(new))
    if table_hashes.size + n_new > sk.exact_limit:
        return False
    items = None
    if sk._top_k:  # the items of hashes not held yet
        assert column is not None
        fresh = np.arange(distinct.size) if new is None else np.flatnonzero(new)
        items = [None] * distinct.size
        found = column_items(column, rows[first[fresh]])
        for j, item in zip(fresh.tolist(), found, strict=True):
            items[j] = item
    merged = _exact.merge(sk._table(), (distinct, counts, items))
    sk._ex_hashes, sk._ex_counts, sk._ex_items = merged
    sk._total += int(counts.sum())
    return True


def refresh(sk: CountMinSketch, hashes: np.ndarray, column: Column | None,
            rows: np.ndarray) -> None:
    """Re-rank candidates | distinct(hashes); new items come from ``column[rows]``."""
    cap = sk.capacity
    cand_est = sk._estimate_hashes(sk._cand_hashes)
    if sk._cand_hashes.size >= cap and hashes.size:
        # Only values at least as heavy as the cap-th candidate can get in.
        threshold = np.partition(cand_est, cand_est.size - cap)[cand_est.size - cap]
        heavy = np.flatnonzero(sk._estimate_hashes(hashes) >= threshold)
        hashes, rows = hashes[heavy], rows[heavy]
    new = _topk.sorted_unique(hashes)
    if sk._cand_hashes.size and new.size:
        new = new[~np.isin(new, sk._cand_hashes)]
    pool = np.concatenate((sk._cand_hashes, new))
    pool_est = np.concatenate((cand_est, sk._estimate_hashes(new)))
    chosen = _topk.rank_top(pool, pool_est, cap)
    old = sk._cand_hashes.size
    from_new = chosen[chosen >= old] - old
    new_items: dict[int, Any] = {}
    if from_new.size:
        assert column is not None
        found = _topk.first_rows(hashes, new[from_new])
        items = column_items(column, rows[found])
        new_items = dict(zip(from_new.tolist(), items, strict=True))
    sk._cand_items = [
        sk._cand_items[i] if i < old else new_items[i - old] for i in chosen.tolist()
    ]
    sk._cand_hashes = pool[chosen]


def merge(sk: CountMinSketch, other: CountMinSketch) -> None:
    """Add the other's counts to ``sk``, then re-rank the union of both candidate lists."""
    if sk._counters is None and other._counters is None:
        merged = _exact.merge(sk._table(), other._table())
        if merged[0].size <= sk.exact_limit:
            sk._ex_hashes, sk._ex_counts, sk._ex_items = merged
            sk._total += other._total
            return
    if sk._counters is None:
        sk._to_counters()
    assert sk._counters is not None
    if other._counters is None:
        pool_hashes, counts, pool_items = other._table()
        flat = sk._counters.reshape(-1)
        idx = sk._flat_indices(pool_hashes).reshape(-1)
        np.add.at(flat, idx, np.tile(counts, sk._depth))
    else:
        sk._counters += other._counters
        pool_hashes, pool_items = other._cand_hashes, other._cand_items
    sk._total += other._total
    if sk._top_k:
        assert pool_items is not None
        rank_candidates(sk, pool_hashes, pool_items)


def rank_candidates(sk: CountMinSketch, hashes: np.ndarray, items: list[Any]) -> None:
    """Candidates: the best ``capacity`` of the current ones and ``hashes``/``items``."""
    extra = np.flatnonzero(~np.isin(hashes, sk._cand_hashes))
    _, first = np.unique(hashes[extra], return_index=True)  # one of each hash
    extra = extra[first]
    pool = np.concatenate((sk._cand_hashes, hashes[extra]))
    every = sk._cand_items + [items[i] for i in extra.tolist()]
    chosen = _topk.rank_top(pool, sk._estimate_hashes(pool), sk.capacity)
    sk._cand_hashes = pool[chosen]
    sk._cand_items = [every[i] for i in chosen.tolist()]


def union_many(cls: type[S], sketches: Sequence[S]) -> S:
    """One pass: every exact table at once, then counters and one ranking if needed."""
    first = sketches[0]
    for other in sketches[1:]:
        first._check_mergeable(other)
    out = cls(**first.params())
    tables = [s._table() for s in sketches if s._counters is None]
    table = _exact.merge_many(tables or [out._table()])
    total = sum(s._total for s in sketches)
    dense = [s for s in sketches if s._counters is not None]
    if not dense and table[0].size <= out.exact_limit:
        out._ex_hashes, out._ex_counts, out._ex_items = table
        out._total = total
        return out
    out._ex_hashes, out._ex_counts, out._ex_items = table
    out._to_counters()
    assert out._counters is not None
    for s in dense:
        out._counters += s._counters
    out._total = total
    if out._top_k:
        hashes = [s._cand_hashes for s in dense]
        items = [x for s in dense for x in s._cand_items]
        pool = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        rank_candidates(out, pool, items)
    return out
