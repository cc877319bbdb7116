"""Bloom filter: sizing, no false negatives, false-positive rate at capacity, estimates."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sketches import BloomFilter, InvalidParameterError, UnsupportedInputError, hash64, union
from sketches.bloom import bloom_size, hash_limit
from sketches.hashing import row_multipliers


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


def test_hash_and_bit_encodings() -> None:
    small = BloomFilter(100_000, 0.01).update(["a", "b", "a"])
    assert small.is_hashes and len(small.to_bytes()) == 13 + 26 + 1 + 4 + 8 * 2 + 4
    big = BloomFilter(1000, 0.01).update(np.arange(1000))
    assert not big.is_hashes and len(big.to_bytes()) == 13 + 26 + 1 + big.num_bits // 8 + 4
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


# ---------------------------------------------------------------- hash mode


def reference_positions(values: list[object], num_bits: int, k: int) -> set[int]:
    """Bit positions by the documented definition: ((h * a_i mod 2**64) >> 32) * m >> 32."""
    out = set()
    for h in hash64(values).tolist():
        for a in row_multipliers(b"ssk:blm ", k).tolist():
            out.add(((((h * a) % 2**64) >> 32) * num_bits) >> 32)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_hash_mode_answers_as_the_bits_would(seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(5, 400))
    bf = BloomFilter(capacity, float(rng.choice([0.3, 0.05, 0.01])), seed=0)
    members = [f"m{i}" for i in rng.integers(0, 10**6, size=int(rng.integers(1, 2 * capacity)))]
    bf.update(members)
    assert bf.is_hashes == (len(set(members)) <= hash_limit(bf.num_bits))
    bits = reference_positions(members, bf.num_bits, bf.num_hashes)
    probes = members + [f"p{i}" for i in range(3000)]
    expected = [reference_positions([p], bf.num_bits, bf.num_hashes) <= bits for p in probes]
    assert bf.contains(probes).tolist() == expected
    assert bf.fill_ratio() == len(bits) / bf.num_bits
    as_bits = bf.copy()
    if as_bits.is_hashes:
        as_bits._to_bits()
    assert as_bits.contains(probes).tolist() == expected
    assert as_bits.estimate() == bf.estimate() and as_bits.expected_fpr() == bf.expected_fpr()


def test_hashes_until_the_limit_then_bits() -> None:
    bf = BloomFilter(640, 0.01)  # 6144 bits: 96 hashes at most
    limit = hash_limit(bf.num_bits)
    assert limit == 96
    for i in range(limit):
        bf.update([f"x{i}", f"x{i // 3}"])
        assert bf.is_hashes and bf._hashes.size == i + 1 and bf._words is None
    bf.update(["x96"])
    assert not bf.is_hashes and bf._hashes is None
    one_pass = BloomFilter(640, 0.01).update([f"x{i}" for i in range(97)][::-1])
    assert one_pass.to_bytes() == bf.to_bytes()


def test_small_filters_hold_no_bits() -> None:
    bf = BloomFilter(100_000, 0.01).update([f"user-{i}" for i in range(50)])
    assert bf.is_hashes and bf._hashes.nbytes == 400 and bf._words is None
    assert bf.contains([f"user-{i}" for i in range(50)]).all()
    assert not BloomFilter(100_000, 0.01).contains(["a"]).any()


@pytest.mark.parametrize("seed", range(4))
def test_mixed_hash_and_bit_merges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 10**9, size=int(rng.integers(20, 300)))
    whole = BloomFilter(300, 0.01).update(values)  # limit 45 hashes
    cuts = np.sort(np.append(rng.integers(0, values.size, size=3), 10))
    parts = [BloomFilter(300, 0.01).update(p) for p in np.split(values, cuts)]
    assert any(p.is_hashes for p in parts)
    merged = BloomFilter(300, 0.01)
    for i in rng.permutation(len(parts)).tolist():
        merged.merge(parts[i])
    assert merged.to_bytes() == whole.to_bytes()
    assert union(*parts).to_bytes() == whole.to_bytes()


def test_from_groups_mixes_hash_and_bit_groups() -> None:
    rng = np.random.default_rng(2)
    sizes = [0, 1, 30, 96, 97, 2000]  # limit of capacity 640 is 96
    values = np.concatenate([rng.integers(0, 10**9, size=s) for s in sizes])
    codes = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(values.size)
    groups = BloomFilter.from_groups(codes[order], values[order], len(sizes), capacity=640)
    for i, group in enumerate(groups):
        assert group.to_bytes() == BloomFilter(640).update(values[codes == i]).to_bytes()
    assert [g.is_hashes for g in groups] == [True, True, True, True, False, False]
