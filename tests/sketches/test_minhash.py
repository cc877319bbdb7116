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
