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

Determinism contract: counters (and ``total``) are byte-identical for any split and
order of the input. The candidate list is order- and split-independent whenever at
most ``capacity`` distinct items were seen (it then holds every one of them); beyond
that, ``top(k)`` is correct up to the Count-Min error bound. Items are identified by
their 64-bit hash (collisions have probability about ``n**2 / 2**65``).

Serialised payload (after the common header): width uint32, depth uint16, top_k
uint32, total uint64, encoding uint8 (0 dense, 1 sparse), value width uint8 (1, 2, 4
or 8 bytes, the smallest holding the largest counter); dense: all counters; sparse:
uint32 count, uint32 flat indices, values; then uint32 candidate count and the
type-tagged candidate items in rank order.

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
import struct
from typing import Any, Self

import numpy as np

from sketches import _topk
from sketches._base import Sketch, check_int, iter_grouped
from sketches._columns import Column, column_items, input_length, iter_columns, prepare
from sketches._format import KIND_CMS, Reader, encode_items, seal, uint_width
from sketches.errors import InvalidParameterError, SketchFormatError
from sketches.hashing import check_seed, hash64, hash_column, row_multipliers

__all__ = ["CountMinSketch", "candidate_capacity"]

MAX_WIDTH = 1 << 26
MAX_DEPTH = 64
MAX_TOP_K = 1 << 16
_ROW_TAG = b"ssk:cms "
_CHUNK = 1 << 18


