"""Exact tables of small Count-Min sketches: distinct item hashes with their counts.

A table is three aligned things: strictly increasing uint64 hashes, positive int64
counts and, when the sketch tracks heavy hitters, the items themselves (a list). The
counters such a table stands for are never materialised for a query: the non-zero
counters are found by one sort of the table's counter positions and looked up.

Example:
    >>> import numpy as np
    >>> h, c, items = merge(
    ...     (np.array([3, 9], dtype=np.uint64), np.array([1, 2]), ["c", "i"]),
    ...     (np.array([5, 9], dtype=np.uint64), np.array([4, 1]), ["e", "i"]),
    ... )
    >>> h.tolist(), c.tolist(), items
    ([3, 5, 9], [1, 4, 3], ['c', 'e', 'i'])
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sketches.hashing import row_multipliers

__all__ = ["Table", "counter_indices", "merge", "merge_many", "nonzero_counters", "lookup"]

_ROW_TAG = b"ssk:cms "

Table = tuple[np.ndarray, np.ndarray, list[Any] | None]


def merge_many(tables: list[Table]) -> Table:
    """The union of tables, counts of equal hashes added (items of one of them kept).

    Example:
        >>> merge_many([])[0].size
        0
    """
    with_items = bool(tables) and tables[0][2] is not None
    if not tables:
        return np.empty(0, np.uint64), np.empty(0, np.int64), None
    if len(tables) == 1:
        h, c, only = tables[0]
        return h.copy(), c.copy(), None if only is None else list(only)
    hashes = np.concatenate([t[0] for t in tables])
    counts = np.concatenate([t[1] for t in tables])
    order = np.argsort(hashes, kind="stable")
    s = hashes[order]
    if s.size == 0:
        return s, counts.astype(np.int64), [] if with_items else None
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    summed = np.add.reduceat(counts[order], starts).astype(np.int64)
    items: list[Any] | None = None
    if with_items:
        every: list[Any] = []
        for t in tables:
            assert t[2] is not None
            every.extend(t[2])
        items = [every[i] for i in order[starts].tolist()]
    return s[starts], summed, items


def merge(a: Table, b: Table) -> Table:
    """The union of two tables (see :func:`merge_many`)."""
    return merge_many([a, b])


def nonzero_counters(flat_index: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct flat counter positions of a table and the value of each counter.

    ``flat_index`` is ``[depth, n]`` (each row already offset into the flat counters),
    ``counts`` the ``n`` counts.

    Example:
        >>> idx = np.array([[0, 2], [5, 5]])
        >>> [x.tolist() for x in nonzero_counters(idx, np.array([1, 2]))]
        [[0, 2, 5], [1, 2, 3]]
    """
    keys = flat_index.reshape(-1)
    weights = np.tile(counts, flat_index.shape[0])
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    if s.size == 0:
        return s, weights
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    return s[starts], np.add.reduceat(weights[order], starts).astype(np.int64)


def lookup(keys: np.ndarray, values: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """Counter values at ``flat_index`` (any shape) given the non-zero counters.

    Example:
        >>> lookup(np.array([2, 5]), np.array([7, 1]), np.array([[5, 3], [2, 0]])).tolist()
        [[1, 0], [7, 0]]
    """
    if keys.size == 0:
        return np.zeros(flat_index.shape, dtype=np.int64)
    pos = np.searchsorted(keys, flat_index)
    np.minimum(pos, keys.size - 1, out=pos)
    return np.where(keys[pos] == flat_index, values[pos], 0)


def counter_indices(hashes: np.ndarray, width: int, depth: int) -> np.ndarray:
    """``[depth, n]`` int64 indices of the counters item hashes add to, in the flattened
    ``depth x width`` counters of a Count-Min sketch (for many sketches' items at once,
    too).

    Example:
        >>> counter_indices(np.array([1 << 63], dtype=np.uint64), 100, 2).tolist()
        [[50], [150]]
    """
    # all rows at once: a few NumPy calls per batch of hashes, not a few per row
    # (a window's cell often holds a handful of items: the calls are the cost)
    out = np.multiply(row_multipliers(_ROW_TAG, depth)[:, None],
                      hashes.reshape(1, -1).astype(np.uint64, copy=False))
    out >>= np.uint64(32)
    out *= np.uint64(width)
    out >>= np.uint64(32)
    out += _row_offsets(depth, width)
    return out.view(np.int64)


@functools.cache
def _row_offsets(depth: int, width: int) -> np.ndarray:
    """``[depth, 1]``: where each row starts in the flattened counters."""
    out = (np.arange(depth, dtype=np.uint64) * np.uint64(width)).reshape(-1, 1)
    out.flags.writeable = False
    return out
