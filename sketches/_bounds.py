"""Bounds on a distinct count from a sample of hashes (Theta sketches)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["binomial_bounds"]

_EXACT_BOUND_MAX = 120  # up to this many entries, bounds from the exact binomial tail


def _binomial_cdf(trials: int, successes: int, p: float) -> float:
    """``P(Binomial(trials, p) <= successes)`` for ``trials >= successes``."""
    j = np.arange(successes + 1, dtype=np.float64)
    steps = np.log((float(trials) - j[:-1]) / (j[:-1] + 1.0))
    log_choose = np.concatenate(([0.0], np.cumsum(steps)))
    terms = log_choose + j * math.log(p) + (float(trials) - j) * math.log1p(-p)
    return float(np.exp(terms).sum())


def _bisect(lo: int, hi: int, ok_hi: Any) -> int:
    """The boundary ``n`` in ``(lo, hi]`` where ``ok_hi`` turns true (monotone)."""
    while not ok_hi(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok_hi(mid) else (mid, hi)
    return hi


def binomial_bounds(count: int, p: float, num_std: int) -> tuple[float, float]:
    """``num_std``-sigma bounds on the distinct count when ``count`` hashes fell below
    the fraction ``p`` of the hash space (``delta``: the normal tail beyond ``num_std``).

    Up to 120 entries, exact binomial tails, by bisection: the lower bound is the
    largest ``n`` with ``P(Bin(n, p) >= count) <= delta``, the upper the smallest with
    ``P(Bin(n, p) <= count) <= delta``. Above, the normal approximation with continuity
    correction (DataSketches' choice there): ``n`` solving
    ``n - (count -/+ 0.5) / p = -/+ num_std * sqrt(n (1 - p) / p)``, widened by 0.5.
    Clamped to ``count <= lower <= count / p <= upper``.

    Example:
        >>> binomial_bounds(0, 0.5, 2), binomial_bounds(10, 0.5, 2)
        ((0.0, 6.0), (12.0, 33.0))
    """
    estimate = count / p
    if p >= 1.0:
        return float(count), float(count)
    if count > _EXACT_BOUND_MAX:
        z2 = num_std * num_std * (1.0 - p) / p  # the squared half-width per sqrt(n)
        low_hat, high_hat = (count - 0.5) / p, (count + 0.5) / p
        low = low_hat + z2 / 2.0 - math.sqrt(z2 * (z2 + 4.0 * low_hat)) / 2.0 - 0.5
        high = high_hat + z2 / 2.0 + math.sqrt(z2 * (z2 + 4.0 * high_hat)) / 2.0 + 0.5
    else:
        delta = 0.5 * math.erfc(num_std / math.sqrt(2.0))
        start = max(2 * math.ceil((count + 1) / p), count + 1)
        high = float(_bisect(count, start, lambda n: _binomial_cdf(n, count, p) <= delta))
        low = float(_bisect(count - 1, start, lambda n: 1.0 - _binomial_cdf(
            n, count - 1, p) > delta) - 1) if count else 0.0
    return min(estimate, max(float(count), low)), max(estimate, high)
