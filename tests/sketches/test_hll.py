"""HyperLogLog: exact register arithmetic, and accuracy against theory over many seeds.

Every test uses fixed seeds, so it is deterministic; the tolerances are statistical
(about 4 standard errors of the quantity checked), not fitted to observed numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sketches import HyperLogLog, InvalidParameterError, union
from sketches._hll_sparse import entries_of as _entries
from sketches._hll_sparse import entry_registers as _entry_registers
from sketches._hll_sparse import split as _split
from sketches.hll import estimate_from_registers, sparse_limit


def rel_errors(estimates: list[float], truth: float) -> np.ndarray:
    return np.array(estimates) / truth - 1.0


def sigma(precision: int) -> float:
    return 1.04 / math.sqrt(1 << precision)


def check_spread(errors: np.ndarray, precision: int, *, both_sides: bool) -> None:
    """The errors' spread matches 1.04/sqrt(m) and few fall outside 3 sigma."""
    s = sigma(precision)
    n = errors.size
    spread = float(np.sqrt(np.mean(errors**2)))  # RMS error: includes any bias
    # the sample RMS of n normal errors has relative standard error ~ 1/sqrt(2n)
    tolerance = 4.0 / math.sqrt(2 * n)
    assert spread <= s * (1 + tolerance + 0.05), (spread, s)
    if both_sides:
        assert spread >= s * (1 - tolerance - 0.05), (spread, s)
    assert abs(float(errors.mean())) <= 4 * s / math.sqrt(n) + 0.01 * s
    outside = int(np.sum(np.abs(errors) > 3 * s))
    assert outside <= max(1, math.ceil(0.01 * n)), outside  # 3-sigma tail is 0.27 %


# ---------------------------------------------------------------- registers


def reference_split(h: int, p: int) -> tuple[int, int]:
    index = h >> (64 - p)
    rest = (h << p) & ((1 << 64) - 1)
    rho = 1
    while rho <= 64 - p and not rest >> 63:
        rest = (rest << 1) & ((1 << 64) - 1)
        rho += 1
    return index, rho


@pytest.mark.parametrize("p", [4, 11, 14, 18])
def test_register_index_and_rho_are_exact(p: int) -> None:
    rng = np.random.default_rng(p)
    hashes = rng.integers(0, 2**64, size=2000, dtype=np.uint64)
    # the rare slow path (top 16 bits after the index all zero) and the cap
    edge = [0, 1, 2**64 - 1, 2 ** (64 - p), 2 ** (64 - p) - 1, 2 ** (47 - p), 2 ** (48 - p)]
    hashes = np.concatenate([hashes, np.array(edge, dtype=np.uint64)])
    hashes = np.concatenate([hashes, hashes >> np.uint64(20 + p % 7)])
    index, rho = _split(hashes, p)
    expected = [reference_split(int(h), p) for h in hashes.tolist()]
    assert index.tolist() == [e[0] for e in expected]
    assert rho.tolist() == [e[1] for e in expected]
    assert int(rho.max()) <= 65 - p


def test_update_takes_register_maxima() -> None:
    hll = HyperLogLog(precision=4)
    hll._update_hashes(np.array([0, 2**63 + 2**59, 2**60 - 1, 1], dtype=np.uint64))
    regs = hll.registers.tolist()
    assert regs[0] == 61  # hash 0 (cap) and hash 1 both land in register 0
    assert regs[8] == 1
    assert sum(r > 0 for r in regs) == 2
    assert hll.registers.flags.writeable is False


