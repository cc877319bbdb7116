"""Log-spaced buckets for :class:`~sketches.quantiles.QuantileSketch`, exact on every machine.

A positive float ``x = 2**e * (1 + s)`` (``0 <= s < 1``) falls in bucket
``key = per_octave * e + j`` where ``j`` counts the octave's boundaries ``B_1 < ... <
B_(per_octave - 1)`` that are ``<= 1 + s``. Bucket ``key`` therefore holds the values
``2**e * [B_j, B_(j+1))`` (``B_0 = 1``, ``B_per_octave = 2``), and every bucket spans
a ratio of at most ``gamma = (1 + a) / (1 - a)`` for the effective accuracy ``a``, so
its representative ``2 lo hi / (lo + hi)`` is within ``a`` relative error of every
value in it.

The boundaries follow DDSketch's cubic approximation of ``log2`` (``L(x) = e + P(s)``,
``P(s) = ((6/35 s - 3/5) s + 10/7) s``, monotone with ``P(0) = 0``, ``P(1) = 1``):
``B_j = 1 + s_j`` with ``s_j`` the smallest multiple of ``2**-40`` such that
``P(s_j) >= j / per_octave``. ``P`` has rational coefficients, so each ``s_j`` is
found with exact integer arithmetic: the layout, and so every key, is the same on
every machine whatever its ``log``. (``np.log`` and the C library's ``log`` disagree in
the last bit for about one value in 2,000 of a log-normal sample, and either may
change with the CPU or the version: with ``ceil(log(x) / log(gamma))`` keys, a value
next to a boundary could change bucket between a partial built on one machine and a
one-pass build on another.) Since
``(1 + s) P'(s) >= 10/7`` on ``[0, 1]``, ``per_octave = ceil(7 / (10 ln gamma))``
buckets per octave suffice (one more if the rounded boundaries need it): about 1 %
more buckets than exact logarithms (35 per octave for ``a = 0.01``, against 34.7).

Computing a key costs a few integer operations on the float's bits and two lookups
in a table indexed by the top ``table_bits`` bits of the significand (a table cell
holds at most one boundary): no logarithm.

Example:
    >>> layout = get_layout(0.01)
    >>> layout.per_octave
    35
    >>> keys = combined_keys(layout, np.array([1.0, 1.5, 3.0]))
    >>> (keys - 1023 * 35).tolist()
    [0, 20, 55]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Layout",
    "get_layout",
    "layout_from_bounds",
    "combined_keys",
    "key_range",
    "FRAC_BITS",
    "MANT_BITS",
    "MARGIN",
]

FRAC_BITS = 40  # boundaries are multiples of 2**-FRAC_BITS of the significand
MANT_BITS = 52
_MANT_MASK = np.uint64((1 << MANT_BITS) - 1)
_BLOCK = 1 << 14  # values per block of combined_keys: its temporaries stay in the L2 cache
_EXP_BIAS = 1023
_MIN_EXP = -1074  # the smallest subnormal is 2**-1074
_MAX_EXP = 1023
# margin so that float rounding in queries (~1e-16) never takes an estimate past the
# stated accuracy
MARGIN = 1e-9


def _cubic_at_least(t: int, j: int, m: int) -> bool:
    """Exactly: ``P(t / 2**40) >= j / m`` (``35 P(s) = 6 s**3 - 21 s**2 + 50 s``)."""
    f = FRAC_BITS
    lhs = 6 * t**3 - 21 * t**2 * (1 << f) + 50 * t * (1 << (2 * f))
    return lhs * m >= 35 * j * (1 << (3 * f))


def _boundaries(m: int) -> list[int]:
    """``t_0 = 0 < t_1 < ... < t_m = 2**40``: the boundaries in units of ``2**-40``."""
    if m == 1:
        return [0, 1 << FRAC_BITS]
    targets = np.arange(1, m, dtype=np.float64) / m
    lo = np.zeros(m - 1)
    hi = np.ones(m - 1)
    for _ in range(60):  # bisection on a monotone cubic: a float first guess
        mid = 0.5 * (lo + hi)
        p = ((6.0 / 35.0 * mid - 0.6) * mid + 10.0 / 7.0) * mid
        below = p < targets
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    out = [0]
    for j, guess in enumerate((hi * (1 << FRAC_BITS)).tolist(), start=1):
        t = math.floor(guess)
        while not _cubic_at_least(t, j, m):  # then the exact smallest multiple
            t += 1
        while t > 0 and _cubic_at_least(t - 1, j, m):
            t -= 1
        out.append(t)
    out.append(1 << FRAC_BITS)
    return out


def _accuracy(bounds: list[int]) -> float:
    """The largest relative error of a bucket's representative: ``(r - 1) / (r + 1)``."""
    one = 1 << FRAC_BITS
    ratio = max((one + b) / (one + a) for a, b in zip(bounds, bounds[1:], strict=False))
    return (ratio - 1.0) / (ratio + 1.0)


