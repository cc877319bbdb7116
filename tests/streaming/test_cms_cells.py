"""Bulk Count-Min cells (streaming.engine.cms_cells) against the sketches package."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sketch_specs import one_sketch

import sketches
from streaming.engine.bulk_cells import builder
from streaming.engine.cms_cells import cms_cells
from streaming.engine.sketch_state import describe
from streaming.engine.tables import SKETCHES_SCHEMA


def _spec(top_k: int, epsilon: float = 0.01, seed: int = 0):
    return one_sketch("cms", "page", epsilon=epsilon, delta=0.05, top_k=top_k, seed=seed)


def _values(rng, n: int, distinct: int) -> list[str]:
    # skewed (heavy hitters, ties), some non-ASCII items, a wide range of counts
    pool = [f"p{i}" if i % 7 else f"pâge-{i}" for i in range(distinct)]
    return [pool[int(i)] for i in rng.zipf(1.3, n) % distinct]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_k,epsilon", [(3, 0.01), (20, 0.001), (5, 0.2)])
def test_merged_bytes_and_description_equal_the_sketch_objects(seed, top_k, epsilon):
    rng = np.random.default_rng(seed)
    sk = _spec(top_k, epsilon, seed)
    n_cells = 60
    blobs, cell, want = [], [], {}
    limit = sk.new().exact_limit
    for c in range(n_cells):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            size = int(rng.choice([0, 1, 30, 400, 20_000]))
            parts.append(sk.new().update(_values(rng, size, int(rng.choice([5, limit])))))
        for p in parts:
            blobs.append(p.to_bytes())
            cell.append(c)
        merged = sk.new()
        for p in parts:
            merged.merge(p)
        assert merged.to_bytes() == sketches.union(*parts).to_bytes()
        want[c] = merged
    order = rng.permutation(len(blobs))
    got = cms_cells(pa.array([blobs[i] for i in order], pa.binary()), np.array(cell)[order],
                    n_cells, sk)
    assert got is not None
    final = np.ones(n_cells, dtype=bool)
    cols = got.described(final, SKETCHES_SCHEMA)
    built = 0
    for c in range(n_cells):
        w = want[c]
        if got.data[c] is None:  # counters (past the exact limit): left to the caller
            assert not w.is_exact
            continue
        built += 1
        assert got.data[c] == w.to_bytes(), c
        est, _, _, top, stats = describe("cms", w)
        assert got.top(c) == top, c
        assert cols["estimate"][c].as_py() == est
        assert cols["stats"][c].as_py() == list(stats.items())
        assert cols["top_k"][c].as_py() == [{"item": i, "count": n} for i, n in top]
    assert built >= n_cells // 3


def test_other_encodings_types_and_damage_are_left_not_misread():
    sk = _spec(5)
    counters = sk.new().update([f"x{i}" for i in range(20_000)])
    assert not counters.is_exact
    small = sk.new().update(["a", "b", "a"])
    ints = sk.new().update([1, 2, 3])  # items of another type: left to the caller
    got = cms_cells([counters.to_bytes(), small.to_bytes(), small.to_bytes(), ints.to_bytes()],
                    np.array([0, 0, 1, 2]), 3, sk)
    assert got is not None
    assert got.data[0] is None and got.data[2] is None
    assert got.data[1] == small.to_bytes()
    broken = bytearray(small.to_bytes())
    broken[-1] ^= 1  # CRC
    assert cms_cells([bytes(broken)], np.array([0]), 1, sk) is None
    other = _spec(6).new().update(["a"]).to_bytes()  # other parameters
    assert cms_cells([other], np.array([0]), 1, sk) is None
    assert cms_cells([small.to_bytes()], np.array([0]), 1, _spec(0)) is None  # no top-k


def test_open_rows_carry_no_description():
    sk = _spec(3)
    parts = [sk.new().update(["a"]), sk.new().update(["b", "b"])]
    got = cms_cells([p.to_bytes() for p in parts], np.array([0, 1]), 2, sk)
    cols = got.described(np.array([False, True]), SKETCHES_SCHEMA)
    assert cols["estimate"].to_pylist() == [None, 2.0]
    assert cols["top_k"].to_pylist() == [None, [{"item": "b", "count": 2}]]
    assert cols["stats"][0].as_py() is None


def test_kinds_with_a_builder():
    assert builder(_spec(3)) is cms_cells
