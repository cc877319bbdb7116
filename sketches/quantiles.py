"""Relative-error quantiles (DDSketch-style log buckets) with an exact, order-free merge.

Each finite non-zero value ``x`` is counted in the bucket of ``|x|`` (see
:mod:`sketches._logbuckets`: every bucket spans a ratio of at most
``(1 + a) / (1 - a)``), in one store for positive and one for negative values; zeros
have their own count; nulls, NaN and +-inf are skipped and counted in ``skipped``.
A quantile is the representative of the bucket holding the requested rank, so it is
within relative error ``relative_accuracy`` of the exact quantile. The *exact*
``q``-quantile of ``n`` values is the value at 0-based rank ``floor(q * (n - 1))`` of
the sorted values (NumPy's ``method="lower"``, which rounds ``q * (n - 1)`` its own
way). The bound holds for every normal float; among subnormals (below 2.2e-308) the
representative is rounded to the subnormal grid, and only the bucket bounds stay exact.

Two bucket mappings (the ``mapping`` parameter), each with the bound above:

* ``"log"`` (the default): logarithmic buckets found with a table lookup per value
  (:mod:`sketches._logbuckets`; 35 buckets per octave for ``a = 0.01``).
* ``"cells"``: buckets made of whole cells of the float's top bits (sign, exponent
  and the top ``b`` bits of the significand, ``2**-b <= a``), found with one shift
  per value and no table (:mod:`sketches._cells`): several times faster to update,
  for about 20 % more buckets (42 per octave for ``a = 0.01``, bound 0.994 %).

Sketches of different mappings never merge (:class:`~sketches.IncompatibleSketchError`).

Merge adds bucket counts, so it is exact, associative and commutative. The state is
a function of the multiset of values alone: any split and order of the input gives
the same bytes.

Bounded memory without losing that: each store keeps at most ``max_buckets`` buckets,
the highest keys. The values of lower keys (the ones nearest zero) are only counted,
in the store's ``collapsed`` count. The kept keys are the top ``max_buckets`` keys of
the whole multiset, whatever the order of updates and merges (a key among the top
``max_buckets`` of a union is among the top ``max_buckets`` of each part holding it),
so collapsing keeps the merge exact. A quantile whose rank falls among collapsed
values is reported as the edge of the lowest kept bucket, and its bounds
(:meth:`QuantileSketch.lower_bound`, :meth:`QuantileSketch.upper_bound`) widen to
reach zero; ``collapsed_count`` says whether that happened. By default
``max_buckets`` is 64 octaves' worth of buckets: a store covers a range of 2**64
(1.8e19, e.g. 1e-9 to 1.8e10) before collapsing anything; for
``relative_accuracy=0.01`` that is 2,240 buckets (35 per octave). Memory follows
the buckets actually used, not that bound.

Serialised payload (after the common header, whose seed is always 0: nothing is
hashed): ``relative_accuracy`` float64, ``max_buckets`` uint32, ``skipped`` uint64,
``zero_count`` uint64, then the negative store and the positive store, each as
``collapsed`` uint64 and a bucket count uint32, followed when that count is non-zero
by the first key (int32), the delta width and the count width (uint8 each: 1, 2, 4 or
8 bytes, the smallest that holds the largest value), the ``count - 1`` key gaps minus
one and the counts, keys in increasing order. Empty: 69 bytes; each bucket then costs
typically 2 to 3 bytes. That is format version 2, the ``"log"`` mapping's. The
``"cells"`` mapping writes format version 3: the same, with a mapping code (uint8, 1
for cells) and the cell bits (uint8) after ``zero_count``; 71 bytes empty.

Example:
    >>> import numpy as np
    >>> values = np.random.default_rng(1).lognormal(size=10_000)
    >>> qs = QuantileSketch(relative_accuracy=0.01).update(values)
    >>> exact = float(np.sort(values)[int(0.99 * (values.size - 1))])
    >>> abs(qs.quantile(0.99) - exact) <= 0.01 * exact
    True
    >>> QuantileSketch.from_bytes(qs.to_bytes()) == qs
    True
"""

from __future__ import annotations

import math
import struct
from typing import Any, Self

import numpy as np