@dataclass(frozen=True, eq=False)
class Layout:
    """The bucket layout for one requested relative accuracy (see the module doc).

    Attributes:
        per_octave: Buckets per power of two.
        accuracy: Largest relative error of a representative (<= the requested one).
        lower: ``B_0 .. B_per_octave`` as floats (significands in ``[1, 2]``).
        representative: Per bucket of an octave, ``2 B_j B_(j+1) / (B_j + B_(j+1))``.
    """

    per_octave: int
    accuracy: float
    lower: np.ndarray
    representative: np.ndarray
    bounds: tuple[int, ...]

    @functools.cached_property
    def _table(self) -> tuple[int, np.ndarray, np.ndarray]:
        m = self.per_octave
        bits = max(8, math.ceil(math.log2(m)) + 1)  # a cell is narrower than any bucket
        shift = MANT_BITS - bits
        marks = np.array(self.bounds[1:-1], dtype=np.uint64) << np.uint64(MANT_BITS - FRAC_BITS)
        starts = np.arange(1 << bits, dtype=np.uint64) << np.uint64(shift)
        base = np.searchsorted(marks, starts, side="right").astype(np.int64)
        padded = np.append(marks, np.uint64(1 << 63))
        nxt = padded[base]
        if marks.size > 1 and int(np.diff(marks).min()) <= 1 << shift:  # pragma: no cover
            raise AssertionError("bucket table cells must be narrower than buckets")
        base.flags.writeable = False
        nxt.flags.writeable = False
        return shift, base, nxt

    def bucket_bounds(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lower, representative, upper)`` of positive buckets ``keys`` (int64)."""
        e, j = np.divmod(keys, self.per_octave)
        e = e.astype(np.int32)
        with np.errstate(over="ignore"):  # the top bucket's upper edge is 2**1024
            return (
                np.ldexp(self.lower[j], e),
                np.ldexp(self.representative[j], e),
                np.ldexp(self.lower[j + 1], e),
            )


def key_range(per_octave: int) -> tuple[int, int]:
    """Smallest and largest key of a non-zero finite float (subnormals included).

    Example:
        >>> key_range(35)
        (-37590, 35839)
    """
    return _MIN_EXP * per_octave, (_MAX_EXP + 1) * per_octave - 1


@functools.lru_cache(maxsize=16)
def get_layout(relative_accuracy: float) -> Layout:
    """The layout whose representatives are within ``relative_accuracy`` (cached)."""
    log_gamma = math.log1p(2.0 * relative_accuracy / (1.0 - relative_accuracy))
    m = max(1, math.ceil(7.0 / (10.0 * log_gamma)))
    while True:
        bounds = _boundaries(m)
        accuracy = _accuracy(bounds)
        if accuracy <= relative_accuracy * (1.0 - MARGIN):
            break
        m += 1
    return layout_from_bounds(bounds, accuracy)


def layout_from_bounds(bounds: list[int], accuracy: float) -> Layout:
    """The layout of one octave's boundaries ``t_0 = 0 < ... < t_m = 2**40`` (units of
    ``2**-40`` of the significand), whose representatives are within ``accuracy``."""
    one = float(1 << FRAC_BITS)
    lower = 1.0 + np.array(bounds, dtype=np.float64) / one
    representative = 2.0 * lower[:-1] * lower[1:] / (lower[:-1] + lower[1:])
    lower.flags.writeable = False
    representative.flags.writeable = False
    return Layout(len(bounds) - 1, accuracy, lower, representative, tuple(bounds))


def combined_keys(layout: Layout, x: np.ndarray) -> np.ndarray:
    """``(sign * 2048 + biased exponent) * per_octave + j`` of each float64 (int64).

    The sign and biased exponent are the float's top 12 bits, so zeros and subnormals
    have biased exponent 0 and infinities and NaN 2047; the caller treats those apart.
    For a normal ``x > 0`` the bucket key is the combined key minus
    ``1023 * per_octave``; for ``x < 0`` the key of ``-x`` is the combined key minus
    ``3071 * per_octave``.
    """
    shift, base, nxt = layout._table
    raw = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    if raw.size <= _BLOCK:
        mant = raw & _MANT_MASK
        cell = (mant >> np.uint64(shift)).view(np.int64)
        out = (raw >> np.uint64(MANT_BITS)).view(np.int64) * layout.per_octave
        out += base[cell]
        out += mant >= nxt[cell]
        return out
    # larger inputs: the same steps block by block, into buffers that stay in the cache
    out = np.empty(raw.size, dtype=np.int64)
    mant, cell = np.empty(_BLOCK, np.uint64), np.empty(_BLOCK, np.int64)
    part, above = np.empty(_BLOCK, np.uint64), np.empty(_BLOCK, np.bool_)
    for a in range(0, raw.size, _BLOCK):
        bits = raw[a : a + _BLOCK]
        n = bits.size
        keys, m, c, p, ge = out[a : a + n], mant[:n], cell[:n], part[:n], above[:n]
        np.bitwise_and(bits, _MANT_MASK, out=m)
        np.right_shift(m, np.uint64(shift), out=c.view(np.uint64))
        np.right_shift(bits, np.uint64(MANT_BITS), out=keys.view(np.uint64))
        keys *= layout.per_octave
        keys += np.take(base, c, out=p.view(np.int64))
        np.greater_equal(m, np.take(nxt, c, out=p), out=ge)
        keys += ge
    return out