def candidate_capacity(top_k: int) -> int:
    """Number of heavy-hitter candidates kept for a given ``top_k`` (0 when off).

    Example:
        >>> candidate_capacity(0), candidate_capacity(10), candidate_capacity(100)
        (0, 64, 400)
    """
    return max(4 * top_k, 64) if top_k else 0


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
        self._counters = np.zeros((self._depth, self._width), dtype=np.int64)
        self._total = 0
        self._cand_hashes = np.empty(0, dtype=np.uint64)
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
        """A read-only view of the ``[depth, width]`` counters."""
        view = self._counters.view()
        view.flags.writeable = False
        return view

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
        return (
            self._total == other._total
            and bool(np.array_equal(self._counters, other._counters))
            and bool(np.array_equal(self._cand_hashes, other._cand_hashes))
            and self._cand_items == other._cand_items
        )

    def _summary(self) -> str:
        return f"total={self._total}"

    # ------------------------------------------------------------ hashing into counters

    def _flat_indices(self, hashes: np.ndarray) -> np.ndarray:
        """``[depth, n]`` int64 indices into the flattened counters."""
        out = np.empty((self._depth, hashes.size), dtype=np.uint64)
        width = np.uint64(self._width)
        for row, a in enumerate(row_multipliers(_ROW_TAG, self._depth)):
            col = out[row]
            np.multiply(hashes, a, out=col)
            col >>= np.uint64(32)
            col *= width
            col >>= np.uint64(32)
            col += np.uint64(row * self._width)
        return out.view(np.int64)

    def _estimate_hashes(self, hashes: np.ndarray) -> np.ndarray:
        out = np.empty(hashes.size, dtype=np.int64)
        flat = self._counters.reshape(-1)
        for a in range(0, hashes.size, _CHUNK):
            idx = self._flat_indices(hashes[a : a + _CHUNK])
            out[a : a + _CHUNK] = flat[idx].min(axis=0)
        return out

    def _add(self, hashes: np.ndarray, weights: np.ndarray | None) -> None:
        flat = self._counters.reshape(-1)
        for a in range(0, hashes.size, _CHUNK):
            idx = self._flat_indices(hashes[a : a + _CHUNK])
            if weights is None:
                np.add.at(flat, idx.reshape(-1), 1)
            else:
                w = np.broadcast_to(weights[a : a + _CHUNK], idx.shape).reshape(-1)
                np.add.at(flat, idx.reshape(-1), w)
        self._total += int(hashes.size) if weights is None else int(weights.sum())

    def _update_hashes(self, hashes: np.ndarray) -> None:
        self._add(hashes, None)

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
            self._add(hashes, w)
            if self._top_k:
                if w is not None:
                    positive = w > 0
                    hashes, rows = hashes[positive], rows[positive]
                self._refresh(hashes, column, rows)
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
        est = self._estimate_hashes(self._cand_hashes[:k])
        return [(item, int(e)) for item, e in zip(self._cand_items[:k], est.tolist(), strict=True)]

    def rerank(self, values: Any) -> Self:
        """Offer ``values`` as heavy-hitter candidates without counting them.

        The candidates become the best ``capacity`` of (current candidates | distinct
        values with a non-zero estimate), ranked by the current counters. Offering
        every distinct item a stream held, after merging the counters of its parts,
        gives the candidates a one-pass build over the whole stream gives, whatever
        the split: that is how partials built in parallel stay split-independent.

        Example:
            >>> a = CountMinSketch(width=64, depth=2, top_k=1).update(["x", "y", "y"])
            >>> b = CountMinSketch(width=64, depth=2, top_k=1).update(["x", "x"])
            >>> a.merge(b).rerank(["x", "y"]).top()
            [('x', 3)]
        """
        if not self._top_k:
            return self
        for _, column, hashes in self._hashed(values):
            rows = np.arange(len(column)) if column.valid is None else np.flatnonzero(column.valid)
            hashes = hashes[rows]
            counted = self._estimate_hashes(hashes) > 0
            self._refresh(hashes[counted], column, rows[counted])
        return self

    def _refresh(self, hashes: np.ndarray, column: Column | None, rows: np.ndarray) -> None:
        """Re-rank candidates | distinct(hashes); new items come from ``column[rows]``."""
        cap = self.capacity
        cand_est = self._estimate_hashes(self._cand_hashes)
        if self._cand_hashes.size >= cap and hashes.size:
            # Only values at least as heavy as the cap-th candidate can get in.
            threshold = np.partition(cand_est, cand_est.size - cap)[cand_est.size - cap]
            heavy = np.flatnonzero(self._estimate_hashes(hashes) >= threshold)
            hashes, rows = hashes[heavy], rows[heavy]
        new = _topk.sorted_unique(hashes)
        if self._cand_hashes.size and new.size:
            new = new[~np.isin(new, self._cand_hashes)]
        pool = np.concatenate((self._cand_hashes, new))
        pool_est = np.concatenate((cand_est, self._estimate_hashes(new)))
        chosen = _topk.rank_top(pool, pool_est, cap)
        old = self._cand_hashes.size
        from_new = chosen[chosen >= old] - old
        new_items: dict[int, Any] = {}
        if from_new.size:
            assert column is not None
            found = _topk.first_rows(hashes, new[from_new])
            items = column_items(column, rows[found])
            new_items = dict(zip(from_new.tolist(), items, strict=True))
        self._cand_items = [
            self._cand_items[i] if i < old else new_items[i - old] for i in chosen.tolist()
        ]
        self._cand_hashes = pool[chosen]

    def merge(self, other: Self) -> Self:
        """Add counters and totals, then re-rank the union of both candidate lists."""
        self._check_mergeable(other)
        self._counters += other._counters
        self._total += other._total
        if self._top_k and other._cand_hashes.size:
            extra = ~np.isin(other._cand_hashes, self._cand_hashes)
            pool = np.concatenate((self._cand_hashes, other._cand_hashes[extra]))
            items = self._cand_items + [
                item for item, keep in zip(other._cand_items, extra.tolist(), strict=True) if keep
            ]
            chosen = _topk.rank_top(pool, self._estimate_hashes(pool), self.capacity)
            self._cand_hashes = pool[chosen]
            self._cand_items = [items[i] for i in chosen.tolist()]
        elif self._top_k:
            chosen = _topk.rank_top(
                self._cand_hashes, self._estimate_hashes(self._cand_hashes), self.capacity
            )
            self._cand_hashes = self._cand_hashes[chosen]
            self._cand_items = [self._cand_items[i] for i in chosen.tolist()]
        return self

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise (sparse when smaller, narrowest counter width); deterministic."""
        flat = self._counters.reshape(-1)
        vw = uint_width(int(flat.max()))
        nonzero = np.flatnonzero(flat)
        sparse = nonzero.size * (4 + vw) + 4 < flat.size * vw
        parts = [
            struct.pack(
                "<IHIQBB", self._width, self._depth, self._top_k, self._total, int(sparse), vw
            )
        ]
        if sparse:
            parts.append(struct.pack("<I", nonzero.size))
            parts.append(nonzero.astype("<u4").tobytes())
            parts.append(flat[nonzero].astype(f"<u{vw}").tobytes())
        else:
            parts.append(flat.astype(f"<u{vw}").tobytes())
        parts.append(struct.pack("<I", len(self._cand_items)))
        parts.append(encode_items(self._cand_items))
        return seal(KIND_CMS, self._seed, *parts)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes`, checking every invariant.

        Raises:
            SketchFormatError: for anything but a valid, canonical Count-Min encoding.
        """
        reader, seed = Reader.open(data, KIND_CMS)
        width, depth, top_k, total, sparse, vw = reader.unpack("<IHIQBB")
        try:
            out = cls(width, depth, seed=seed, top_k=top_k)
        except InvalidParameterError as exc:
            raise SketchFormatError(f"bad Count-Min parameters: {exc}") from None
        if vw not in (1, 2, 4, 8) or sparse not in (0, 1):
            raise SketchFormatError(f"unknown Count-Min encoding {sparse}/{vw}")
        size = width * depth
        flat = np.zeros(size, dtype=np.uint64)
        if sparse:
            (count,) = reader.unpack("<I", "sparse count")
            index = reader.array("<u4", count, "sparse indices").astype(np.intp)
            values = reader.array(f"<u{vw}", count, "sparse counters").astype(np.uint64)
            if count and (
                int(index[-1]) >= size or np.any(np.diff(index) <= 0) or not values.all()
            ):
                raise SketchFormatError("corrupt sparse Count-Min counters")
            flat[index] = values
        else:
            flat = reader.array(f"<u{vw}", size, "counters").astype(np.uint64)
        nonzero = int(np.count_nonzero(flat))
        top = int(flat.max()) if size else 0
        if uint_width(top) != vw or bool(sparse) != (nonzero * (4 + vw) + 4 < size * vw):
            raise SketchFormatError("non-canonical Count-Min counter encoding")
        if top >= 1 << 63 or total >= 1 << 63:
            raise SketchFormatError("Count-Min counter out of int64 range")
        counters = flat.astype(np.int64).reshape(depth, width)
        if any(int(s) != total for s in counters.sum(axis=1, dtype=np.uint64).tolist()):
            raise SketchFormatError("Count-Min rows do not add up to the stored total")
        (n_cand,) = reader.unpack("<I", "candidate count")
        if n_cand > out.capacity or (n_cand and total == 0):
            raise SketchFormatError(f"{n_cand} heavy-hitter candidates do not fit this sketch")
        items = reader.items(n_cand)
        reader.finish()
        out._counters = counters
        out._total = int(total)
        out._cand_items = items
        out._cand_hashes = hash64(items, seed) if items else out._cand_hashes
        if out._cand_hashes.size != n_cand or _topk.sorted_unique(out._cand_hashes).size != n_cand:
            raise SketchFormatError("duplicate heavy-hitter candidates")
        est = out._estimate_hashes(out._cand_hashes)
        if not np.array_equal(_topk.rank_top(out._cand_hashes, est, n_cand), np.arange(n_cand)):
            raise SketchFormatError("heavy-hitter candidates are not in rank order")
        if np.any(est == 0):
            raise SketchFormatError("heavy-hitter candidate with a zero count")
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group in one vectorised pass (see :meth:`Sketch.from_groups`).

        Counters: ``np.add.at`` on ``[group, row, column]`` indices. Candidates: distinct
        (group, item) pairs found by one sort, estimated from the final counters and
        ranked per group; groups of at most one update chunk (2**20 rows) get exactly the
        candidates a plain ``update`` would give.

        Example:
            >>> parts = CountMinSketch.from_groups([0, 1, 0], ["x", "y", "x"], 2, top_k=1)
            >>> [p.top() for p in parts]
            [[('x', 2)], [('y', 1)]]
        """
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        size = template._width * template._depth
        counters = np.zeros(n_groups * size, dtype=np.int64)
        totals = np.zeros(n_groups, dtype=np.int64)
        pairs = _topk.GroupPairs()
        for group, hashes, column, rows in chunks:
            for a in range(0, hashes.size, _CHUNK):
                idx = template._flat_indices(hashes[a : a + _CHUNK])
                idx += group[a : a + _CHUNK] * size
                np.add.at(counters, idx.reshape(-1), 1)
            totals += np.bincount(group, minlength=n_groups)
            if template._top_k and hashes.size:
                pairs.add(group, hashes, column, rows)
        out = []
        for i in range(n_groups):
            sketch = cls(**params)
            sketch._counters = counters[i * size : (i + 1) * size].reshape(sketch._depth, -1).copy()
            sketch._total = int(totals[i])
            out.append(sketch)
        if template._top_k:
            flat = counters.reshape(-1)

            def estimate(group: np.ndarray, hashes: np.ndarray) -> np.ndarray:
                idx = template._flat_indices(hashes)
                idx += group * size
                return flat[idx].min(axis=0)

            group, hashes, items = pairs.select(estimate, template.capacity)
            bounds = np.searchsorted(group, np.arange(n_groups + 1))
            for i, sketch in enumerate(out):
                a, b = int(bounds[i]), int(bounds[i + 1])
                sketch._cand_hashes = hashes[a:b]
                sketch._cand_items = items[a:b]
        return out
