"""The cells mapping of QuantileSketch, checked against exact rational arithmetic.

Each bucket must be a run of whole cells whose representative is within the stated
bound of every value in it, the bound within the requested accuracy, and each run as
long as the greedy rule allows; every value's bucket (in the sketch, whichever way it
was counted) must be the one found from ``math.frexp`` and exact fractions.
"""

from __future__ import annotations

import bisect
import functools
import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from sketches import QuantileSketch, union
from sketches._cells import cell_bits, cell_keys, get_cells
from sketches._logbuckets import FRAC_BITS, get_layout

ACCURACIES = [0.5, 0.2, 0.05, 0.01, 0.002, 1e-4]


def exact_error(lo: int, hi: int, bits: int) -> Fraction:
    """Largest relative error of the representative of cells ``[lo, hi)``."""
    n = 1 << bits
    return Fraction(hi - lo, 2 * n + lo + hi)


@pytest.mark.parametrize("accuracy", ACCURACIES)
def test_bits_and_runs_follow_the_stated_rule(accuracy: float) -> None:
    cells = get_cells(accuracy)
    b = cells.bits
    assert Fraction(1, 1 << b) <= Fraction(accuracy) < Fraction(2, 1 << b)  # smallest b
    edges = [t >> (FRAC_BITS - b) for t in cells.layout.bounds]
    assert [t << (FRAC_BITS - b) for t in edges] == list(cells.layout.bounds)  # whole cells
    assert edges[0] == 0 and edges[-1] == 1 << b and len(edges) == cells.layout.per_octave + 1
    errors = [exact_error(lo, hi, b) for lo, hi in zip(edges, edges[1:], strict=False)]
    assert max(errors) <= Fraction(accuracy)
    assert math.isclose(cells.layout.accuracy, float(max(errors)), rel_tol=1e-12)
    for lo, hi in zip(edges, edges[1:-1], strict=False):  # each run as long as allowed
        assert exact_error(lo, hi + 1, b) > Fraction(accuracy) * (1 - Fraction(1, 10**9))
    # the bucket of each cell
    starts = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    assert cells.bucket_of_cell.tolist() == starts.tolist()
    # the price of whole cells: more buckets than the log mapping, but not 25 % more
    log = get_layout(accuracy).per_octave
    assert log <= cells.layout.per_octave <= max(log + 1, 1.25 * log)


def test_the_documented_example_values() -> None:
    cells = get_cells(0.01)
    assert (cells.bits, cells.layout.per_octave) == (7, 42)
    assert cells.layout.accuracy == pytest.approx(0.00994, abs=5e-6)
    assert cell_bits(0.0078125) == 7 and cell_bits(0.0078124) == 8


@functools.cache
def exact_edges(accuracy: float) -> list[Fraction]:
    return [Fraction(t, 1 << FRAC_BITS) for t in get_cells(accuracy).layout.bounds]


def exact_key(x: float, accuracy: float) -> int:
    """Bucket key of ``x > 0`` from ``frexp`` and the cell edges, no float bit tricks."""
    m = get_cells(accuracy).layout.per_octave
    edges = exact_edges(accuracy)
    mant, exp = math.frexp(x)  # x = mant 2**exp, mant in [0.5, 1)
    e, s = exp - 1, Fraction(mant) * 2 - 1  # x = 2**e (1 + s)
    if e < -1022:  # subnormal: the same significand as x 2**64, 64 octaves lower
        scaled_mant, scaled_exp = math.frexp(x * 2.0**64)
        e, s = scaled_exp - 1 - 64, Fraction(scaled_mant) * 2 - 1
    return e * m + bisect.bisect_right(edges, s) - 1


def probe_values(accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Random values, each cell edge and its neighbours, subnormals, extremes."""
    cells = get_cells(accuracy)
    edges = np.array(cells.layout.lower)
    at = np.ldexp(edges[:-1], rng.integers(-30, 30, edges.size - 1))
    return np.concatenate(
        [
            rng.lognormal(0, 20, 400),
            at,
            np.nextafter(at, 0),
            np.nextafter(at, np.inf),
            [5e-324, 1e-320, 2.2250738585072014e-308, 2.225073858507201e-308],
            [1.7976931348623157e308, 1.0, 2.0, 0.75],
        ]
    )


@pytest.mark.parametrize("accuracy", [0.5, 0.05, 0.01, 1e-4])
def test_every_value_lands_in_its_exact_bucket(accuracy: float) -> None:
    values = probe_values(accuracy, np.random.default_rng(int(accuracy * 1e4)))
    expected = [exact_key(float(v), accuracy) for v in values]
    normal = values >= 2.2250738585072014e-308
    keys = cell_keys(get_cells(accuracy), values[normal])
    assert keys.tolist() == [k for k, n in zip(expected, normal, strict=True) if n]
    # and the sketch, one value at a time (the range count) or all at once
    for sign in (1.0, -1.0):
        whole = QuantileSketch(accuracy, mapping="cells", max_buckets=1 << 24).update(sign * values)
        store = whole._positive if sign > 0 else whole._negative
        want_keys, want_counts = np.unique(expected, return_counts=True)
        assert store.keys.tolist() == want_keys.tolist()
        assert store.counts.tolist() == want_counts.tolist()


def test_the_dense_count_equals_the_range_count_on_any_input() -> None:
    """Large inputs without groups count into all cells at once; small ones and groups
    count over the cells' range: the bytes must not tell which."""
    rng = np.random.default_rng(11)
    special = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, -3e-315, 1e300, -1e-300]
    values = np.concatenate(
        [
            rng.lognormal(0, 5, 150_000),
            -rng.lognormal(0, 1, 50_000),
            np.repeat(special, 7),
            rng.choice([-1.0, 1.0], 500) * 2.0 ** rng.uniform(-1074, -1022, 500),
        ]
    )
    rng.shuffle(values)
    whole = QuantileSketch(mapping="cells").update(values)  # dense
    parts = union(
        *[QuantileSketch(mapping="cells").update(p) for p in np.array_split(values, 20)]
    )  # 20 range counts
    grouped = QuantileSketch.from_groups(
        np.zeros(values.size, np.int64), values, 1, mapping="cells"
    )[0]
    arrow = QuantileSketch(mapping="cells").update(
        pa.chunked_array([pa.array(values[:70_000]), pa.array(values[70_000:])])
    )
    assert whole.to_bytes() == parts.to_bytes() == grouped.to_bytes() == arrow.to_bytes()
    finite = values[np.isfinite(values)]
    assert whole.count == finite.size and whole.skipped == values.size - finite.size
    assert whole.zero_count == int(np.count_nonzero(finite == 0.0))
    exact = np.sort(finite)[np.floor(np.linspace(0, 1, 101) * (finite.size - 1)).astype(int)]
    estimate = whole.quantiles(np.linspace(0, 1, 101))
    tiny = np.abs(exact) < 2.2250738585072014e-308
    assert np.all(np.abs(estimate - exact) <= 0.01 * np.abs(exact) + tiny * 2.0**-1075)
