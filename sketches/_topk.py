"""Sort-based helpers for heavy-hitter candidate lists (used by the Count-Min sketch).

Candidates are identified by their 64-bit hash and ranked by (estimate descending,
hash ascending), a total order that does not depend on arrival order. Everything here
is vectorised; ``np.unique`` is avoided on purpose because a plain sort is several
times faster for uint64 keys.

Example:
    >>> import numpy as np
    >>> est = np.array([5, 9, 5, 1], dtype=np.int64)
    >>> h = np.array([30, 10, 20, 40], dtype=np.uint64)
    >>> rank_top(h, est, 3).tolist()
    [1, 2, 0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sketches._column_items import column_items
from sketches._columns import BytesColumn, Column, DictColumn
from sketches._format import encoded_items, runs
from sketches.hashing import mix64

__all__ = [
    "sorted_unique",
    "rank_top",
    "first_rows",
    "distinct_rows",
    "top_per_group",
    "count_distinct",
    "GroupPairs",
]
_CHUNK = 1 << 18


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array.

    Example:
        >>> sorted_unique(np.array([3, 1, 3], dtype=np.uint64)).tolist()
        [1, 3]
    """
    s = np.sort(values)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def rank_top(hashes: np.ndarray, estimates: np.ndarray, capacity: int) -> np.ndarray:
    """Indices of the ``capacity`` best entries by (estimate desc, hash asc), in order.

    ``hashes`` must be distinct.
    """
    n = hashes.size
    if n > 4 * capacity and capacity > 0:
        # Every selected entry has an estimate >= the capacity-th largest: prefilter.
        threshold = np.partition(estimates, n - capacity)[n - capacity]
        keep = np.flatnonzero(estimates >= threshold)
        order = np.lexsort((hashes[keep], -estimates[keep]))[:capacity]
        return keep[order]
    return np.lexsort((hashes, -estimates))[:capacity]


def first_rows(hashes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each value of ``wanted`` (distinct, all present in ``hashes``), a row holding it.

    The smallest such row is returned, so the answer does not depend on sort internals.

    Example:
        >>> hashes = np.array([7, 5, 7, 5], dtype=np.uint64)
        >>> first_rows(hashes, np.array([5, 7], dtype=np.uint64)).tolist()
        [1, 0]
    """
    if wanted.size == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(wanted)
    sorted_wanted = wanted[order]
    pos = np.searchsorted(sorted_wanted, hashes)
    np.minimum(pos, sorted_wanted.size - 1, out=pos)
    match = np.flatnonzero(sorted_wanted[pos] == hashes)
    first = np.full(sorted_wanted.size, hashes.size, dtype=np.intp)
    np.minimum.at(first, pos[match], match)
    out = np.empty_like(first)
    out[order] = first
    return out


def distinct_rows(keys: np.ndarray) -> np.ndarray:
    """One row index per distinct key, in increasing key order.

    Which of several equal-key rows is returned is unspecified: callers use keys that
    identify the row's content (a 64-bit hash), so any of them gives the same result.

    Example:
        >>> keys = np.array([9, 4, 9, 4, 1], dtype=np.uint64)
        >>> keys[distinct_rows(keys)].tolist()
        [1, 4, 9]
    """
    if keys.size == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(keys)
    s = keys[order]
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return order[keep]


_EST_BITS = 40


def _group_thresholds(codes: np.ndarray, estimates: np.ndarray, capacity: int) -> np.ndarray:
    """Per entry, a lower bound on the estimate needed to make its group's top ``capacity``.

    One int64 sort of ``group << 40 | min(estimate, 2**40 - 1)``; clamping is monotone,
    so an entry in its group's true top ``capacity`` always passes the bound.
    """
    clamped = np.minimum(estimates, (1 << _EST_BITS) - 1)
    s = np.sort((codes.astype(np.int64) << _EST_BITS) | clamped)
    groups = s >> _EST_BITS
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    ends = np.append(starts[1:], s.size)
    kth = s[np.maximum(ends - capacity, starts)] & ((1 << _EST_BITS) - 1)
    per_group = np.zeros(int(groups[-1]) + 1, dtype=np.int64)
    per_group[groups[starts]] = np.where(ends - starts > capacity, kth, 0)
    return clamped >= per_group[codes]


def top_per_group(
    codes: np.ndarray, hashes: np.ndarray, estimates: np.ndarray, capacity: int
) -> np.ndarray:
    """Indices of each group's best ``capacity`` entries, sorted by (group, rank).

    Entries are distinct (group, hash) pairs; rank is (estimate desc, hash asc).

    Example:
        >>> top_per_group(np.array([0, 0, 1]), np.array([1, 2, 3], dtype=np.uint64),
        ...               np.array([1, 5, 2]), 1).tolist()
        [1, 2]
    """
    if codes.size == 0:
        return np.empty(0, dtype=np.intp)
    candidates = np.arange(codes.size)
    if codes.size > 4 * capacity and int(codes.max()) < 1 << 22:
        candidates = np.flatnonzero(_group_thresholds(codes, estimates, capacity))
    order = np.lexsort((hashes[candidates], -estimates[candidates], codes[candidates]))
    order = candidates[order]
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_codes[1:] != sorted_codes[:-1])))
    group_start = np.repeat(starts, np.diff(np.append(starts, sorted_codes.size)))
    rank = np.arange(sorted_codes.size) - group_start
    return order[rank < capacity]


def count_distinct(
    hashes: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct hashes (ascending), their summed weights (int64) and a row of each.

    Example:
        >>> h, c, rows = count_distinct(np.array([7, 5, 7], dtype=np.uint64), None)
        >>> h.tolist(), c.tolist(), h.tolist() == np.array([7, 5, 7])[rows].tolist()
        ([5, 7], [1, 2], True)
    """
    order = np.argsort(hashes, kind="stable")
    s = hashes[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1]))) if s.size else order
    if weights is None:
        counts = np.diff(np.append(starts, s.size)).astype(np.int64)
    else:
        counts = np.add.reduceat(weights[order].astype(np.int64), starts) if s.size else starts
    return s[starts], counts.astype(np.int64), order[starts]


