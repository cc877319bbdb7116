"""MinHash: identical to datasketch's affine64 MinHash fed our hash; Jaccard accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasketch import MinHash

from sketches import InvalidParameterError, MinHashSketch, hash64


def our_hash(seed: int):  # noqa: ANN201 - a datasketch hashfunc
    return lambda b: int(hash64([b], seed=seed)[0])


@pytest.mark.parametrize(("num_perm", "seed"), [(16, 1), (128, 7), (5, 0)])
def test_equals_datasketch_with_our_hash(num_perm: int, seed: int) -> None:
    values = [f"token-{i}".encode() for i in range(500)]
    ours = MinHashSketch(num_perm, seed=seed).update(values)
    theirs = MinHash(num_perm=num_perm, seed=seed, hashfunc=our_hash(seed), scheme="affine64")
    theirs.update_batch(values)
    assert ours.hashvalues.tolist() == theirs.hashvalues.tolist()
    assert np.array_equal(ours.to_datasketch().hashvalues, theirs.hashvalues)
    assert math.isclose(ours.estimate(), theirs.count())


def test_jaccard_accuracy_over_seeds() -> None:
    num_perm = 256
    errors = []
    for seed in range(30):
        a = MinHashSketch(num_perm, seed=seed).update(np.arange(0, 3000))
        b = MinHashSketch(num_perm, seed=seed).update(np.arange(1000, 4000))
        truth = 2000 / 4000
        errors.append(a.jaccard(b) - truth)
        lo, hi = a.jaccard_bounds(b, k=4)
        assert lo <= truth <= hi
    sd = math.sqrt(0.5 * 0.5 / num_perm)
    assert abs(float(np.mean(errors))) < 4 * sd / math.sqrt(30)
    assert 0.6 * sd < float(np.std(errors)) < 1.4 * sd


def test_cardinality_estimate_within_bounds() -> None:
    inside = 0
    for seed in range(40):
        mh = MinHashSketch(256, seed=seed).update(np.arange(5000))
        inside += mh.lower_bound(3) <= 5000 <= mh.upper_bound(3)
    assert inside >= 39
    assert MinHashSketch().estimate() == 0.0
    assert math.isclose(MinHashSketch(102).relative_error(), 0.1)


def test_merge_is_union() -> None:
    a = MinHashSketch(64).update(["a", "b"])
    b = MinHashSketch(64).update(["b", "c"])
    assert a.copy().merge(b) == MinHashSketch(64).update(["a", "b", "c"])
    assert a.jaccard(a) == 1.0


def test_parameters() -> None:
    for bad in ({"num_perm": 0}, {"num_perm": 2**16 + 1}, {"seed": 2**32}, {"seed": -1}):
        with pytest.raises(InvalidParameterError):
            MinHashSketch(**bad)


# ---------------------------------------------------------------- hash mode


@pytest.mark.parametrize("seed", range(5))
def test_hash_mode_answers_as_the_signature_would(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_perm = int(rng.integers(2, 100))
    n = int(rng.integers(1, 2 * num_perm))
    values = [f"t{i}".encode() for i in rng.integers(0, 10**6, size=n).tolist()]
    others = values[::2] + [b"extra"]
    mh = MinHashSketch(num_perm, seed=seed).update(values)
    other = MinHashSketch(num_perm, seed=seed).update(others)
    assert mh.is_hashes == (len(set(values)) <= num_perm)
    theirs = MinHash(num_perm=num_perm, seed=seed, hashfunc=our_hash(seed), scheme="affine64")
    theirs.update_batch(values)
    their_other = MinHash(num_perm=num_perm, seed=seed, hashfunc=our_hash(seed), scheme="affine64")
    their_other.update_batch(others)
    assert mh.hashvalues.tolist() == theirs.hashvalues.tolist()
    assert mh.jaccard(other) == theirs.jaccard(their_other)
    assert math.isclose(mh.estimate(), theirs.count())
    assert np.array_equal(mh.to_datasketch().hashvalues, theirs.hashvalues)


def test_hashes_until_num_perm_then_signature() -> None:
    mh = MinHashSketch(num_perm=8)
    for i in range(8):
        mh.update([f"x{i}", f"x{i // 2}"])
        assert mh.is_hashes and mh._hashes.size == i + 1 and mh._hashvalues is None
    mh.update(["x8"])
    assert not mh.is_hashes and mh._hashes is None
    one_pass = MinHashSketch(num_perm=8).update([f"x{i}" for i in range(9)][::-1])
    assert one_pass.to_bytes() == mh.to_bytes()


@pytest.mark.parametrize("seed", range(3))
def test_mixed_hash_and_signature_merges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 10**9, size=int(rng.integers(20, 200)))
    whole = MinHashSketch(num_perm=16).update(values)
    parts = [MinHashSketch(num_perm=16).update(p) for p in np.split(values, [3, 10, 40])]
    assert any(p.is_hashes for p in parts) and not all(p.is_hashes for p in parts)
    merged = MinHashSketch(num_perm=16)
    for i in rng.permutation(len(parts)).tolist():
        merged.merge(parts[i])
    assert merged.to_bytes() == whole.to_bytes()
    from sketches import union

    assert union(*parts).to_bytes() == whole.to_bytes()
    codes = np.repeat([0, 1, 2], [3, 16, values.size - 19])
    groups = MinHashSketch.from_groups(codes, values, 3, num_perm=16)
    for i, group in enumerate(groups):
        assert group.to_bytes() == MinHashSketch(num_perm=16).update(values[codes == i]).to_bytes()
    assert [g.is_hashes for g in groups] == [True, True, False]
