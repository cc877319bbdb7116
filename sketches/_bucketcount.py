"""Counting floats into log buckets, by group: the hot path of :class:`~sketches.QuantileSketch`.

:func:`tally` reads any accepted input chunk by chunk, computes each value's bucket
key (:func:`~sketches._logbuckets.combined_keys`), and counts ``(group, sign, key)``
with one ``np.bincount`` (``np.unique`` when the keys are too spread out): O(rows) plus
the number of distinct buckets. Zeros, subnormals and non-finite values are rare and
are found from the few distinct keys they produce before any extra pass over the rows.

:class:`Store` is one sign's buckets, and :meth:`Store.combine` the exact merge of
several, bounded to the ``max_buckets`` highest keys.

Example:
    >>> from sketches._logbuckets import get_layout
    >>> t = tally(get_layout(0.01), [1.0, -1.0, 0.0, None, float("nan")], None, 1)
    >>> t.zeros.tolist(), t.skipped.tolist(), len(t.slots[0])
    ([1], [2], 2)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sketches._columns import (
    CHUNK_ROWS,
    BytesColumn,
    Column,
    DictColumn,
    FloatColumn,
    IntColumn,
    Pieces,
    iter_columns,
    prepare,
)
from sketches._format import Reader, uint_width
from sketches._logbuckets import Layout, combined_keys, key_range
from sketches.errors import SketchFormatError, UnsupportedInputError

__all__ = ["Store", "Tally", "sum_by_key", "check_numeric", "numeric_chunks", "tally"]

_STORE = struct.Struct("<QI")  # collapsed, bucket count
_KEYS = struct.Struct("<iBB")  # first key, gap width, count width
_SUBNORMAL_SCALE = 64  # subnormals times 2**64 are normal; their keys shift by 64 octaves


# ---------------------------------------------------------------- one store


@dataclass(frozen=True, eq=False)
class Store:
    """Buckets of one sign: increasing keys, positive counts, values collapsed below.

    Immutable (arrays read-only), so sketches may share a store after a merge.
    """

    keys: np.ndarray
    counts: np.ndarray
    collapsed: int = 0

    def __post_init__(self) -> None:
        self.keys.flags.writeable = False
        self.counts.flags.writeable = False

    @classmethod
    def empty(cls) -> Store:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), 0)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.collapsed

    def equals(self, other: Store) -> bool:
        return (
            self.collapsed == other.collapsed
            and np.array_equal(self.keys, other.keys)
            and np.array_equal(self.counts, other.counts)
        )

    def bounded(self, max_buckets: int) -> Store:
        """Keep the ``max_buckets`` highest keys; count the rest as collapsed."""
        extra = self.keys.size - max_buckets
        if extra <= 0:
            return self
        dropped = int(self.counts[:extra].sum())
        return Store(self.keys[extra:], self.counts[extra:], self.collapsed + dropped)

    def encode(self) -> list[bytes]:
        """``collapsed``, the bucket count, then (if any) first key, widths, gaps, counts."""
        parts = [_STORE.pack(self.collapsed, self.keys.size)]
        if self.keys.size:
            gaps = np.diff(self.keys) - 1
            gap_width = uint_width(int(gaps.max()) if gaps.size else 0)
            count_width = uint_width(int(self.counts.max()))
            parts.append(_KEYS.pack(int(self.keys[0]), gap_width, count_width))
            parts.append(gaps.astype(f"<u{gap_width}").tobytes())
            parts.append(self.counts.astype(f"<u{count_width}").tobytes())
        return parts

    @classmethod
    def decode(
        cls,
        reader: Reader,
        sign: str,
        max_buckets: int,
        min_key: int,
        max_key: int,
        max_count: int,
    ) -> Store:
        """Read what :meth:`encode` wrote, checking every invariant."""
        collapsed, size = reader.unpack(_STORE.format, f"{sign} store")
        if size > max_buckets or (collapsed and size != max_buckets):
            raise SketchFormatError(
                f"corrupt QuantileSketch {sign} store: {size} buckets, {collapsed} "
                f"collapsed values, max_buckets {max_buckets}"
            )
        if not size:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), collapsed)
        first, gap_width, count_width = reader.unpack(_KEYS.format, f"{sign} keys")
        if gap_width not in (1, 2, 4, 8) or count_width not in (1, 2, 4, 8):
            raise SketchFormatError(f"corrupt QuantileSketch {sign} store: bad widths")
        gaps = reader.array(f"<u{gap_width}", size - 1, f"{sign} key gaps").astype(np.uint64)
        counts = reader.array(f"<u{count_width}", size, f"{sign} counts").astype(np.uint64)
        top_gap = int(gaps.max()) if gaps.size else 0
        if gap_width != uint_width(top_gap) or count_width != uint_width(int(counts.max())):
            raise SketchFormatError(f"non-canonical QuantileSketch {sign} store widths")
        if not min_key <= first or top_gap > max_key - min_key or int(counts.min()) == 0:
            raise SketchFormatError(f"corrupt QuantileSketch {sign} buckets")
        keys = np.empty(size, dtype=np.int64)
        keys[0] = first
        np.cumsum(gaps.astype(np.int64) + 1, out=keys[1:])
        keys[1:] += first
        if int(keys[-1]) > max_key:
            raise SketchFormatError(f"QuantileSketch {sign} bucket key out of range")
        if float(counts.astype(np.float64).sum()) >= max_count:
            raise SketchFormatError("QuantileSketch counts too large")
        return cls(keys, counts.astype(np.int64), collapsed)

    @classmethod
    def combine(cls, stores: list[Store], max_buckets: int) -> Store:
        """The exact sum of several stores, bounded again."""
        stores = [s for s in stores if s.keys.size or s.collapsed]
        if len(stores) <= 1:
            return stores[0] if stores else cls.empty()
        keys = np.concatenate([s.keys for s in stores])
        counts = np.concatenate([s.counts for s in stores])
        collapsed = sum(s.collapsed for s in stores)
        keys, counts = sum_by_key(keys, counts)
        return cls(keys, counts, collapsed).bounded(max_buckets)


def sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the exact sum of their counts."""
    if keys.size == 0:
        return keys, counts
    low, high = int(keys.min()), int(keys.max())
    if high - low <= 4 * keys.size + (1 << 16) and int(counts.sum()) < 1 << 53:
        sums = np.bincount(keys - low, weights=counts)  # exact: every sum is below 2**53
        present = np.flatnonzero(sums)
        return present + low, sums[present].astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    out = np.zeros(unique.size, dtype=np.int64)
    np.add.at(out, inverse, counts)
    return unique, out


