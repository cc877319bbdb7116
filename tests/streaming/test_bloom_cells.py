"""Bulk Bloom filter cells (streaming.engine.bloom_cells) against the sketches package."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from sketch_specs import one_sketch

import sketches
from streaming.engine.bloom_cells import bloom_cells
from streaming.engine.bulk_cells import builder


def _spec(capacity: int, error_rate: float, seed: int = 0):
    return one_sketch("bloom", "user", capacity=capacity, error_rate=error_rate, seed=seed)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("capacity,error_rate", [(2000, 0.01), (500, 0.001), (100_000, 0.05)])
def test_merged_bytes_and_values_equal_the_filter_objects(seed, capacity, error_rate):
    rng = np.random.default_rng(seed)
    sk = _spec(capacity, error_rate, seed=seed)
    n_cells = 50
    blobs, cell, want = [], [], {}
    for c in range(n_cells):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            # some cells pass the hash limit once merged (or in one part): left as bits
            size = int(rng.choice([0, 3, 40, capacity // 40]))
            values = [f"v{int(v)}" for v in rng.integers(0, 4 * capacity, size)]
            parts.append(sk.new().update(values))
        for p in parts:
            blobs.append(p.to_bytes())
            cell.append(c)
        want[c] = sketches.union(*parts)
    order = rng.permutation(len(blobs))  # the blobs' order does not matter
    got = bloom_cells([blobs[i] for i in order], np.array(cell)[order], n_cells, sk)
    assert got is not None
    built = 0
    for c in range(n_cells):
        w = want[c]
        if got.data[c] is None:  # dense: left to the caller
            assert not w.is_hashes
            continue
        built += 1
        assert got.data[c] == w.to_bytes(), c
        assert got.values(c) == (w.estimate(), w.fill_ratio(), w.expected_fpr()), c
    assert built > n_cells // 2


def test_described_columns_are_the_rows_describe_gives():
    from streaming.engine.sketch_state import describe
    from streaming.engine.tables import SKETCHES_SCHEMA

    sk = _spec(1000, 0.01)
    parts = [sk.new().update(["a", "b"]), sk.new().update(["b", "c"]), sk.new()]
    got = bloom_cells([p.to_bytes() for p in parts], np.array([0, 0, 1]), 2, sk)
    cols = got.described(np.array([True, False]), SKETCHES_SCHEMA)
    est, _, _, _, stats = describe("bloom", sketches.union(*parts[:2]))
    assert cols["estimate"].to_pylist() == [est, None]
    assert cols["stats"].to_pylist()[0] == list(stats.items())
    assert cols["stats"].to_pylist()[1] is None
    assert math.isfinite(est) and est > 0


def test_other_encodings_and_damage_are_left_to_the_caller_not_misread():
    sk = _spec(1000, 0.01)
    dense = sk.new().update([f"x{i}" for i in range(500)])
    assert not dense.is_hashes
    small = sk.new().update(["a"])
    got = bloom_cells([dense.to_bytes(), small.to_bytes(), small.to_bytes()],
                      np.array([0, 0, 1]), 2, sk)
    assert got is not None and got.data[0] is None and got.data[1] == small.to_bytes()
    broken = bytearray(small.to_bytes())
    broken[-1] ^= 1  # CRC
    assert bloom_cells([bytes(broken)], np.array([0]), 1, sk) is None
    other = _spec(1000, 0.02).new().update(["a"]).to_bytes()  # other parameters
    assert bloom_cells(pa.array([other], pa.binary()), np.array([0]), 1, sk) is None


def test_kinds_with_a_builder():
    assert builder(_spec(1000, 0.01)) is bloom_cells
