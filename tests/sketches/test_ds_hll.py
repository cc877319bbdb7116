"""DataSketches-format HLL: MurmurHash3 against an independent implementation (mmh3),
images against Apache DataSketches' own (the ``datasketches`` package), the shared laws."""

from __future__ import annotations

import struct

import mmh3
import numpy as np
import pyarrow as pa
import pytest

import sketches
from sketches.ds_hll import DataSketchesHLL, coupon_limit, coupons_of
from sketches.errors import IncompatibleSketchError, SketchFormatError
from sketches.murmur3 import murmur3_128, seed_hash

ds = pytest.importorskip("datasketches", reason="datasketches is a dev dependency (the oracle)")


def _mmh3(data: bytes, seed: int = 9001) -> tuple[int, int]:
    return mmh3.hash64(data, seed, signed=False)


def test_murmur3_strings_of_every_length_match_mmh3():
    rng = np.random.default_rng(1)
    alphabet = list("abcxyz0é日")
    texts = ["".join(rng.choice(alphabet, size=n)) for n in range(1, 80) for _ in range(5)]
    h1, h2 = murmur3_128(texts)
    assert [(int(a), int(b)) for a, b in zip(h1, h2, strict=True)] == [
        _mmh3(t.encode()) for t in texts]


def test_murmur3_of_only_long_strings_and_of_many_matches_mmh3():
    rng = np.random.default_rng(5)
    long_ones = ["x" * int(n) + str(i) for i, n in enumerate(rng.integers(16, 100, 300))]
    many = [f"user-{i}" for i in rng.integers(0, 10**9, 70_000)]  # more than one run
    for texts in (long_ones, many, pa.array(many)):
        h1, h2 = murmur3_128(texts)
        listed = texts.to_pylist() if isinstance(texts, pa.Array) else texts
        assert [(int(a), int(b)) for a, b in zip(h1, h2, strict=True)] == [
            _mmh3(t.encode()) for t in listed]


def test_murmur3_longs_and_doubles_are_their_8_bytes():
    rng = np.random.default_rng(2)
    ints = rng.integers(-2**63, 2**63 - 1, 2000, dtype=np.int64)
    h1, h2 = murmur3_128(ints)
    assert [(int(a), int(b)) for a, b in zip(h1, h2, strict=True)] == [
        _mmh3(struct.pack("<q", int(v))) for v in ints]
    floats = np.array([0.5, -0.0, 0.0, 1e300, -3.25, float("inf")])
    h1, _ = murmur3_128(floats)
    want = [_mmh3(struct.pack("<d", 0.0 if v == 0 else v))[0] for v in floats]
    assert h1.tolist() == want


def test_murmur3_skips_nulls_and_empty_strings_and_other_seeds():
    assert murmur3_128(pa.array(["a", None, "", "b"]))[0].size == 2
    assert murmur3_128([])[0].size == 0
    assert int(murmur3_128([7], seed=5)[0][0]) == _mmh3(struct.pack("<q", 7), 5)[0]
    # DataSketches stores this seed hash in every Theta image of seed 9001
    theta = ds.update_theta_sketch(12)
    theta.update(1)
    assert struct.unpack_from("<H", theta.compact().serialize(), 6)[0] == seed_hash()


@pytest.mark.parametrize("values", [
    list(range(-50, 50)), [f"user-{i}" for i in range(300)], [0.5 * i for i in range(40)]])
def test_coupons_are_datasketches_coupons(values):
    ours = DataSketchesHLL(21).update(values)  # precision 21: coupons kept up to 196,608
    theirs = ds.hll_sketch(21, ds.HLL_8)
    for v in values:
        theirs.update(v)
    back = DataSketchesHLL.from_bytes(theirs.serialize_updatable())
    assert np.array_equal(back.coupons, ours.coupons)


@pytest.mark.parametrize("precision", [4, 7, 8, 11, 12, 14])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 24, 25, 384, 385, 3000])
def test_their_images_of_every_mode_and_type_read_as_ours(precision, n):
    values = np.random.default_rng(precision * 1000 + n).integers(-2**62, 2**62, n)
    ours = DataSketchesHLL(precision).update(values)
    for tgt in (ds.HLL_4, ds.HLL_6, ds.HLL_8):
        theirs = ds.hll_sketch(precision, tgt)
        for v in values.tolist():
            theirs.update(v)
        for image in (theirs.serialize_compact(), theirs.serialize_updatable()):
            back = DataSketchesHLL.from_bytes(image)
            assert np.array_equal(back.registers(), ours.registers())
            # the same mode as DataSketches: coupons while it keeps coupons
            assert (back.coupons is None) == (image[7] & 3 == 2)
            assert (ours.coupons is None) == (image[7] & 3 == 2)


