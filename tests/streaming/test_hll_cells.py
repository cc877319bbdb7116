"""Bulk HyperLogLog cells (streaming.engine.hll_cells) against the sketches package."""

from __future__ import annotations

import numpy as np
import pytest

import sketches
from sketches.hll import sparse_limit
from streaming.engine.hll_cells import compact_cells


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("precision", [10, 12, 14])
def test_merged_bytes_and_bounds_equal_the_sketch_objects(seed, precision):
    rng = np.random.default_rng(seed)
    n_cells = 40
    blobs, cell, want = [], [], {}
    for c in range(n_cells):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            values = [f"v{int(v)}" for v in rng.integers(0, 3000, int(rng.integers(0, 60)))]
            parts.append(sketches.HyperLogLog(precision=precision).update(values))
        for p in parts:
            blobs.append(p.to_bytes())
            cell.append(c)
        want[c] = sketches.union(*parts)
    template = sketches.HyperLogLog(precision=precision).to_bytes()
    got = compact_cells(blobs, np.array(cell), n_cells, template, precision,
                        sparse_limit(precision))
    assert got is not None
    for c in range(n_cells):
        w = want[c]
        if got.data[c] is None:  # past the compact limit: left to the caller
            assert len(w.to_bytes()) > 0 and w._registers is not None
            continue
        assert got.data[c] == w.to_bytes(), c
        est, lo, hi = w.estimate_with_bounds(2)
        assert (got.estimate[c], got.lower[c], got.upper[c]) == (est, lo, hi), c
    assert got.relative_error == w.relative_error()


def test_other_layouts_are_left_to_the_caller_not_misread():
    dense = sketches.HyperLogLog(precision=8).update([f"x{i}" for i in range(5000)])
    small = sketches.HyperLogLog(precision=8).update(["a"])
    template = sketches.HyperLogLog(precision=8).to_bytes()
    got = compact_cells([dense.to_bytes(), small.to_bytes(), small.to_bytes()],
                        np.array([0, 0, 1]), 2, template, 8, sparse_limit(8))
    assert got is not None and got.data[0] is None  # a dense blob: that cell is left
    assert got.data[1] == small.to_bytes()
    broken = bytearray(small.to_bytes())
    broken[-1] ^= 1  # CRC
    assert compact_cells([bytes(broken)], np.array([0]), 1, template, 8,
                         sparse_limit(8)) is None
    other = sketches.HyperLogLog(precision=9).update(["a"]).to_bytes()
    assert compact_cells([other], np.array([0]), 1, template, 8, sparse_limit(8)) is None