def test_precision_validation() -> None:
    for bad in (3, 19, "14", 14.0, True):
        with pytest.raises(InvalidParameterError):
            HyperLogLog(precision=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HyperLogLog(precision=2)
    assert HyperLogLog(precision=np.int64(12)).precision == 12  # type: ignore[arg-type]


# ---------------------------------------------------------------- accuracy


def test_empty_and_tiny_cardinalities_are_exact_enough() -> None:
    assert HyperLogLog().estimate() == 0.0
    for p in (10, 14):
        for n in (1, 10, 100):
            errors = rel_errors(
                [HyperLogLog(p, seed=s).update(np.arange(n)).estimate() for s in range(100)], n
            )
            # linear-counting regime: far better than 1.04/sqrt(m), never outside 3 sigma
            assert np.all(np.abs(errors) <= 3 * sigma(p))


@pytest.mark.parametrize("p", [8, 10, 12])
@pytest.mark.parametrize("load", [2.5, 5.0])
def test_transition_range_error_within_theory(p: int, load: float) -> None:
    n = int(load * (1 << p))
    estimates = [HyperLogLog(p, seed=s).update(np.arange(n)).estimate() for s in range(200)]
    check_spread(rel_errors(estimates, n), p, both_sides=False)


@pytest.mark.parametrize(
    ("p", "n", "seeds"), [(8, 100_000, 200), (12, 100_000, 120), (14, 1_000_000, 30)]
)
def test_large_range_error_matches_theory(p: int, n: int, seeds: int) -> None:
    estimates = [HyperLogLog(p, seed=s).update(np.arange(n)).estimate() for s in range(seeds)]
    check_spread(rel_errors(estimates, n), p, both_sides=seeds >= 100)


def test_ten_million_random_hashes_through_the_register_path() -> None:
    n, p = 10_000_000, 12
    errors = []
    for seed in range(4):
        hll = HyperLogLog(p)
        rng = np.random.default_rng(seed)
        for _ in range(n // 2_000_000):
            hll._update_hashes(rng.integers(0, 2**64, size=2_000_000, dtype=np.uint64))
        errors.append(hll.estimate() / n - 1)
    assert np.all(np.abs(errors) <= 3 * sigma(p))


def simulated_registers(n: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """Registers of n distinct uniformly hashed values, drawn from their exact law.

    Bucket loads are multinomial; a register with load c is the maximum of c
    independent rho values, P(max <= k) = (1 - 2**-k)**c for k <= 64 - p, capped at
    65 - p.
    """
    m, q = 1 << p, 64 - p
    loads = rng.multinomial(n, np.full(m, 1.0 / m))
    u = rng.random(m)
    with np.errstate(divide="ignore"):
        tail = -np.expm1(np.log(u) / np.maximum(loads, 1))  # 1 - u**(1/c)
        k = np.ceil(-np.log2(tail))
    k = np.clip(k, 1, q + 1)
    return np.where(loads > 0, k, 0).astype(np.uint8)


@pytest.mark.parametrize("p", [10, 14])
@pytest.mark.parametrize("n", [10**7, 10**9])
def test_estimator_up_to_a_billion_with_simulated_registers(p: int, n: int) -> None:
    rng = np.random.default_rng(p * 1000 + int(math.log10(n)))
    estimates = [estimate_from_registers(simulated_registers(n, p, rng), p) for _ in range(150)]
    check_spread(rel_errors(estimates, n), p, both_sides=True)


def test_simulation_agrees_with_real_updates() -> None:
    # guards the simulator itself: same error law as hashing real values
    p, n = 10, 50_000
    rng = np.random.default_rng(11)
    simulated = [estimate_from_registers(simulated_registers(n, p, rng), p) for _ in range(150)]
    real = [HyperLogLog(p, seed=s).update(np.arange(n)).estimate() for s in range(150)]
    s_sim = float(np.std(rel_errors(simulated, n)))
    s_real = float(np.std(rel_errors(real, n)))
    assert 0.7 < s_sim / s_real < 1.4


# ---------------------------------------------------------------- bounds, bytes, union


def test_bounds_bracket_the_truth() -> None:
    p, n = 10, 20_000
    inside = 0
    for s in range(100):
        hll = HyperLogLog(p, seed=s).update(np.arange(n))
        lo, est, hi = hll.lower_bound(3), hll.estimate(), hll.upper_bound(3)
        assert lo <= est <= hi
        assert math.isclose(hi - est, 3 * hll.relative_error() * est)
        inside += lo <= n <= hi
    assert inside >= 98
    small = HyperLogLog(14).update(["a", "b", "c"])
    assert small.lower_bound() >= 3.0 - 1e-9  # three non-zero registers: at least 3
    assert HyperLogLog().lower_bound() == HyperLogLog().upper_bound() == 0.0
    assert math.isclose(HyperLogLog(14).relative_error(), 1.04 / 128)


def test_sparse_and_dense_encodings() -> None:
    small = HyperLogLog(14).update(np.arange(100))
    assert small.is_sparse
    assert len(small.to_bytes()) == 13 + 2 + 4 + 4 * small._sparse.size + 4
    few_registers = HyperLogLog(14).update(np.arange(4300))  # registers, few non-zero
    assert not few_registers.is_sparse
    nonzero = int(np.count_nonzero(few_registers.registers))
    assert len(few_registers.to_bytes()) == 13 + 2 + 4 + 4 * nonzero + 4
    big = HyperLogLog(14).update(np.arange(100_000))
    assert len(big.to_bytes()) == 13 + 2 + (1 << 14) + 4
    for s in (small, few_registers, big, HyperLogLog(4)):
        assert HyperLogLog.from_bytes(s.to_bytes()) == s


def test_union_of_many_equals_sequential_merges() -> None:
    parts = [HyperLogLog(12).update(np.arange(i * 100, i * 100 + 300)) for i in range(300)]
    sequential = parts[0].copy()
    for part in parts[1:]:
        sequential.merge(part)
    assert union(*parts) == sequential
    assert abs(sequential.estimate() / 30_200 - 1) < 4 * sequential.relative_error()


# ---------------------------------------------------------------- sparse mode


def reference_entry(h: int) -> tuple[int, int]:
    """Sparse entry of a hash by its definition: index at precision 25 and its rho."""
    return reference_split(h, 25)


@pytest.mark.parametrize("p", [4, 9, 14, 18])
def test_sparse_entries_convert_exactly_into_registers(p: int) -> None:
    rng = np.random.default_rng(100 + p)
    hashes = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    edge = [0, 1, 2**64 - 1, 2**39, 2**39 - 1, 2 ** (64 - p), 2 ** (64 - p) - 1, 2**38]
    hashes = np.concatenate([hashes, np.array(edge, dtype=np.uint64)])
    hashes = np.concatenate([hashes, hashes >> np.uint64(25 + p % 11)])
    entries = _entries(hashes)
    expected = [reference_entry(int(h)) for h in hashes.tolist()]
    assert (entries >> np.uint32(6)).tolist() == [e[0] for e in expected]
    assert (entries & np.uint32(63)).tolist() == [e[1] for e in expected]
    index, rho = _entry_registers(entries, p)
    direct = [reference_split(int(h), p) for h in hashes.tolist()]
    assert index.tolist() == [d[0] for d in direct]
    assert rho.tolist() == [d[1] for d in direct]


@pytest.mark.parametrize("p", [6, 12, 14])
def test_sparse_until_the_entry_limit_then_registers(p: int) -> None:
    limit = sparse_limit(p)
    assert limit == (1 << p) // 4
    hll = HyperLogLog(p)
    rng = np.random.default_rng(p)
    seen = np.empty(0, dtype=np.uint64)
    while hll.is_sparse:
        batch = rng.integers(0, 2**64, size=int(rng.integers(1, limit // 3 + 2)), dtype=np.uint64)
        seen = np.concatenate([seen, batch])
        hll._update_hashes(batch)
        distinct = len({reference_entry(int(h))[0] for h in seen.tolist()})
        assert hll.is_sparse == (distinct <= limit), (distinct, limit)
        if hll.is_sparse:
            assert hll._sparse.nbytes == 4 * distinct and hll._registers is None
    one_pass = HyperLogLog(p)
    one_pass._update_hashes(seen[::-1].copy())
    assert one_pass.to_bytes() == hll.to_bytes()
    assert not one_pass.is_sparse and one_pass._sparse is None


def test_small_sketches_hold_no_registers() -> None:
    hll = HyperLogLog(14).update([f"user-{i}" for i in range(50)])
    assert hll.is_sparse and hll._registers is None and hll._sparse.nbytes == 200
    assert len(hll.to_bytes()) == 13 + 2 + 4 + 200 + 4
    assert hll.registers.shape == (1 << 14,) and hll.registers.flags.writeable is False
    assert np.count_nonzero(hll.registers) <= 50


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 4000])
def test_sparse_estimates_beat_the_registers_over_seeds(n: int) -> None:
    p = 14
    sparse_errors, dense_errors = [], []
    for seed in range(100):
        hll = HyperLogLog(p, seed=seed).update(np.arange(n))
        assert hll.is_sparse  # n <= 4096 distinct values: at most 4096 entries
        sparse_errors.append(hll.estimate() / n - 1)
        dense_errors.append(estimate_from_registers(hll.registers, p) / n - 1)
        assert hll.lower_bound(3) <= n <= hll.upper_bound(3) or abs(sparse_errors[-1]) * n < 1
    sparse_abs, dense_abs = np.abs(sparse_errors), np.abs(dense_errors)
    assert float(sparse_abs.mean()) <= float(dense_abs.mean()) + 1e-12
    assert np.all(sparse_abs <= 3 * sigma(p))
    # linear counting over 2**25 buckets: relative error about 1/sqrt(2 * 2**25) at most
    assert float(np.sqrt(np.mean(np.square(sparse_errors)))) <= 4 * sigma(25) + 1.0 / n


def test_sparse_lower_bound_counts_entries() -> None:
    hll = HyperLogLog(14).update(["a", "b", "c"])
    assert hll.is_sparse and hll.lower_bound(1000) == pytest.approx(3.0)
    assert hll.upper_bound() == pytest.approx(hll.estimate() * (1 + 2 * sigma(25)))


@pytest.mark.parametrize("seed", range(6))
def test_mixed_merges_equal_the_one_pass_build(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = 9
    values = rng.integers(0, 10**6, size=int(rng.integers(10, 600)))
    whole = HyperLogLog(p).update(values)
    cuts = np.sort(rng.integers(0, values.size, size=5))
    parts = [HyperLogLog(p).update(c) for c in np.split(values, cuts)]
    assert any(part.is_sparse for part in parts)
    order = rng.permutation(len(parts))
    merged = HyperLogLog(p)
    for i in order:
        merged.merge(parts[i])
    assert merged.to_bytes() == whole.to_bytes()
    assert union(*[parts[i] for i in order]).to_bytes() == whole.to_bytes()
    assert merged.is_sparse == whole.is_sparse


def test_from_groups_mixes_sparse_and_dense_groups() -> None:
    rng = np.random.default_rng(3)
    sizes = [0, 1, 40, 256, 257, 3000]  # limit at p=10 is 256 entries
    values = np.concatenate([rng.integers(0, 2**62, size=s) for s in sizes])
    codes = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(values.size)
    groups = HyperLogLog.from_groups(codes[order], values[order], len(sizes), precision=10)
    for i, group in enumerate(groups):
        expected = HyperLogLog(10).update(values[codes == i])
        assert group.to_bytes() == expected.to_bytes()
        assert group.is_sparse == expected.is_sparse
    assert [g.is_sparse for g in groups[:3]] == [True] * 3 and not groups[-1].is_sparse


def test_from_groups_moves_big_groups_to_registers_mid_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sketches._hll_sparse
    import sketches.hll

    monkeypatch.setattr(sketches.hll, "_CHUNK", 700)  # many batches ...
    monkeypatch.setattr(sketches._hll_sparse, "COMPACT_KEYS", 900)  # ... and many compactions
    rng = np.random.default_rng(4)
    sizes = [2, 100, 256, 257, 3000, 9000]
    values = np.concatenate([rng.integers(0, 2**62, size=s) for s in sizes])
    codes = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(values.size)
    groups = HyperLogLog.from_groups(codes[order], values[order], len(sizes), precision=10)
    for i, group in enumerate(groups):
        assert group.to_bytes() == HyperLogLog(10).update(values[codes == i]).to_bytes(), i
    assert [g.is_sparse for g in groups] == [True, True, True, False, False, False]
