"""Count-Min sketch: sizing, guarantees over many seeds, weights, and top-k."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches import CountMinSketch, InvalidParameterError, _topk, hash64, union
from sketches.cms import candidate_capacity
from sketches.hashing import row_multipliers


def exact_counts(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    items, counts = np.unique(stream, return_counts=True)
    return items, counts


# ---------------------------------------------------------------- sizing


def test_sizing_from_epsilon_and_delta() -> None:
    cms = CountMinSketch(epsilon=0.01, delta=0.05)
    assert (cms.width, cms.depth) == (math.ceil(math.e / 0.01), math.ceil(math.log(1 / 0.05)))
    assert cms.epsilon <= 0.01 and cms.delta <= 0.05
    assert (CountMinSketch().width, CountMinSketch().depth) == (2719, 5)
    assert CountMinSketch(width=10, depth=2).params() == {
        "width": 10, "depth": 2, "seed": 0, "top_k": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 10},
        {"width": 10, "depth": 2, "epsilon": 0.1},
        {"epsilon": 0.0, "delta": 0.1},
        {"epsilon": 0.1, "delta": 1.0},
        {"width": 0, "depth": 2},
        {"width": 10, "depth": 65},
        {"width": 10, "depth": 2, "top_k": -1},
        {"width": 10.5, "depth": 2},
    ],
)
def test_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError):
        CountMinSketch(**kwargs)


# ---------------------------------------------------------------- guarantees


def test_never_underestimates_and_rarely_exceeds_epsilon_n() -> None:
    eps, delta = 0.01, 0.05
    fractions = []
    for seed in range(40):
        stream = np.random.default_rng(seed).zipf(1.2, size=20_000) % 5000
        cms = CountMinSketch(epsilon=eps, delta=delta, seed=seed).update(stream)
        items, counts = exact_counts(stream)
        est = cms.estimate(items)
        assert np.all(est >= counts)
        fractions.append(float(np.mean(est - counts > cms.error_bound())))
        assert cms.total == stream.size
        assert math.isclose(cms.error_bound(), math.e / cms.width * stream.size)
    assert float(np.mean(fractions)) <= delta
    assert max(fractions) <= 2 * delta


def test_single_row_overestimate_matches_uniform_hashing() -> None:
    # With one row of width w, an item's overestimate is the mass of the other items
    # that share its column: expectation (N - f) / w under uniform column hashing.
    width, n_items = 50, 2000
    ratios = []
    for seed in range(20):
        counts = np.random.default_rng(seed).integers(1, 20, size=n_items)
        cms = CountMinSketch(width=width, depth=1, seed=seed)
        cms.update(np.arange(n_items), counts=counts)
        over = cms.estimate(np.arange(n_items)) - counts
        ratios.append(float(over.mean()) / float(((counts.sum() - counts) / width).mean()))
    assert 0.9 < float(np.mean(ratios)) < 1.1
    assert float(np.std(ratios)) < 0.25  # no systematic clustering of columns


def test_rows_are_independent() -> None:
    # Two values collide in a row with probability 1/w; in all d rows with 1/w**d only if
    # the rows are independent (double hashing h + i*h2 gives about 1/w**2 instead).
    cms = CountMinSketch(width=8, depth=6)
    cols = cms._flat_indices(hash64(np.arange(4000))) % 8
    pairs_all_rows = 0
    for i in range(0, 4000, 50):
        pairs_all_rows += int(np.all(cols == cols[:, i : i + 1], axis=0).sum()) - 1
    # 80 probe items x 3999 others / 8**6 = 1.2 expected; 1/w**2 would give 5000
    assert pairs_all_rows <= 10
    per_row = [float(np.mean(cols[r] == cols[r, 0])) for r in range(6)]
    assert all(0.09 < f < 0.16 for f in per_row)  # 1/8 each


# ---------------------------------------------------------------- update / estimate API


def test_weights_equal_repetition_and_nulls_drop_their_counts() -> None:
    a = CountMinSketch(width=64, depth=3).update(["x", "y", None, "x"], counts=[2, 3, 100, 1])
    b = CountMinSketch(width=64, depth=3).update(["x", "x", "x", "y", "y", "y"])
    assert a == b
    assert a.total == 6
    with pytest.raises(InvalidParameterError):
        a.update(["x"], counts=[-1])
    with pytest.raises(InvalidParameterError):
        a.update(["x"], counts=[1.5])
    with pytest.raises(InvalidParameterError):
        a.update(["x", "y"], counts=[1])
    c = CountMinSketch(width=64, depth=3, top_k=2).update(["x", "y"], counts=[0, 4])
    assert c.top() == [("y", 4)]  # zero-weight items are not candidates


def test_estimate_shapes() -> None:
    cms = CountMinSketch(width=256, depth=4).update(["a", "a", "b"])
    assert cms.estimate("a") == 2 and isinstance(cms.estimate("a"), int)
    assert cms.estimate(["a", None, "zzz"]).tolist()[:2] == [2, 0]
    assert cms.estimate(pa.array(["b", None])).tolist() == [1, 0]
    assert cms.estimate([]).size == 0
    assert cms.counters.shape == (4, 256) and cms.counters.flags.writeable is False


# ---------------------------------------------------------------- top-k


def test_capacity() -> None:
    assert candidate_capacity(0) == 0
    assert candidate_capacity(1) == candidate_capacity(16) == 64
    assert candidate_capacity(50) == 200
    assert CountMinSketch(width=8, depth=1).top() == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([f"k{i}" for i in range(40)]), min_size=1, max_size=300))
def test_top_k_is_exact_on_small_alphabets(values: list[str]) -> None:
    cms = CountMinSketch(width=4096, depth=5, top_k=5).update(values)
    uniq, counts = np.unique(np.array(values), return_counts=True)
    top = cms.top()
    assert len(top) == min(5, uniq.size)
    true = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    reported = [c for _, c in top]
    assert reported == sorted(reported, reverse=True)
    assert sorted(true.values(), reverse=True)[: len(top)] == reported
    assert all(true[item] <= c for item, c in top)


def zipf_stream(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, size=size)
    return np.array([f"item-{i}" for i in ids.tolist()], dtype=object)


def check_heavy_hitters(cms: CountMinSketch, stream: np.ndarray, k: int) -> None:
    items, counts = exact_counts(stream.astype(str))
    order = np.argsort(-counts, kind="stable")
    true = dict(zip(items.tolist(), counts.tolist(), strict=True))
    kth_next = int(counts[order[k]])  # the (k+1)-th true count
    top = cms.top(k)
    found = {item for item, _ in top}
    for i in order[:k]:
        # every clear heavy hitter (beyond the error bound from the runner-up) is found
        if counts[i] >= kth_next + 2 * cms.error_bound():
            assert items[i] in found, (items[i], int(counts[i]))
    for item, est in top:
        assert true[item] <= est <= true[item] + 3 * cms.error_bound() + 1


@pytest.mark.parametrize("seed", range(4))
def test_heavy_hitters_survive_merging_random_partitions(seed: int) -> None:
    stream = zipf_stream(seed, 60_000)
    assert np.unique(stream).size > 10 * candidate_capacity(10)  # far more than capacity
    parts = np.random.default_rng(100 + seed).integers(0, 8, size=stream.size)
    partials = [
        CountMinSketch(epsilon=0.002, delta=0.01, top_k=10).update(stream[parts == i])
        for i in range(8)
    ]
    merged = union(*partials)
    check_heavy_hitters(merged, stream, 10)
    whole = CountMinSketch(epsilon=0.002, delta=0.01, top_k=10).update(stream)
    assert merged.counters.tolist() == whole.counters.tolist()  # counters: exact
    check_heavy_hitters(whole, stream, 10)


def test_grouped_build_with_many_distinct_items() -> None:
    stream = zipf_stream(9, 40_000)
    codes = np.random.default_rng(9).integers(0, 3, size=stream.size)
    groups = CountMinSketch.from_groups(codes, stream, 3, epsilon=0.002, delta=0.01, top_k=8)
    for i, group in enumerate(groups):
        single = CountMinSketch(epsilon=0.002, delta=0.01, top_k=8).update(stream[codes == i])
        assert group == single  # one update chunk: identical, candidates included
        check_heavy_hitters(group, stream[codes == i], 8)


def reference_refresh(cms: CountMinSketch, batch: list[Any]) -> list[int]:
    """Candidates without the threshold shortcut: best of old | distinct(batch)."""
    pool = set(cms._cand_hashes.tolist()) | set(hash64(batch).tolist())
    pool_arr = np.array(sorted(pool), dtype=np.uint64)
    est = cms._estimate_hashes(pool_arr)
    chosen = _topk.rank_top(pool_arr, est, cms.capacity)
    return pool_arr[chosen].tolist()


def test_threshold_shortcut_matches_the_plain_refresh() -> None:
    rng = np.random.default_rng(5)
    cms = CountMinSketch(width=512, depth=4, top_k=4)  # capacity 64
    cms.update([f"warm-{i}" for i in range(cms.exact_limit + 1)])  # counters from here on
    assert not cms.is_exact
    for _ in range(30):
        batch = [f"v{i}" for i in (rng.zipf(1.4, size=300) % 400).tolist()]
        before = cms.copy()
        cms.update(batch)
        before._add(hash64(batch), None)
        expected = reference_refresh(before, batch)
        assert cms._cand_hashes.tolist() == expected
        assert len(cms._cand_items) == len(expected)
        assert hash64(cms._cand_items).tolist() == expected


def test_items_keep_their_type() -> None:
    cms = CountMinSketch(width=256, depth=4, top_k=3)
    cms.update([b"raw", b"raw", "text", 7, 7, 7, 2.5, 3.0, 2**63 + 5, True])
    items = dict(cms.top(7))
    assert items[7] == 3 and items[b"raw"] == 2 and items["text"] == 1
    assert items[2.5] == 1 and items[2**63 + 5] == 1
    assert items[3] == 1 and 3.0 not in [i for i in items if isinstance(i, float)]
    assert items[1] == 1  # True counts as 1
    back = CountMinSketch.from_bytes(cms.to_bytes())
    assert back.top(7) == cms.top(7)


@pytest.mark.parametrize("seed", range(5))
def test_rerank_with_every_item_makes_candidates_split_independent(seed: int) -> None:
    # Far more distinct items than candidates: merging parts' candidate lists alone
    # depends on the split; offering every item after merging the counters does not.
    rng = np.random.default_rng(seed)
    stream = [f"i{v}" for v in rng.zipf(1.3, 20_000) % 3_000]
    whole = CountMinSketch(width=256, depth=4, top_k=10).update(stream)
    cuts = np.sort(rng.choice(len(stream), size=6, replace=False))
    parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    merged = CountMinSketch(width=256, depth=4, top_k=10)
    for part in reversed(parts):
        merged.merge(CountMinSketch(width=256, depth=4, top_k=10).update(part))
    merged.rerank(sorted(set(stream)))
    assert merged.to_bytes() == whole.to_bytes()


def test_rerank_skips_items_never_counted_and_is_a_no_op_without_top_k() -> None:
    cms = CountMinSketch(width=4096, depth=4, top_k=2).update(["a", "b", "b"])
    assert cms.rerank(["zzz", None]).top() == [("b", 2), ("a", 1)]
    plain = CountMinSketch(width=64, depth=2).update(["a"])
    assert plain.copy().rerank(["a", "b"]) == plain


# ---------------------------------------------------------------- exact mode


def reference_counters(values: list[Any], counts: np.ndarray, width: int, depth: int) -> np.ndarray:
    """Counters by the documented definition: row i adds at ((h * a_i >> 32) * width) >> 32."""
    out = np.zeros((depth, width), dtype=np.int64)
    hashes = hash64(values).tolist()
    for row, a in enumerate(row_multipliers(b"ssk:cms ", depth).tolist()):
        for h, c in zip(hashes, counts.tolist(), strict=True):
            out[row, ((((h * a) % 2**64) >> 32) * width) >> 32] += c
    return out


@pytest.mark.parametrize("seed", range(8))
def test_exact_mode_answers_as_the_counters_would(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width, depth = int(rng.integers(2, 40)), int(rng.integers(1, 5))  # many collisions
    values = [f"v{i}" for i in rng.integers(0, 200, size=int(rng.integers(1, 60))).tolist()]
    counts = rng.integers(0, 5, size=len(values))
    cms = CountMinSketch(width=width, depth=depth, top_k=3).update(values, counts=counts)
    distinct = {v for v, c in zip(values, counts.tolist(), strict=True) if c}
    assert cms.is_exact == (len(distinct) <= cms.exact_limit)
    assert cms._counters is None or not cms.is_exact
    expected = reference_counters(values, counts, width, depth)
    assert cms.counters.tolist() == expected.tolist()
    probes = [f"v{i}" for i in range(250)]
    assert (
        cms.estimate(probes).tolist()
        == expected[
            np.arange(depth)[:, None],
            cms._flat_indices(hash64(probes)) % width,
        ]
        .min(axis=0)
        .tolist()
    )
    assert cms.total == int(counts.sum())


def test_exact_until_the_limit_then_counters() -> None:
    cms = CountMinSketch(width=80, depth=2, top_k=1)  # limit 20 distinct items
    assert cms.exact_limit == 20 and CountMinSketch(width=80, depth=2).exact_limit == 80
    for i in range(20):
        cms.update([f"k{i}", f"k{i // 2}"])
        assert cms.is_exact and cms._ex_hashes.size == i + 1
    assert cms._counters is None and cms.is_exact
    cms.update(["k20"])
    assert not cms.is_exact and cms._ex_hashes is None
    one_pass = CountMinSketch(width=80, depth=2, top_k=1).update(
        [x for i in range(20) for x in (f"k{i}", f"k{i // 2}")] + ["k20"]
    )
    assert one_pass.to_bytes() == cms.to_bytes()


@pytest.mark.parametrize("seed", range(4))
def test_exact_top_k_is_exact_and_split_independent_beyond_capacity(seed: int) -> None:
    # 1,000 distinct items (capacity 64): the heavy ones are light in every part.
    rng = np.random.default_rng(seed)
    light = [f"light-{i}" for i in range(1000)]
    heavy = [f"heavy-{i}" for i in range(3)]
    stream = light * 3 + heavy * 8
    order = rng.permutation(len(stream))
    stream = [stream[i] for i in order]
    params = {"width": 4096, "depth": 5, "top_k": 3}
    parts = [stream[i::8] for i in range(8)]
    partials = [CountMinSketch(**params).update(p) for p in parts]
    assert all(p.is_exact for p in partials)
    merged = CountMinSketch(**params)
    for p in partials[::-1]:
        merged.merge(p)
    whole = CountMinSketch(**params).update(stream)
    assert merged.is_exact and merged.to_bytes() == whole.to_bytes()
    assert union(*partials).to_bytes() == whole.to_bytes()
    assert {item for item, _ in whole.top(3)} == set(heavy)
    assert all(est >= 8 for _, est in whole.top(3))


@pytest.mark.parametrize("seed", range(6))
def test_mixed_exact_and_counter_merges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = {"width": 64, "depth": 3, "top_k": 16}  # exact limit 24, capacity 64
    values = [f"w{i}" for i in rng.integers(0, 60, size=int(rng.integers(10, 300))).tolist()]
    whole = CountMinSketch(**params).update(values)
    cuts = sorted(rng.integers(0, len(values), size=4).tolist())
    bounds = [0, *cuts, len(values)]
    parts = [
        CountMinSketch(**params).update(values[a:b])
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    merged = CountMinSketch(**params)
    for i in rng.permutation(len(parts)).tolist():
        merged.merge(parts[i])
    assert merged.to_bytes() == whole.to_bytes()
    assert union(*parts).to_bytes() == whole.to_bytes()
    assert merged.top(16) == whole.top(16)


def test_union_of_many_exact_sketches_becomes_counters_once() -> None:
    params = {"width": 256, "depth": 4, "top_k": 5}  # exact limit 128
    parts = [CountMinSketch(**params).update([f"g{i}-{j}" for j in range(30)]) for i in range(20)]
    parts[3].update(["hot"] * 50)
    u = union(*parts)
    assert not u.is_exact and u.total == 20 * 30 + 50
    sequential = parts[0].copy()
    for p in parts[1:]:
        sequential.merge(p)
    assert u.counters.tolist() == sequential.counters.tolist()
    assert u.top(1) == [("hot", u.estimate("hot"))]
    assert u.estimate("hot") >= 50


def test_from_groups_mixes_exact_and_counter_groups() -> None:
    rng = np.random.default_rng(8)
    sizes = [0, 3, 40, 129, 500]  # exact limit of 256 x 4 with top-k is 128
    values = np.concatenate([rng.integers(0, 10**6, size=s) for s in sizes]).astype(str)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(values.size)
    counts_per_row = rng.integers(1, 3, size=values.size)
    objs = np.repeat(values[order], counts_per_row[order]).astype(object)
    objs_codes = np.repeat(codes[order], counts_per_row[order])
    groups = CountMinSketch.from_groups(objs_codes, objs, len(sizes), width=256, depth=4, top_k=5)
    for i, group in enumerate(groups):
        expected = CountMinSketch(width=256, depth=4, top_k=5).update(objs[objs_codes == i])
        assert group.to_bytes() == expected.to_bytes()
    assert [g.is_exact for g in groups] == [True, True, True, False, False]


def test_hashes_alone_only_without_top_k() -> None:
    plain = CountMinSketch(width=64, depth=2)
    plain._update_hashes(hash64(["a", "b"]))
    assert plain == CountMinSketch(width=64, depth=2).update(["a", "b"])
    with pytest.raises(InvalidParameterError):
        CountMinSketch(width=64, depth=2, top_k=1)._update_hashes(hash64(["a"]))


@pytest.mark.parametrize("seed", range(3))
def test_long_batches_step_through_exact_mode(seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = {"width": 256, "depth": 4, "top_k": 40}  # exact limit 128, capacity 160
    few = np.array([f"f{i}" for i in rng.integers(0, 30, size=50_000)], dtype=object)
    one = CountMinSketch(**params).update(few)  # several exact-mode steps
    assert one.is_exact and one.total == few.size
    split = CountMinSketch(**params)
    for part in np.array_split(few, 7):
        split.update(part)
    assert split.to_bytes() == one.to_bytes()
    # 150 distinct items: past the exact limit mid-batch, within the candidate capacity
    many = np.concatenate([few, np.array([f"m{i}" for i in range(120)] * 3, dtype=object)])
    many = many[rng.permutation(many.size)]
    whole = CountMinSketch(**params).update(many)
    assert not whole.is_exact
    cuts = np.sort(rng.integers(0, many.size, size=5))
    parts = CountMinSketch(**params)
    for part in np.split(many, cuts):
        parts.update(part)
    assert parts.to_bytes() == whole.to_bytes()
    assert len(whole.top(150)) == 150