from sketches._base import Sketch, check_codes, check_int
from sketches._bucketcount import Store, Tally, check_numeric, sum_by_key, tally
from sketches._cells import get_cells, tally_cells
from sketches._columns import input_length
from sketches._format import KIND_QUANTILES, Reader, seal
from sketches._logbuckets import Layout, get_layout, key_range
from sketches.errors import InvalidParameterError, SketchFormatError, UnsupportedInputError

__all__ = ["QuantileSketch", "MIN_ACCURACY", "MAX_ACCURACY", "MAX_BUCKETS", "MAPPINGS"]

MIN_ACCURACY = 1e-4
MAX_ACCURACY = 0.5
MAX_BUCKETS = 1 << 24
DEFAULT_OCTAVES = 64  # the default max_buckets covers a range of 2**64 per sign
MAX_COUNT = 1 << 62  # bytes holding more values in total are refused
_PARAMS = struct.Struct("<dIQQ")
_MAPPING = struct.Struct("<BB")  # format version 3: mapping code, cell bits
MAPPINGS = ("log", "cells")
_MAPPING_CODES = {"cells": 1}  # "log" is format version 2, which has no code
_CELLS_VERSION = 3


def check_accuracy(value: Any) -> float:
    """Validate ``relative_accuracy``: a real number in ``[1e-4, 0.5]``.

    Example:
        >>> check_accuracy(0.02)
        0.02
    """
    if isinstance(value, bool) or not isinstance(value, float | int | np.floating | np.integer):
        raise InvalidParameterError(f"relative_accuracy must be a number, got {value!r}")
    out = float(value)
    if not MIN_ACCURACY <= out <= MAX_ACCURACY:
        raise InvalidParameterError(
            f"relative_accuracy must be in [{MIN_ACCURACY}, {MAX_ACCURACY}], got {value!r}"
        )
    return out


def check_mapping(value: Any) -> str:
    """Validate ``mapping``: ``"log"`` or ``"cells"``."""
    if not isinstance(value, str) or value not in MAPPINGS:
        raise InvalidParameterError(f"mapping must be 'log' or 'cells', got {value!r}")
    return value


