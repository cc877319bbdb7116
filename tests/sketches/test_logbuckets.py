"""The log-bucket layout of QuantileSketch, checked against exact rational arithmetic.

Boundaries must be the smallest grid points meeting the cubic's targets, and every
key computed with the table must equal one computed from ``math.frexp`` and exact
fractions, for random values and for values on and just below each boundary.
"""

from __future__ import annotations

import bisect
import functools
import math
from fractions import Fraction

import numpy as np
import pytest

from sketches._logbuckets import FRAC_BITS, combined_keys, get_layout, key_range


def cubic(s: Fraction) -> Fraction:
    return ((Fraction(6, 35) * s - Fraction(3, 5)) * s + Fraction(10, 7)) * s


@pytest.mark.parametrize("accuracy", [0.5, 0.2, 0.05, 0.01, 0.002])
def test_layout_boundaries_are_the_exact_smallest_grid_points(accuracy: float) -> None:
    layout = get_layout(accuracy)
    m = layout.per_octave
    one = Fraction(1, 1 << FRAC_BITS)
    for j, t in enumerate(layout.bounds[1:-1], start=1):
        assert cubic(t * one) >= Fraction(j, m) > cubic((t - 1) * one), j
    lower = [1 + t * one for t in layout.bounds]
    worst = max(hi / lo for lo, hi in zip(lower, lower[1:], strict=False))
    assert (worst - 1) / (worst + 1) <= Fraction(accuracy)
    log_gamma = math.log1p(2 * accuracy / (1 - accuracy))
    assert math.log(2) / log_gamma <= m <= math.ceil(7 / (10 * log_gamma)) + 1


@functools.cache
def exact_grid(accuracy: float) -> list[Fraction]:
    """The boundaries ``B_1 .. B_(m-1)`` of an octave, as exact fractions."""
    return [1 + Fraction(t, 1 << FRAC_BITS) for t in get_layout(accuracy).bounds[1:-1]]


def reference_key(x: float, accuracy: float) -> int:
    """Key of ``x > 0`` from ``math.frexp`` and exact boundaries, without the table."""
    mantissa, exponent = math.frexp(x)  # x = mantissa * 2**exponent, 0.5 <= mantissa < 1
    j = bisect.bisect_right(exact_grid(accuracy), Fraction(mantissa) * 2)
    return get_layout(accuracy).per_octave * (exponent - 1) + j


@pytest.mark.parametrize("accuracy", [0.3, 0.01, 0.0007])
def test_keys_match_a_reference_and_buckets_hold_their_values(accuracy: float) -> None:
    layout = get_layout(accuracy)
    m = layout.per_octave
    rng = np.random.default_rng(11)
    grid = exact_grid(accuracy)
    edges = [float(g) for g in grid] + [math.nextafter(float(g), 0) for g in grid]
    x = np.concatenate(
        [rng.lognormal(0, 50, 400), np.array(edges[:200] + edges[-200:]), [1.0, 2.0, 1e-300]]
    )
    keys = combined_keys(layout, x) - 1023 * m
    assert keys.tolist() == [reference_key(v, accuracy) for v in x.tolist()]
    lo, rep, hi = layout.bucket_bounds(keys)
    assert np.all((lo <= x) & (x < hi))
    assert np.all(np.abs(rep - x) <= accuracy * x)
    min_key, max_key = key_range(m)
    assert min_key <= keys.min() and keys.max() <= max_key
    ordered = np.sort(x)
    assert np.all(np.diff(combined_keys(layout, ordered)) >= 0)