class GroupPairs:
    """Distinct (group, item) pairs met by a grouped build, their counts, and their items.

    Example:
        >>> from sketches._columns import iter_columns
        >>> pairs = GroupPairs()
        >>> [(_, col)] = iter_columns(["a", "b", "a"])
        >>> h = np.array([5, 6, 5], dtype=np.uint64)
        >>> pairs.add(np.array([0, 0, 1]), h, col, np.arange(3))
        >>> group, hashes, counts = pairs.table()
        >>> group.tolist(), hashes.tolist(), counts.tolist(), pairs.items(np.array([2]))
        ([0, 0, 1], [5, 6, 5], [1, 1, 1], ['a'])
    """

    def __init__(self) -> None:
        self._columns: list[Column] = []
        self._chunks: list[tuple[np.ndarray, ...]] = []  # (group, hash, chunk no, row, key, count)
        self._table: tuple[np.ndarray, ...] | None = None

    def add(self, group: np.ndarray, hashes: np.ndarray, column: Column, rows: np.ndarray) -> None:
        """Count the distinct (group, hash) pairs of a chunk; ``rows`` locate the items."""
        if hashes.size == 0:
            return
        keys = hashes ^ mix64(group.astype(np.uint64))  # a 64-bit pair id, like the hash
        keys, counts, pick = count_distinct(keys, None)
        chunk_no = np.full(pick.size, len(self._columns), dtype=np.intp)
        self._chunks.append((group[pick], hashes[pick], chunk_no, rows[pick], keys, counts))
        self._columns.append(column)
        self._table = None

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Groups, hashes and counts of the distinct pairs, sorted by (group, hash)."""
        if self._table is None:
            if not self._chunks:
                empty = np.empty(0, np.int64)
                self._table = (empty, np.empty(0, np.uint64), empty, empty, empty)
            else:
                group, hashes, chunk_no, rows, keys, counts = (
                    np.concatenate(x) for x in zip(*self._chunks, strict=True)
                )
                if len(self._chunks) > 1:  # pairs are already distinct within each chunk
                    _, counts, pick = count_distinct(keys, counts)
                    group, hashes, chunk_no, rows = (
                        group[pick],
                        hashes[pick],
                        chunk_no[pick],
                        rows[pick],
                    )
                order = np.lexsort((hashes, group))
                self._table = (
                    group[order],
                    hashes[order],
                    counts[order],
                    chunk_no[order],
                    rows[order],
                )
        return self._table[0], self._table[1], self._table[2]

    def items(self, chosen: np.ndarray) -> list[Any]:
        """The items of the chosen pairs (indices into :meth:`table`)."""
        self.table()
        assert self._table is not None
        chunk_no, rows = self._table[3][chosen], self._table[4][chosen]
        if len(self._columns) == 1:
            return column_items(self._columns[0], rows)
        items: list[Any] = [None] * chosen.size
        for no, column in enumerate(self._columns):
            sel = np.flatnonzero(chunk_no == no)
            found = column_items(column, rows[sel]) if sel.size else []
            for j, item in zip(sel.tolist(), found, strict=True):
                items[j] = item
        return items

    def encoded(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The items of the chosen pairs as ``encode_items`` writes them, one after
        another in one byte array, and each one's encoded length (strings and bytes
        copied column to column, without Python objects)."""
        self.table()
        assert self._table is not None
        rows = self._table[4][chosen]
        column = self._columns[0] if len(self._columns) == 1 else None
        if isinstance(column, DictColumn):
            column, rows = column.dictionary, column.indices[rows]
        if not isinstance(column, BytesColumn):
            return encoded_items(self.items(chosen))
        lengths = column.lengths[rows].astype(np.int64)
        size = lengths + 5  # tag, uint32 length, the bytes
        at = (np.cumsum(size) - size).astype(np.int64)
        out = np.zeros(int(size.sum()), dtype=np.uint8)
        out[at] = 4 if column.is_str else 5
        out[(at[:, None] + 1 + np.arange(4)).ravel()] = lengths.astype("<u4").view(np.uint8)
        out[runs(at + 5, lengths, 1)] = column.data[runs(column.starts[rows], lengths, 1)]
        return out, size

    def select(
        self,
        estimate: Callable[[np.ndarray, np.ndarray], np.ndarray],
        capacity: int,
        within: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """Each group's best ``capacity`` pairs by (``estimate`` desc, hash asc).

        Args:
            estimate: Estimates of (groups, hashes) arrays.
            capacity: Pairs kept per group.
            within: Optional indices into :meth:`table`: choose among these pairs only.

        Returns:
            Groups (ascending), hashes and items of the chosen pairs, in rank order
            within each group.
        """
        group, hashes, _ = self.table()
        pick = np.arange(group.size) if within is None else within
        group, hashes = group[pick], hashes[pick]
        est = np.empty(hashes.size, dtype=np.int64)
        for a in range(0, hashes.size, _CHUNK):
            est[a : a + _CHUNK] = estimate(group[a : a + _CHUNK], hashes[a : a + _CHUNK])
        chosen = top_per_group(group, hashes, est, capacity)
        return group[chosen], hashes[chosen], self.items(pick[chosen])
