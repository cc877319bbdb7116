"""Bloom filter: sizing, no false negatives, false-positive rate at capacity, estimates."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sketches import BloomFilter, InvalidParameterError, UnsupportedInputError, hash64
from sketches.bloom import bloom_size


@pytest.mark.parametrize(("n", "p"), [(1000, 0.01), (10_000, 0.001), (1, 0.5), (12_345, 0.05)])
def test_sizing_formula(n: int, p: float) -> None:
    bits, hashes = bloom_size(n, p)
    raw = -n * math.log(p) / math.log(2) ** 2
    assert bits % 64 == 0 and raw <= bits < raw + 64 + 1e-9 or bits == 64
    assert hashes == max(1, round(bits / n * math.log(2)))
    bf = BloomFilter(n, p)
    assert (bf.num_bits, bf.num_hashes) == (bits, hashes)


@pytest.mark.parametrize(
    ("capacity", "error_rate"),
    [(0, 0.01), (10, 0.0), (10, 1.0), (10, float("nan")), (10**12, 0.01), (10, 1e-30), (1.5, 0.1)],
)
def test_bad_parameters(capacity: int, error_rate: float) -> None:
    with pytest.raises(InvalidParameterError):
        BloomFilter(capacity, error_rate)


@pytest.mark.parametrize(("capacity", "target"), [(5000, 0.01), (20_000, 0.001), (3000, 0.1)])
def test_false_positive_rate_at_capacity(capacity: int, target: float) -> None:
    rates = []
    for seed in range(5):
        bf = BloomFilter(capacity, target, seed=seed)
        members = [f"member-{seed}-{i}" for i in range(capacity)]
        bf.update(pa.array(members))
        assert bf.contains(members).all()  # no false negatives, ever
        probes = 200_000
        rates.append(float(bf.contains(np.arange(probes) + 10**12).mean()))
        assert math.isclose(bf.expected_fpr(), bf.fill_ratio() ** bf.num_hashes)
    mean_rate = float(np.mean(rates))
    assert mean_rate <= 1.25 * target, (mean_rate, target)
    assert max(rates) <= 1.5 * target
    assert mean_rate >= 0.5 * target  # and the filter is not accidentally oversized


def test_no_false_negatives_across_types_and_merges() -> None:
    values = [1, 2.5, "s", b"b", 2**63 + 1, -7, True]
    a = BloomFilter(100).update(values[:4])
    b = BloomFilter(100).update(values[4:])
    merged = a.copy().merge(b)
    assert merged.contains(values).all()
    assert all(v in merged for v in values)
    assert merged.contains([None, float("nan")]).tolist() == [False, False]
    assert None not in merged
    with pytest.raises(UnsupportedInputError):
        _ = [1, 2] in merged


def test_cardinality_estimate() -> None:
    for n in (100, 3000, 9000):
        errors = []
        for seed in range(10):
            bf = BloomFilter(10_000, 0.01, seed=seed).update(np.arange(n))
            errors.append(bf.estimate() / n - 1)
        assert abs(float(np.mean(errors))) < 0.02
        assert float(np.max(np.abs(errors))) < 0.06
    assert BloomFilter(100).estimate() == 0.0
    full = BloomFilter(1, 0.5)
    full.update(np.arange(10_000))
    assert full.fill_ratio() == 1.0 and full.estimate() == math.inf


def test_fill_ratio_and_duplicates() -> None:
    bf = BloomFilter(1000, 0.01).update(["x"] * 50)
    assert bf.fill_ratio() * bf.num_bits <= bf.num_hashes
    assert bf == BloomFilter(1000, 0.01).update(["x"])


def test_sparse_and_dense_encodings() -> None:
    small = BloomFilter(100_000, 0.01).update(["a", "b"])
    nonzero_words = len({p // 64 for p in small._positions(hash64(["a", "b"])).ravel().tolist()})
    assert len(small.to_bytes()) == 13 + 26 + 1 + 4 + 12 * nonzero_words + 4
    big = BloomFilter(1000, 0.01).update(np.arange(1000))
    assert len(big.to_bytes()) == 13 + 26 + 1 + big.num_bits // 8 + 4
    for bf in (small, big):
        assert BloomFilter.from_bytes(bf.to_bytes()) == bf


def test_small_and_large_batches_set_the_same_bits() -> None:
    values = np.arange(20_000)
    one_pass = BloomFilter(5000, 0.01).update(values)  # many probes per bit: scratch path
    batched = BloomFilter(5000, 0.01)
    for start in range(0, values.size, 37):  # few probes per bit: sort-and-add path
        batched.update(values[start : start + 37])
    assert batched == one_pass
    groups = BloomFilter.from_groups(values % 3, values, 3, capacity=5000)
    merged = groups[0].copy().merge(groups[1]).merge(groups[2])
    assert merged == one_pass