@pytest.mark.parametrize("precision,n", [(5, 300), (10, 5000), (12, 100_000), (14, 50_000)])
def test_dense_bytes_equal_a_datasketches_union_result(precision, n):
    values = np.random.default_rng(n).integers(0, 2**40, n)
    a, b = ds.hll_sketch(precision, ds.HLL_8), ds.hll_sketch(precision, ds.HLL_8)
    for v in values[: n // 2].tolist():
        a.update(v)
    for v in values[n // 2:].tolist():
        b.update(v)
    union = ds.hll_union(precision)
    union.update(a)
    union.update(b)
    expected = union.get_result(ds.HLL_8).serialize_compact()
    assert DataSketchesHLL(precision).update(values).to_bytes() == expected


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_list_bytes_equal_datasketches_given_coupon_order(n):
    values = np.arange(100, 100 + n)
    order = np.argsort(coupons_of(*murmur3_128(values)), kind="stable")
    theirs = ds.hll_sketch(12, ds.HLL_8)
    for v in values[order].tolist():
        theirs.update(v)
    assert DataSketchesHLL(12).update(values).to_bytes() == theirs.serialize_compact()


@pytest.mark.parametrize("n", [1, 5, 100, 384, 385, 5000])
def test_datasketches_reads_our_bytes(n):
    values = [f"v{i}" for i in range(n)]
    ours = DataSketchesHLL(12).update(values)
    theirs = ds.hll_sketch.deserialize(ours.to_bytes())
    if n <= coupon_limit(12):
        assert theirs.get_estimate() == pytest.approx(n, rel=1e-6)
    else:
        assert abs(theirs.get_estimate() / n - 1) < 4 * ours.relative_error()
    assert theirs.lg_config_k == 12


def test_merge_order_and_split_do_not_change_bytes():
    rng = np.random.default_rng(7)
    for n in (5, 50, 300, 20_000):
        values = rng.integers(0, 10**9, n)
        whole = DataSketchesHLL(10).update(values)
        cuts = np.sort(rng.integers(0, n, 4))
        parts = [DataSketchesHLL(10).update(p) for p in np.split(values, cuts)]
        rng.shuffle(parts)
        assert sketches.union(*parts).to_bytes() == whole.to_bytes()
        assert DataSketchesHLL(10).merge(whole) == whole  # the empty sketch is the identity


def test_from_groups_equals_one_sketch_per_group():
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 5, 4000)
    values = rng.integers(0, 3000 * (codes + 1))
    values[::3] = 0
    built = DataSketchesHLL.from_groups(codes, values, 6, precision=9)
    for g in range(6):
        assert built[g] == DataSketchesHLL(9).update(values[codes == g])
    assert built[5].is_empty()


def test_estimates_within_bounds_over_many_seeds():
    inside, runs, n = 0, 200, 20_000
    for seed in range(runs):
        values = np.random.default_rng(seed).integers(0, 2**62, n)
        est, low, high = DataSketchesHLL(10).update(values).estimate_with_bounds(2)
        inside += low <= n <= high
    assert inside >= 0.9 * runs  # 2 sigma: about 95 %


def test_from_bytes_refuses_bad_images():
    good = DataSketchesHLL(12).update(range(1000)).to_bytes()
    with pytest.raises(SketchFormatError, match="truncated"):
        DataSketchesHLL.from_bytes(good[:100])
    with pytest.raises(SketchFormatError, match="family"):
        DataSketchesHLL.from_bytes(good[:2] + b"\x03" + good[3:])
    with pytest.raises(SketchFormatError, match="lgK"):
        DataSketchesHLL.from_bytes(good[:3] + b"\x1f" + good[4:])
    with pytest.raises(SketchFormatError, match="preamble"):
        DataSketchesHLL.from_bytes(b"\x03" + good[1:])


def test_precisions_must_match_to_merge():
    with pytest.raises(IncompatibleSketchError):
        DataSketchesHLL(10).merge(DataSketchesHLL(12))


def test_package_from_bytes_dispatches_on_datasketches_images():
    s = DataSketchesHLL(11).update(["a", "b"])
    assert sketches.from_bytes(s.to_bytes()) == s
    theirs = ds.hll_sketch(11)
    theirs.update("a")
    theirs.update("b")
    assert sketches.from_bytes(theirs.serialize_compact()) == s


#: Spark 4.2 SQL ``SELECT hll_sketch_agg(v)`` over one row: 'a' (a string) and 1 (an int,
#: hashed as a long), as Spark wrote them (updatable list images, HLL_8 target, lgK 12)
SPARK_IMAGES = {
    "a": bytes.fromhex("0201070c030001082f823b04") + bytes(28),
    1: bytes.fromhex("0201070c030001082bf2fb06") + bytes(28),
}


@pytest.mark.parametrize("value", list(SPARK_IMAGES))
def test_images_spark_wrote_read_as_ours(value):
    spark = DataSketchesHLL.from_bytes(SPARK_IMAGES[value])
    assert spark == DataSketchesHLL(12).update([value])
    assert spark.estimate() == pytest.approx(1.0)
    # and our image of it is the compact form of the same list
    assert DataSketchesHLL(12).update([value]).to_bytes() == \
        SPARK_IMAGES[value][:5] + b"\x08\x01\x08" + SPARK_IMAGES[value][8:12]
