"""Cell buckets for ``QuantileSketch(mapping="cells")``: a value's bucket from its top bits.

A float64 is ``sign | biased exponent (11 bits) | significand (52 bits)``; shifted right
by ``52 - b`` it gives the value's *cell*: sign, exponent and the top ``b`` bits of
the significand. Cell ``c`` of the octave ``[2**e, 2**(e+1))`` holds
``2**e * [1 + c / 2**b, 1 + (c + 1) / 2**b)``. Counting cells costs one shift per value
and no table; everything else is done once per distinct cell.

Buckets are runs of whole cells: bucket ``j`` of every octave is the cells
``[t_j, t_(j+1))``, the values ``2**e * [L, H)`` with ``L = 1 + t_j / 2**b`` and
``H = 1 + t_(j+1) / 2**b``. Its representative ``2 L H / (L + H)`` is within

    ``(H - L) / (H + L) = (t_(j+1) - t_j) / (2**(b+1) + t_j + t_(j+1))``

relative error of every value in the bucket (the two edges are the worst). The runs
grow greedily from ``t_0 = 0``, each as long as that ratio stays within the requested
accuracy ``a`` (less a margin of 1e-9 for float rounding in queries), compared in exact
rational arithmetic, so the layout's bound (the largest ratio) is never above ``a``.

The bits: the smallest ``b`` with ``2**-b <= a``. A bucket at significand ``L`` may span
about ``2 a L >= 2 a``, so a cell is at most half as wide as the narrowest bucket and
each run ends less than one cell short of the widest bucket allowed there: about 20 %
more buckets than the logarithmic mapping (12 % to 20 % for ``a <= 0.05``). More bits
would bring that towards 0 at twice the cells per bit. For ``a = 0.01``: ``b = 7``, 42
buckets per octave (the log mapping: 35), bound 0.994 %.

Keys are those of the log mapping (``per_octave * e + j``, subnormals scaled by 2**64
first), so stores, merge, queries and bytes are shared; the buckets, and so the bytes,
differ. The update counts cells with ``np.add.at`` into an array of every cell of
both signs (``2**(12 + b)`` int64, 4 MiB for ``b = 7``; only the used part is
touched) when the input is large and has no groups; otherwise it turns each value into
its bucket's key (one lookup in a ``2**b``-entry table) and counts the keys as the log
mapping does (:func:`sketches._bucketcount.tally`).

Example:
    >>> cells = get_cells(0.01)
    >>> cells.bits, cells.layout.per_octave, round(cells.layout.accuracy, 6)
    (7, 42, 0.00994)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from sketches._bucketcount import Tally, check_numeric, numeric_chunks, sum_by_key, tally
from sketches._columns import input_length
from sketches._logbuckets import FRAC_BITS, MANT_BITS, MARGIN, Layout, key_range, layout_from_bounds

__all__ = ["Cells", "cell_bits", "get_cells", "combined_keys", "cell_keys", "tally_cells"]

_EXP_MASK = np.uint64(0x7FF << MANT_BITS)
_SUBNORMAL_SCALE = 64  # subnormals times 2**64 are normal; their keys shift by 64 octaves
_DENSE_BITS = 8  # np.add.at into all cells up to 2**(12 + 8) of them (8 MiB)
_DENSE_MIN = 1 << 16  # values from which scanning all cells costs less than a range pass
_BLOCK = 1 << 18  # values per shift + np.add.at step: the shifted block stays in the cache


def cell_bits(relative_accuracy: float) -> int:
    """Significand bits of a cell: the smallest ``b`` with ``2**-b <= relative_accuracy``.

    Example:
        >>> cell_bits(0.01), cell_bits(0.5), cell_bits(1e-4)
        (7, 1, 14)
    """
    b = 0
    while 2.0**-b > relative_accuracy:
        b += 1
    return b


@dataclass(frozen=True, eq=False)
class Cells:
    """The cells mapping of one relative accuracy.

    Attributes:
        bits: Significand bits of a cell.
        layout: The buckets as a :class:`~sketches._logbuckets.Layout` (its boundaries
            are multiples of ``2**-bits``; ``layout.accuracy`` is the bound).
        bucket_of_cell: Bucket ``j`` of each of an octave's ``2**bits`` cells (read-only).
    """

    bits: int
    layout: Layout
    bucket_of_cell: np.ndarray


@functools.lru_cache(maxsize=16)
def get_cells(relative_accuracy: float) -> Cells:
    """The cells mapping whose representatives are within ``relative_accuracy`` (cached)."""
    b = cell_bits(relative_accuracy)
    n = 1 << b
    limit = Fraction(relative_accuracy) * (1 - Fraction(MARGIN))
    edges, lo, worst = [0], 0, Fraction(0)
    while lo < n:
        hi = lo + 1  # one cell always fits: its ratio is below 2**-b / 2 <= a / 2
        while hi < n and Fraction(hi + 1 - lo, 2 * n + lo + hi + 1) <= limit:
            hi += 1
        worst = max(worst, Fraction(hi - lo, 2 * n + lo + hi))
        edges.append(hi)
        lo = hi
    layout = layout_from_bounds([t << (FRAC_BITS - b) for t in edges], float(worst))
    bucket_of_cell = np.repeat(np.arange(len(edges) - 1, dtype=np.int64), np.diff(edges))
    bucket_of_cell.flags.writeable = False
    return Cells(b, layout, bucket_of_cell)


def combined_keys(cells: Cells, x: np.ndarray) -> np.ndarray:
    """``(sign * 2048 + biased exponent) * per_octave + j`` of each float64 (int64), as
    :func:`sketches._logbuckets.combined_keys` gives for the log mapping (zeros and
    subnormals have biased exponent 0, infinities and NaN 2047)."""
    raw = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    out = (raw >> np.uint64(MANT_BITS)).view(np.int64) * cells.layout.per_octave
    cell = (raw >> np.uint64(MANT_BITS - cells.bits)).view(np.int64)
    cell &= (1 << cells.bits) - 1
    out += np.take(cells.bucket_of_cell, cell, out=cell)
    return out


def cell_keys(cells: Cells, x: np.ndarray) -> np.ndarray:
    """Bucket keys of positive normal floats ``x`` (int64; for tests and tools).

    Example:
        >>> cell_keys(get_cells(0.01), np.array([1.0, 1.5, 3.0])).tolist()
        [0, 25, 67]
    """
    return combined_keys(cells, x) - 1023 * cells.layout.per_octave


# ---------------------------------------------------------------- counting


def _slots(cells: Cells, ids: np.ndarray, offset: int) -> np.ndarray:
    """Tally slots (group 0) of normal cells ``ids`` (``(sign * 2048 + exponent) << bits
    | cell``), the exponent of ``2**0`` being ``offset``."""
    b, m = cells.bits, cells.layout.per_octave
    min_key, max_key = key_range(m)
    top = ids >> b
    keys = ((top & 2047) - offset) * m + cells.bucket_of_cell[ids & ((1 << b) - 1)]
    return (top >> 11) * (max_key - min_key + 1) + (keys - min_key)


def _add_runs(tally: Tally, slots: np.ndarray, counts: np.ndarray) -> None:
    """Add non-decreasing ``slots`` (cells of one bucket side by side) to the tally."""
    if slots.size:
        starts = np.flatnonzero(np.diff(slots, prepend=-1))
        tally.slots.append(slots[starts])
        tally.counts.append(np.add.reduceat(counts, starts))


def _decode(cells: Cells, ids: np.ndarray, counts: np.ndarray, tally: Tally) -> None:
    """Count distinct normal and non-finite cells (increasing ids, group 0)."""
    nonfinite = ((ids >> cells.bits) & 2047) == 2047  # infinities and NaN
    if nonfinite.any():
        tally.skipped[0] += int(counts[nonfinite].sum())
        ids, counts = ids[~nonfinite], counts[~nonfinite]
    _add_runs(tally, _slots(cells, ids, 1023), counts)


def _tiny(cells: Cells, x: np.ndarray, tally: Tally) -> None:
    """Count the zeros and subnormals of ``x`` (found again: they are rare)."""
    sub = x[(x.view(np.uint64) & _EXP_MASK) == 0]
    is_zero = sub == 0.0
    tally.zeros[0] += int(np.count_nonzero(is_zero))
    scaled = (sub[~is_zero] * 2.0**_SUBNORMAL_SCALE).view(np.uint64)
    ids = (scaled >> np.uint64(MANT_BITS - cells.bits)).view(np.int64)
    slots = _slots(cells, ids, 1023 + _SUBNORMAL_SCALE)
    if slots.size:  # the tally's arrays are summed by key when assembled
        slots, counts = sum_by_key(slots, np.ones(slots.size, np.int64))
        tally.slots.append(slots)
        tally.counts.append(counts)


def _count_dense(cells: Cells, x: np.ndarray, grid: np.ndarray, tally: Tally) -> None:
    """``np.add.at`` every value's cell into ``grid``; zeros and subnormals apart."""
    raw = x.view(np.uint64)
    shift = np.uint64(MANT_BITS - cells.bits)
    buf = np.empty(min(_BLOCK, raw.size), dtype=np.uint64)
    for a in range(0, raw.size, _BLOCK):
        part = raw[a : a + _BLOCK]
        ids = buf[: part.size]
        np.right_shift(part, shift, out=ids)
        np.add.at(grid, ids.view(np.int64), 1)
    width, negative = 1 << cells.bits, 1 << (11 + cells.bits)
    tiny = (grid[:width], grid[negative : negative + width])  # exponent 0, both signs
    if tiny[0].any() or tiny[1].any():
        tiny[0][:] = 0
        tiny[1][:] = 0
        _tiny(cells, x, tally)


def tally_cells(cells: Cells, values: Any, codes: np.ndarray | None, n_groups: int) -> Tally:
    """Count every value of ``values`` into group ``codes[row]`` (all in group 0 if None)."""
    pieces = check_numeric(values)
    if codes is not None or cells.bits > _DENSE_BITS or input_length(pieces) < _DENSE_MIN:
        keys_of = functools.partial(combined_keys, cells)
        return tally(cells.layout, pieces, codes, n_groups, keys_of)
    out = Tally([], [], np.zeros(n_groups, np.int64), np.zeros(n_groups, np.int64))
    grid = np.zeros(1 << (12 + cells.bits), dtype=np.int64)  # by (sign, exponent, cell)
    # NaN need no test: their cells (exponent 2047) are counted as skipped with inf
    for _, x, valid in numeric_chunks(pieces, nan_test=False):
        if valid is not None:  # nulls (and NaN, found by the test): count them, keep the rest
            out.skipped[0] += x.size - np.count_nonzero(valid)
            x = x[valid]
        if x.size:
            _count_dense(cells, x, grid, out)
    used = np.flatnonzero(grid != 0)  # on booleans: several times faster than on int64
    _decode(cells, used, grid[used], out)
    return out
