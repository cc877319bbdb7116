"""Count-Min sketch with optional heavy-hitter (top-k) candidates.

Counters are int64 ``[depth, width]``. Row ``i`` of a value with hash ``h`` uses column
``(((h * a_i mod 2**64) >> 32) * width) >> 32``: multiply-shift with a fixed odd
multiplier per row (:func:`~sketches.hashing.row_multipliers`), so rows are
independent for distinct values (plain double hashing ``h + i * h2`` makes two values
collide in every row with probability about ``1 / width**2``, not ``1 / width**depth``).
A point estimate is the minimum over rows:
it never underestimates, and exceeds the true count by more than ``epsilon * N`` with
probability at most ``delta`` (``epsilon = e / width``, ``delta = exp(-depth)``).

Top-k (``top_k > 0``): the sketch keeps up to ``capacity = max(4 * top_k, 64)``
candidate items. After every update chunk and every merge, the candidates are the
best ``capacity`` of (old candidates | distinct new items), re-estimated with the
current counters and ranked by (estimate descending, hash ascending). Four times
``top_k`` leaves room for items that rank below ``top_k`` in every part of a split
stream but in the top ``top_k`` of the whole; the floor of 64 keeps small ``top_k``
robust at a cost of a few hundred bytes.

Exact mode: while at most :func:`exact_limit` distinct items were counted (``width *
depth / 2``, or ``/ 8`` with top-k since every item is then kept too), the sketch holds
no counters but the exact table item hash -> count (16 bytes an item against 8 per
counter), plus every item when ``top_k > 0``. Estimates are computed from the table as
the counters would give them (collisions included), so every answer is identical to
the dense form's; ``top(k)`` ranks every item seen, not a candidate list. Past the
limit the table becomes counters, and the candidates the best ``capacity`` of all its
items. The mode depends on the distinct items alone.

Determinism contract: counters (and ``total``) are byte-identical for any split and
order of the input, and so is the whole sketch in exact mode. The candidate list is
order- and split-independent whenever at most ``max(capacity, exact_limit)`` distinct
items were seen; beyond that, ``top(k)`` is correct up to the Count-Min error bound
(and :meth:`CountMinSketch.rerank` restores split-independence). Items are identified
by their 64-bit hash (collisions have probability about ``n**2 / 2**65``).

Serialised payload (after the common header): width uint32, depth uint16, top_k
uint32, total uint64, encoding uint8 (0 dense, 1 sparse, 2 exact), value width uint8
(1, 2, 4 or 8 bytes, the smallest holding the largest counter or count); dense: all
counters; sparse: uint32 count, uint32 flat indices, values; then uint32 candidate
count and the type-tagged candidate items in rank order. Exact (format version 2):
uint32 count, then with top-k the counts and the type-tagged items, without top-k the
uint64 hashes and the counts, all in increasing hash order.

Example:
    >>> cms = CountMinSketch(epsilon=0.01, delta=0.01, top_k=2)
    >>> _ = cms.update(["a", "b", "a", "c", "a", "b"])
    >>> int(cms.estimate("a")), cms.top(2)
    (3, [('a', 3), ('b', 2)])
    >>> CountMinSketch.from_bytes(cms.to_bytes()) == cms
    True
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np

from sketches import _cms_bytes, _cms_groups, _cms_state, _exact, _topk
from sketches._base import Sketch, check_int, read_only
from sketches._cms_bytes import write_exact_many as exact_tables_bytes
from sketches._columns import Column, input_length, iter_columns, prepare
from sketches._exact import counter_indices
from sketches._format import KIND_CMS
from sketches.errors import InvalidParameterError
from sketches.hashing import check_seed, hash_column

__all__ = [
    "CountMinSketch",
    "candidate_capacity",
    "counter_indices",
    "exact_limit",
    "exact_tables_bytes",
]

MAX_WIDTH = 1 << 26
MAX_DEPTH = 64
MAX_TOP_K = 1 << 16
_CHUNK = 1 << 18
_NO_HASHES = np.empty(0, dtype=np.uint64)
_NO_HASHES.flags.writeable = False
_NO_COUNTS = np.empty(0, dtype=np.int64)
_NO_COUNTS.flags.writeable = False


def candidate_capacity(top_k: int) -> int:
    """Number of heavy-hitter candidates kept for a given ``top_k`` (0 when off).

    Example:
        >>> candidate_capacity(0), candidate_capacity(10), candidate_capacity(100)
        (0, 64, 400)
    """
    return max(4 * top_k, 64) if top_k else 0


def exact_limit(width: int, depth: int, top_k: int) -> int:
    """Most distinct items an exact-mode sketch holds before it becomes counters.

    Example:
        >>> exact_limit(2719, 5, 0), exact_limit(2719, 5, 20)
        (6797, 1699)
    """
    return (width * depth) // (8 if top_k else 2)


def _is_scalar(values: Any) -> bool:
    return values is None or isinstance(values, str | bytes | int | float | np.generic)


class CountMinSketch(Sketch):
    """Frequency sketch: point estimates, total count, optional top-k heavy hitters.

    Give either ``width`` and ``depth`` or ``epsilon`` and ``delta``
    (``width = ceil(e / epsilon)``, ``depth = ceil(ln(1 / delta))``); with neither, the
    defaults are ``epsilon=0.001, delta=0.01`` (width 2719, depth 5).

    Args:
        width: Counters per row, in ``[1, 2**26]``.
        depth: Number of rows, in ``[1, 64]``.
        epsilon: Relative error bound (``0 < epsilon <= 1``).
        delta: Failure probability (``0 < delta < 1``).
        seed: Hash seed.
        top_k: Number of heavy hitters to track (0 = off).

    Example:
        >>> CountMinSketch(epsilon=0.01, delta=0.05).params()
        {'width': 272, 'depth': 3, 'seed': 0, 'top_k': 0}
    """

    KIND = KIND_CMS

    def __init__(
        self,
        width: int | None = None,
        depth: int | None = None,
        *,
        epsilon: float | None = None,
        delta: float | None = None,
        seed: int = 0,
        top_k: int = 0,
    ) -> None:
        if width is None and depth is None:
            eps = 0.001 if epsilon is None else epsilon
            dlt = 0.01 if delta is None else delta
            if not (isinstance(eps, int | float) and 0.0 < eps <= 1.0):
                raise InvalidParameterError(f"epsilon must be in (0, 1], got {eps!r}")
            if not (isinstance(dlt, int | float) and 0.0 < dlt < 1.0):
                raise InvalidParameterError(f"delta must be in (0, 1), got {dlt!r}")
            width = math.ceil(math.e / eps)
            depth = max(1, math.ceil(math.log(1.0 / dlt)))
        elif width is None or depth is None or epsilon is not None or delta is not None:
            raise InvalidParameterError("give both width and depth, or epsilon and delta")
        self._width = check_int("width", width, 1, MAX_WIDTH)
        self._depth = check_int("depth", depth, 1, MAX_DEPTH)
        self._seed = check_seed(seed)
        self._top_k = check_int("top_k", top_k, 0, MAX_TOP_K)
        self._counters: np.ndarray | None = None  # once past the exact limit
        self._total = 0
        # exact mode: distinct hashes, their counts and (with top-k) their items
        self._ex_hashes: np.ndarray | None = _NO_HASHES
        self._ex_counts: np.ndarray | None = _NO_COUNTS
        self._ex_items: list[Any] | None = [] if self._top_k else None
        # counters mode: heavy-hitter candidates in rank order
        self._cand_hashes = _NO_HASHES
        self._cand_items: list[Any] = []

    # ------------------------------------------------------------ basics

    @property
    def width(self) -> int:
        """Counters per row."""
        return self._width

    @property
    def depth(self) -> int:
        """Number of rows."""
        return self._depth

    @property
    def top_k(self) -> int:
        """Number of heavy hitters tracked (0 = off)."""
        return self._top_k

    @property
    def capacity(self) -> int:
        """Number of heavy-hitter candidates kept (see :func:`candidate_capacity`)."""
        return candidate_capacity(self._top_k)

    @property
    def exact_limit(self) -> int:
        """Most distinct items held in exact mode (see :func:`exact_limit`)."""
        return exact_limit(self._width, self._depth, self._top_k)

    @property
    def is_exact(self) -> bool:
        """Whether the sketch holds exact counts rather than counters."""
        return self._counters is None

    @property
    def epsilon(self) -> float:
        """``e / width``: the relative error of a point estimate."""
        return math.e / self._width

    @property
    def delta(self) -> float:
        """``exp(-depth)``: the probability that an estimate exceeds the error bound."""
        return math.exp(-self._depth)

    @property
    def total(self) -> int:
        """``N``: the sum of all counts added."""
        return self._total

    @property
    def counters(self) -> np.ndarray:
        """A read-only view of the ``[depth, width]`` counters (built while exact)."""
        return read_only(self._dense_counters())

    def params(self) -> dict[str, Any]:
        """``{"width", "depth", "seed", "top_k"}``."""
        return {
            "width": self._width,
            "depth": self._depth,
            "seed": self._seed,
            "top_k": self._top_k,
        }

    def error_bound(self) -> float:
        """``epsilon * N``: with probability ``1 - delta`` an estimate is at most this high."""
        return self.epsilon * self._total

    def is_empty(self) -> bool:
        """Whether the total count is zero."""
        return self._total == 0

    def _state_equal(self, other: Self) -> bool:
        if self._total != other._total or self.is_exact != other.is_exact:
            return False
        if self._counters is None or other._counters is None:
            (h1, c1, i1), (h2, c2, i2) = self._table(), other._table()
            return bool(np.array_equal(h1, h2)) and bool(np.array_equal(c1, c2)) and i1 == i2
        return (
            bool(np.array_equal(self._counters, other._counters))
            and bool(np.array_equal(self._cand_hashes, other._cand_hashes))
            and self._cand_items == other._cand_items
        )

    def _summary(self) -> str:
        return f"total={self._total}"

    # ------------------------------------------------------------ hashing into counters

    def _flat_indices(self, hashes: np.ndarray) -> np.ndarray:
        """``[depth, n]`` int64 indices into the flattened counters."""
        return counter_indices(hashes, self._width, self._depth)

    def _table(self) -> _exact.Table:
        assert self._ex_hashes is not None and self._ex_counts is not None
        return self._ex_hashes, self._ex_counts, self._ex_items

    def _dense_counters(self) -> np.ndarray:
        if self._counters is not None:
            return self._counters
        flat = np.zeros(self._depth * self._width, dtype=np.int64)
        hashes, counts, _ = self._table()
        np.add.at(flat, self._flat_indices(hashes).reshape(-1), np.tile(counts, self._depth))
        return flat.reshape(self._depth, self._width)

    def _estimate_hashes(self, hashes: np.ndarray) -> np.ndarray:
        out = np.empty(hashes.size, dtype=np.int64)
        if self._counters is None:
            table_hashes, counts, _ = self._table()
            keys, values = _exact.nonzero_counters(self._flat_indices(table_hashes), counts)
            for a in range(0, hashes.size, _CHUNK):
                idx = self._flat_indices(hashes[a : a + _CHUNK])
                out[a : a + _CHUNK] = _exact.lookup(keys, values, idx).min(axis=0)
            return out
        flat = self._counters.reshape(-1)
        for a in range(0, hashes.size, _CHUNK):
            idx = self._flat_indices(hashes[a : a + _CHUNK])
            out[a : a + _CHUNK] = flat[idx].min(axis=0)
        return out

    def _add(self, hashes: np.ndarray, weights: np.ndarray | None) -> None:
        """Add to the counters (counters mode only)."""
        assert self._counters is not None
        flat = self._counters.reshape(-1)
        for a in range(0, hashes.size, _CHUNK):
            idx = self._flat_indices(hashes[a : a + _CHUNK])
            if weights is None:
                np.add.at(flat, idx.reshape(-1), 1)
            else:
                w = np.broadcast_to(weights[a : a + _CHUNK], idx.shape).reshape(-1)
                np.add.at(flat, idx.reshape(-1), w)
        self._total += int(hashes.size) if weights is None else int(weights.sum())

    def _to_counters(self) -> None:
        """Leave exact mode: the table becomes counters, its items candidates (unranked)."""
        table_hashes, _, items = self._table()
        self._counters = self._dense_counters()
        if self._top_k:
            assert items is not None
            self._cand_hashes, self._cand_items = table_hashes, items
        self._ex_hashes = self._ex_counts = self._ex_items = None

    def _count(
        self,
        hashes: np.ndarray,
        weights: np.ndarray | None,
        column: Column | None,
        rows: np.ndarray,
    ) -> None:
        _cms_state.count(self, hashes, weights, column, rows)

    def _update_hashes(self, hashes: np.ndarray) -> None:
        if self._top_k:
            raise InvalidParameterError("a Count-Min sketch with top_k needs values, not hashes")
        self._count(hashes, None, None, np.arange(hashes.size))

    # ------------------------------------------------------------ update / estimate

    def update(self, values: Any, counts: Any = None) -> Self:
        """Add values, each with count 1 or with the matching entry of ``counts``.

        Args:
            values: Anything :func:`sketches.hash64` accepts; nulls and NaN are skipped
                (together with their counts).
            counts: Optional non-negative integer weights, one per value.

        Returns:
            ``self``.
        """
        weights = None
        values = prepare(values)
        if counts is not None:
            weights = np.asarray(counts)
            if weights.ndim == 0:
                weights = weights.reshape(1)
            if weights.size and weights.dtype.kind not in "iub":
                raise InvalidParameterError("counts must be integers")
            weights = weights.astype(np.int64)
            if weights.size != input_length(values):
                raise InvalidParameterError(
                    f"counts has {weights.size} entries but values has {input_length(values)}"
                )
            if weights.size and int(weights.min()) < 0:
                raise InvalidParameterError("counts must be non-negative")
        for offset, column in iter_columns(values):
            hashes = hash_column(column, self._seed)
            rows = np.arange(len(column)) if column.valid is None else np.flatnonzero(column.valid)
            w = None if weights is None else weights[offset : offset + len(column)][rows]
            hashes = hashes[rows]
            if w is not None and not w.all():  # zero counts change nothing: drop them
                positive = np.flatnonzero(w)
                hashes, rows, w = hashes[positive], rows[positive], w[positive]
            self._count(hashes, w, column, rows)
        return self

    def estimate(self, values: Any) -> Any:
        """Point estimates (never below the true count), one per input value.

        Returns:
            An int for a scalar input, else an int64 array aligned with the input
            (0 for nulls).
        """
        parts = []
        for _, column in iter_columns(values):
            est = self._estimate_hashes(hash_column(column, self._seed))
            if column.valid is not None:
                est[~column.valid] = 0
            parts.append(est)
        out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return int(out[0]) if _is_scalar(values) else out

    # ------------------------------------------------------------ heavy hitters

    def top(self, k: int | None = None) -> list[tuple[Any, int]]:
        """The ``k`` (default ``top_k``) heaviest candidates as ``(item, estimate)``."""
        if not self._top_k:
            return []
        k = self._top_k if k is None else check_int("k", k, 0, self.capacity)
        if self._counters is None:  # exact mode: rank every item
            hashes, counts, items = self._table()
            assert items is not None
            # each item's estimate, from the counters the items themselves fill (the
            # counter positions computed once, for both)
            idx = self._flat_indices(hashes)
            est = _exact.lookup(*_exact.nonzero_counters(idx, counts), idx).min(axis=0)
            chosen = _topk.rank_top(hashes, est, k)
            return [(items[i], int(est[i])) for i in chosen.tolist()]
        est = self._estimate_hashes(self._cand_hashes[:k])
        return [(item, int(e)) for item, e in zip(self._cand_items[:k], est.tolist(), strict=True)]

    def rerank(self, values: Any) -> Self:
        """Offer ``values`` as heavy-hitter candidates without counting them.

        The candidates become the best ``capacity`` of (current candidates | distinct
        values with a non-zero estimate), ranked by the current counters. Offering
        every distinct item a stream held, after merging the counters of its parts,
        gives the candidates a one-pass build over the whole stream gives, whatever
        the split: that is how partials built in parallel stay split-independent.
        In exact mode every counted item is known already and nothing changes.

        Example:
            >>> a = CountMinSketch(width=64, depth=2, top_k=1).update(["x", "y", "y"])
            >>> b = CountMinSketch(width=64, depth=2, top_k=1).update(["x", "x"])
            >>> a.merge(b).rerank(["x", "y"]).top()
            [('x', 3)]
        """
        if not self._top_k or self._counters is None:
            return self
        for _, column, hashes in self._hashed(values):
            rows = np.arange(len(column)) if column.valid is None else np.flatnonzero(column.valid)
            hashes = hashes[rows]
            counted = self._estimate_hashes(hashes) > 0
            self._refresh(hashes[counted], column, rows[counted])
        return self

    def _refresh(self, hashes: np.ndarray, column: Column | None, rows: np.ndarray) -> None:
        _cms_state.refresh(self, hashes, column, rows)

    def merge(self, other: Self) -> Self:
        """Add the other's counts, then re-rank the union of both candidate lists.

        Two exact tables merge into one while the union stays within the exact limit;
        otherwise this sketch becomes counters and the other's counts (counters or
        table) are added, its candidates (or all its items) joining the pool.
        """
        self._check_mergeable(other)
        _cms_state.merge(self, other)
        return self

    def _rank_candidates(self, hashes: np.ndarray, items: list[Any]) -> None:
        _cms_state.rank_candidates(self, hashes, items)

    @classmethod
    def _union_many(cls, sketches: list[Self]) -> Self:
        """One pass: every exact table at once, then counters and one ranking if needed."""
        return _cms_state.union_many(cls, sketches)

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise (exact table, or counters sparse when smaller); deterministic."""
        return _cms_bytes.write(self)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes` (format version 1 or 2), checking every
        invariant.

        Raises:
            SketchFormatError: for anything but a valid, canonical Count-Min encoding.
        """
        out: Self = _cms_bytes.read(cls, data)
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group in one vectorised pass (see :meth:`Sketch.from_groups`).

        One sort counts the distinct (group, item) pairs: O(rows + groups). Groups
        within the exact limit take their slice of that table; the others get counters
        (``np.add.at`` on ``[group, row, column]`` indices, for those groups only) and
        the best ``capacity`` of their pairs as candidates, which is what a plain
        ``update`` gives a group of at most one update chunk.

        Example:
            >>> parts = CountMinSketch.from_groups([0, 1, 0], ["x", "y", "x"], 2, top_k=1)
            >>> [p.top() for p in parts]
            [[('x', 2)], [('y', 1)]]
        """
        return _cms_groups.build(cls, codes, values, n_groups, params)

    @classmethod
    def group_bytes(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[bytes]:
        """``[s.to_bytes() for s in from_groups(...)]``, the small (exact) sketches written
        all at once without building them: what a grouped build that only stores its
        sketches needs."""
        return _cms_groups.build(cls, codes, values, n_groups, params, as_bytes=True)