# ---------------------------------------------------------------- input


def check_numeric(values: Any) -> Any:
    """The input split into pieces (see :func:`~sketches._columns.prepare`), refusing
    temporal types, whose storage integers are no quantity to summarise."""
    pieces = prepare(values)
    for piece in pieces:
        if isinstance(piece, np.ndarray):
            temporal = piece.dtype.kind in "mM"
        else:
            import pyarrow as pa

            temporal = pa.types.is_temporal(piece.type)
        if temporal:
            raise UnsupportedInputError(
                "QuantileSketch summarises numbers; cast dates, times and durations first"
            )
    return pieces


def _as_float(column: Column) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values of a column and its validity (None: all valid)."""
    if isinstance(column, FloatColumn):
        return column.values, column.valid
    if isinstance(column, IntColumn):
        ints = column.bits if column.unsigned else column.bits.view(np.int64)
        return ints.astype(np.float64), column.valid
    if isinstance(column, DictColumn):
        values, _ = _as_float(column.dictionary)
        return values[column.indices], column.valid
    if isinstance(column, BytesColumn):
        raise UnsupportedInputError("QuantileSketch summarises numbers, not strings or bytes")
    out = np.zeros(column.n, dtype=np.float64)
    valid = np.ones(column.n, dtype=bool) if column.valid is None else column.valid.copy()
    for rows, part in column.parts:
        values, part_valid = _as_float(part)
        out[rows] = values
        if part_valid is not None:
            valid[rows] &= part_valid
    return out, None if valid.all() else valid


def numeric_chunks(
    values: Any, nan_test: bool = True
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """``(row offset, float64 values, validity or None)`` per chunk.

    With ``nan_test=False``, float64 NumPy arrays and Arrow arrays without nulls come
    as they are, NaN included, with validity None (for callers that tell NaN apart
    from its bits anyway); anything else is converted and tested as usual.
    """
    offset = 0
    for piece in check_numeric(values):
        raw = None if nan_test else _plain_floats(piece)
        if raw is None:
            for at, column in iter_columns(Pieces([piece])):
                floats, valid = _as_float(column)
                yield offset + at, floats, valid
        else:
            for at in range(0, raw.size, CHUNK_ROWS):
                yield offset + at, raw[at : at + CHUNK_ROWS], None
        offset += len(piece)


def _plain_floats(piece: Any) -> np.ndarray | None:
    """The float64 values of a piece without nulls, as a NumPy view (or None)."""
    if isinstance(piece, np.ndarray):
        if piece.dtype == np.float64 and piece.dtype.isnative:
            return piece
        return None
    import pyarrow as pa

    if pa.types.is_float64(piece.type) and piece.null_count == 0 and len(piece):
        return piece.to_numpy(zero_copy_only=True)
    return None


# ---------------------------------------------------------------- grouped counting


@dataclass
class Tally:
    """Counts by ``slot = (group * 2 + negative) * span + key - min_key``, sorted."""

    slots: list[np.ndarray]
    counts: list[np.ndarray]
    zeros: np.ndarray
    skipped: np.ndarray


KeysOf = Callable[[np.ndarray], np.ndarray]


def _tally_chunk(
    layout: Layout, keys_of: KeysOf, x: np.ndarray, codes: np.ndarray | None, tally: Tally
) -> None:
    m = layout.per_octave
    min_key, max_key = key_range(m)
    span = max_key - min_key + 1
    combined = keys_of(x)  # (sign, exponent, bucket), in [0, 4096 m)
    low = int(combined.min())
    combined -= low
    width = int(combined.max()) + 1  # group stride: the keys this chunk spans
    if codes is not None:
        combined += codes * width
    if int(combined.max()) <= 4 * combined.size + (1 << 16):
        hist = np.bincount(combined)
        unique = np.flatnonzero(hist)
        counts = hist[unique]
    else:
        unique, counts = np.unique(combined, return_counts=True)
    group, combined = np.divmod(unique, width)
    top, j = np.divmod(combined + low, m)
    biased = top & 2047
    negative = top >> 11
    nonfinite = biased == 2047
    tiny = biased == 0  # zeros and subnormals
    np.add.at(tally.skipped, group[nonfinite], counts[nonfinite])
    normal = ~(nonfinite | tiny)
    keys = (biased[normal] - 1023) * m + j[normal]
    slots = (group[normal] * 2 + negative[normal]) * span + (keys - min_key)
    counts = counts[normal]
    if tiny.any():  # rare: find those rows again, count zeros, rescale subnormals
        exponent = (x.view(np.uint64) >> np.uint64(52)) & np.uint64(2047)
        rows = np.flatnonzero(exponent == 0)
        sub = x[rows]
        sub_codes = np.zeros(rows.size, np.int64) if codes is None else codes[rows]
        is_zero = sub == 0.0
        tally.zeros += np.bincount(sub_codes[is_zero], minlength=tally.zeros.size)
        scaled = keys_of(sub[~is_zero] * 2.0**_SUBNORMAL_SCALE)
        top2, j2 = np.divmod(scaled, m)
        keys2 = ((top2 & 2047) - 1023 - _SUBNORMAL_SCALE) * m + j2
        slots2 = (sub_codes[~is_zero] * 2 + (top2 >> 11)) * span + (keys2 - min_key)
        slots, counts = sum_by_key(
            np.concatenate([slots, slots2]), np.concatenate([counts, np.ones_like(slots2)])
        )
    tally.slots.append(slots)
    tally.counts.append(counts)


def tally(
    layout: Layout,
    values: Any,
    codes: np.ndarray | None,
    n_groups: int,
    keys_of: KeysOf | None = None,
) -> Tally:
    """Count every value of ``values`` into group ``codes[row]`` (all in group 0 if None).

    ``keys_of`` gives the combined keys of floats (the layout's
    :func:`~sketches._logbuckets.combined_keys` by default); one that gives NaN and
    infinities a biased exponent of 2047, as any function of the float's bits does,
    may leave NaN untested: pass ``keys_of`` and the NaN test is skipped.
    """
    if keys_of is None:
        nan_test = True

        def keys_of(x: np.ndarray) -> np.ndarray:
            return combined_keys(layout, x)
    else:
        nan_test = False
    tally = Tally([], [], np.zeros(n_groups, np.int64), np.zeros(n_groups, np.int64))
    for offset, x, valid in numeric_chunks(values, nan_test):
        chunk_codes = None if codes is None else codes[offset : offset + x.size]
        if valid is not None:  # nulls and NaN: count them, keep the rest
            if chunk_codes is None:
                tally.skipped[0] += x.size - np.count_nonzero(valid)
            else:
                tally.skipped += np.bincount(chunk_codes[~valid], minlength=n_groups)
                chunk_codes = chunk_codes[valid]
            x = x[valid]
        if x.size:
            _tally_chunk(layout, keys_of, x, chunk_codes, tally)
    return tally