class QuantileSketch(Sketch):
    """Quantiles within a relative error, from log-spaced buckets; exact merge.

    Args:
        relative_accuracy: ``a`` in ``[1e-4, 0.5]``: every quantile estimate ``v`` of an
            exact quantile ``x`` satisfies ``|v - x| <= a |x|``. Memory grows as ``1 / a``
            per order of magnitude covered (``a = 0.01``: 35 buckets per power of two).
        max_buckets: Buckets kept per sign, in ``[1, 2**24]``; beyond that the values
            nearest zero are only counted (see the module doc). Default: 64 octaves'
            worth (``64 * buckets per octave``; 2,240 for ``a = 0.01``, 2,688 with cells).
        mapping: ``"log"`` (logarithmic buckets) or ``"cells"`` (buckets of the float's
            top bits: faster updates, about 20 % more buckets); see the module doc.

    Raises:
        InvalidParameterError: (a ``ValueError``) for a parameter out of range.

    Example:
        >>> qs = QuantileSketch(0.01).update([1, 2, 3, 4, 1000, None, float("inf")])
        >>> round(qs.quantile(0.5), 1), qs.count, qs.skipped
        (3.0, 5, 2)
    """

    KIND = KIND_QUANTILES

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        *,
        max_buckets: int | None = None,
        mapping: str = "log",
    ) -> None:
        self._accuracy = check_accuracy(relative_accuracy)
        self._mapping = check_mapping(mapping)
        if max_buckets is None:
            max_buckets = DEFAULT_OCTAVES * self._layout.per_octave
        self._max_buckets = check_int("max_buckets", max_buckets, 1, MAX_BUCKETS)
        self._seed = 0
        self._negative = Store.empty()
        self._positive = Store.empty()
        self._zero = 0
        self._skipped = 0

    # ------------------------------------------------------------ basics

    @property
    def relative_accuracy(self) -> float:
        """The guaranteed relative error of a quantile estimate."""
        return self._accuracy

    @property
    def mapping(self) -> str:
        """The bucket mapping: ``"log"`` or ``"cells"``."""
        return self._mapping

    @property
    def bucket_accuracy(self) -> float:
        """The bound the buckets guarantee (``<= relative_accuracy``; 0.00994 for cells at
        0.01): every value is within it of its bucket's representative."""
        return self._layout.accuracy

    @property
    def max_buckets(self) -> int:
        """Buckets kept per sign."""
        return self._max_buckets

    @property
    def count(self) -> int:
        """Number of values counted (finite numbers; skipped ones excluded)."""
        return self._zero + self._negative.total + self._positive.total

    @property
    def skipped(self) -> int:
        """Number of nulls, NaN and infinities seen and skipped."""
        return self._skipped

    @property
    def zero_count(self) -> int:
        """Number of zeros counted."""
        return self._zero

    @property
    def collapsed_count(self) -> int:
        """Values nearest zero counted without a bucket (0 until a store is full)."""
        return self._negative.collapsed + self._positive.collapsed

    @property
    def num_buckets(self) -> int:
        """Buckets held, both signs together."""
        return int(self._negative.keys.size + self._positive.keys.size)

    @property
    def _layout(self) -> Layout:
        if self._mapping == "cells":
            return get_cells(self._accuracy).layout
        return get_layout(self._accuracy)

    def params(self) -> dict[str, Any]:
        """``{"relative_accuracy": a, "max_buckets": n, "mapping": m}``."""
        return {
            "relative_accuracy": self._accuracy,
            "max_buckets": self._max_buckets,
            "mapping": self._mapping,
        }

    def _tally(self, values: Any, codes: np.ndarray | None, n_groups: int) -> Tally:
        if self._mapping == "cells":
            return tally_cells(get_cells(self._accuracy), values, codes, n_groups)
        return tally(self._layout, values, codes, n_groups)

    def _update_hashes(self, hashes: np.ndarray) -> None:
        raise UnsupportedInputError("QuantileSketch summarises numbers, not hashes")

    def _state_equal(self, other: Self) -> bool:
        return (
            self._zero == other._zero
            and self._skipped == other._skipped
            and self._negative.equals(other._negative)
            and self._positive.equals(other._positive)
        )

    def is_empty(self) -> bool:
        """Whether no value was counted (skipped nulls, NaN and infinities aside)."""
        return self.count == 0

    def _summary(self) -> str:
        if self.is_empty():
            return f"count=0, skipped={self._skipped}"
        return f"count={self.count}, median={self.quantile(0.5):.6g}, skipped={self._skipped}"

    # ------------------------------------------------------------ update and merge

    def update(self, values: Any) -> Self:
        """Add numbers (array, Arrow array, Series, list or scalar; ints are read as floats).

        Nulls, NaN and +-inf are skipped and counted in :attr:`skipped`.

        Raises:
            UnsupportedInputError: (a ``TypeError``) for strings, bytes or temporal values.

        Returns:
            ``self``, so calls chain.
        """
        counted = self._tally(values, None, 1)
        return self.merge(self._assemble(counted, 1, self.params())[0])

    def merge(self, other: Self) -> Self:
        """Add ``other``'s counts to this sketch (in place); exact.

        Raises:
            IncompatibleSketchError: if ``other`` is not a QuantileSketch with equal
                ``relative_accuracy``, ``max_buckets`` and ``mapping``.
        """
        self._check_mergeable(other)
        return self._absorb([self, other])

    def _absorb(self, sketches: list[Self]) -> Self:
        n = self._max_buckets
        negative = Store.combine([s._negative for s in sketches], n)
        positive = Store.combine([s._positive for s in sketches], n)
        self._zero = sum(s._zero for s in sketches)
        self._skipped = sum(s._skipped for s in sketches)
        self._negative, self._positive = negative, positive
        return self

    @classmethod
    def _union_many(cls, sketches: list[Self]) -> Self:
        out = sketches[0].copy()
        for other in sketches[1:]:
            out._check_mergeable(other)
        return out._absorb(sketches)

    # ------------------------------------------------------------ queries

    def _ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Buckets in value order: representative, lower, upper, count, cumulative count."""
        layout = self._layout
        neg, pos = self._negative, self._positive
        n_lo, n_rep, n_hi = layout.bucket_bounds(neg.keys[::-1])
        p_lo, p_rep, p_hi = layout.bucket_bounds(pos.keys)
        n_edge = float(layout.bucket_bounds(neg.keys[:1])[0][0]) if neg.collapsed else 0.0
        p_edge = float(layout.bucket_bounds(pos.keys[:1])[0][0]) if pos.collapsed else 0.0
        middle = np.array([-n_edge, 0.0, p_edge])  # collapsed negatives, zeros, positives
        rep = np.concatenate([-n_rep, middle, p_rep])
        lower = np.concatenate([-n_hi, [-n_edge, 0.0, 0.0], p_lo])
        upper = np.concatenate([-n_lo, [0.0, 0.0, p_edge], p_hi])
        middle_counts = np.array([neg.collapsed, self._zero, pos.collapsed], dtype=np.int64)
        counts = np.concatenate([neg.counts[::-1], middle_counts, pos.counts])
        return rep, lower, upper, counts, np.cumsum(counts)

    def _locate(self, qs: Any) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        q = np.asarray(qs, dtype=np.float64)
        if q.size and not (np.all(q >= 0.0) and np.all(q <= 1.0)):  # NaN fails both
            raise InvalidParameterError(f"quantiles must be in [0, 1], got {qs!r}")
        ordered = self._ordered()
        n = self.count
        rank = np.floor(q * float(max(n - 1, 0))).astype(np.int64)
        return np.searchsorted(ordered[4], rank, side="right"), ordered

    def quantiles(self, qs: Any) -> np.ndarray:
        """Estimates of the ``qs``-quantiles (float64 array shaped like ``qs``; NaN if empty).

        Each is within :meth:`relative_error` of the exact quantile: the value at
        0-based rank ``floor(q * (count - 1))`` of the sorted values.
        """
        index, ordered = self._locate(qs)
        if self.is_empty():
            return np.full(index.shape, np.nan)
        return ordered[0][index]

    def quantiles_with_bounds(self, qs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`quantiles`, :meth:`lower_bound` and :meth:`upper_bound` of each of
        ``qs`` at once (the buckets are ordered once, not three times per quantile).

        Example:
            >>> s = QuantileSketch().update([1.0, 2.0, 3.0])
            >>> est, lo, hi = s.quantiles_with_bounds([0.5])
            >>> bool(lo[0] <= 2.0 <= hi[0]), float(est[0]) == s.quantile(0.5)
            (True, True)
        """
        index, ordered = self._locate(qs)
        if self.is_empty():
            nan = np.full(index.shape, np.nan)
            return nan, nan.copy(), nan.copy()
        return ordered[0][index], ordered[1][index], ordered[2][index]

    def quantile(self, q: float) -> float:
        """Estimate of the ``q``-quantile, ``0 <= q <= 1`` (NaN if empty).

        Example:
            >>> round(QuantileSketch().update([-5.0, 0.0, 2.0, 7.0]).quantile(0.0), 1)
            -5.0
        """
        return float(self.quantiles(q))

    def lower_bound(self, q: float) -> float:
        """A value never above the exact ``q``-quantile: its bucket's lower edge.

        Unlike the other sketches' ``lower_bound(k)``, the argument is the quantile: the
        bound is certain, not ``k`` standard errors wide.
        """
        index, ordered = self._locate(q)
        return math.nan if self.is_empty() else float(ordered[1][index])

    def upper_bound(self, q: float) -> float:
        """A value never below the exact ``q``-quantile: its bucket's upper edge."""
        index, ordered = self._locate(q)
        return math.nan if self.is_empty() else float(ordered[2][index])

    def relative_error(self) -> float:
        """The bound on ``|estimate - exact| / |exact|`` of every quantile estimate."""
        return self._accuracy

    def rank(self, x: float) -> float:
        """Estimated fraction of the values that are ``<= x`` (NaN if empty).

        It counts the values whose bucket representative is ``<= x``, so while nothing is
        collapsed it lies between the exact fractions at ``x / (1 + a)`` and
        ``x / (1 - a)`` (``a`` the relative error; the two swap for ``x < 0``).

        Example:
            >>> QuantileSketch().update([1.0, 2.0, 3.0, 4.0]).rank(2.5)
            0.5
        """
        x = float(x)
        if math.isnan(x):
            raise InvalidParameterError("rank() needs a number, got NaN")
        if self.is_empty():
            return math.nan
        rep, _, _, counts, cum = self._ordered()
        at = int(np.searchsorted(rep, x, side="right"))
        return float(cum[at - 1]) / self.count if at else 0.0

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise (layout in the module doc); equal states give equal bytes."""
        parts = [_PARAMS.pack(self._accuracy, self._max_buckets, self._skipped, self._zero)]
        version = 2
        if self._mapping != "log":
            version = _CELLS_VERSION
            parts.append(_MAPPING.pack(_MAPPING_CODES[self._mapping], self._cell_bits()))
        for store in (self._negative, self._positive):
            parts += store.encode()
        return seal(KIND_QUANTILES, 0, *parts, version=version)

    def _cell_bits(self) -> int:
        return get_cells(self._accuracy).bits

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes`.

        Raises:
            SketchFormatError: for anything but a valid, canonical QuantileSketch encoding.
        """
        reader, seed = Reader.open(data, KIND_QUANTILES)
        if seed != 0:
            raise SketchFormatError(f"QuantileSketch hashes nothing: seed must be 0, got {seed}")
        accuracy, max_buckets, skipped, zero = reader.unpack(_PARAMS.format)
        mapping = "log"
        if reader.version >= _CELLS_VERSION:
            code, bits = reader.unpack(_MAPPING.format, "mapping")
            names = {c: name for name, c in _MAPPING_CODES.items()}
            if code not in names:
                raise SketchFormatError(f"unknown QuantileSketch bucket mapping code {code}")
            mapping = names[code]
        try:
            out = cls(accuracy, max_buckets=max_buckets, mapping=mapping)
        except InvalidParameterError as exc:
            raise SketchFormatError(f"bad QuantileSketch parameters: {exc}") from None
        if mapping == "cells" and bits != out._cell_bits():
            raise SketchFormatError(
                f"QuantileSketch cells of {bits} bits, this library uses {out._cell_bits()} "
                f"for relative_accuracy {accuracy!r}"
            )
        min_key, max_key = key_range(out._layout.per_octave)
        stores = [
            Store.decode(reader, sign, max_buckets, min_key, max_key, MAX_COUNT)
            for sign in ("negative", "positive")
        ]
        reader.finish()
        out._negative, out._positive = stores
        out._zero, out._skipped = zero, skipped
        if zero + stores[0].collapsed + stores[1].collapsed >= MAX_COUNT or out.count >= MAX_COUNT:
            raise SketchFormatError("QuantileSketch counts too large")
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def _assemble(cls, counted: Tally, n_groups: int, params: dict[str, Any]) -> list[Self]:
        """Turn a tally into ``n_groups`` sketches (each store bounded)."""
        template = cls(**params)
        min_key, max_key = key_range(template._layout.per_octave)
        span = max_key - min_key + 1
        if len(counted.slots) == 1:
            slots, counts = counted.slots[0], counted.counts[0]
        elif counted.slots:
            slots = np.concatenate(counted.slots)
            slots, counts = sum_by_key(slots, np.concatenate(counted.counts))
        else:
            slots, counts = np.empty(0, np.int64), np.empty(0, np.int64)
        sign_group, keys = np.divmod(slots, span)
        keys += min_key
        edges = np.searchsorted(sign_group, np.arange(2 * n_groups + 1)).tolist()
        out = []
        n = template._max_buckets
        for i in range(n_groups):
            a, b, c = edges[2 * i : 2 * i + 3]
            sketch = cls(**params)
            sketch._positive = Store(keys[a:b].copy(), counts[a:b].copy()).bounded(n)
            sketch._negative = Store(keys[b:c].copy(), counts[b:c].copy()).bounded(n)
            sketch._zero = int(counted.zeros[i])
            sketch._skipped = int(counted.skipped[i])
            out.append(sketch)
        return out

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group in one pass: ``np.bincount`` over (group, bucket) pairs.

        ``np.unique`` takes over when the pairs spread too wide for a dense count.

        Sketch ``i`` is byte-identical to ``QuantileSketch(**params).update(values[codes == i])``.

        Example:
            >>> parts = QuantileSketch.from_groups([0, 1, 0], [1.0, 5.0, 3.0], 2)
            >>> [p.count for p in parts]
            [2, 1]
        """
        template = cls(**params)
        values = check_numeric(values)
        codes_arr, n = check_codes(codes, input_length(values), n_groups)
        counted = template._tally(values, codes_arr, n)
        return cls._assemble(counted, n, template.params())
