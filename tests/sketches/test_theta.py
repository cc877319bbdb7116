"""ThetaSketch: byte-for-byte DataSketches compatibility, set algebra and accuracy.

The ``datasketches`` package (the C++ library's Python binding) is the oracle: our bytes
for a set of values must equal its union result of an update sketch of them, and its
bytes (ordered or not, every mode, serial versions 3 and 4) must read back with its
estimates. Serial version 4 bytes written by Spark (Java) are fixed below.
"""

from __future__ import annotations

import struct

import datasketches as ds
import numpy as np
import pytest

from sketches.errors import IncompatibleSketchError, InvalidParameterError, SketchFormatError
from sketches.murmur3 import seed_hash
from sketches.theta import (
    MAX_THETA,
    ThetaSketch,
    binomial_bounds,
    theta_difference,
    theta_intersection,
    theta_union,
)

# Spark 4.2.0 (Java DataSketches), `SELECT hex(<expr>) FROM <from>`:
SPARK = {
    # theta_sketch_agg(v) FROM VALUES (1) AS t(v): serial version 3, single-item flag 0x20
    "one": ([1], 12, "01030300003ACC9315F97DCBBD86A105"),
    # theta_sketch_agg(v) FROM VALUES ('a') AS t(v)
    "one_str": (["a"], 12, "01030300003ACC9317C11D528507017B"),
    # theta_sketch_agg(v) FROM VALUES (CAST(NULL AS BIGINT)) AS t(v): seed hash 0 when empty
    "empty": ([None], 12, "01030300001E0000"),
    # theta_sketch_agg(v) FROM VALUES (1),(2),(3) AS t(v): serial version 4, exact
    "three": ([1, 2, 3], 12, "0104033E011ACC930316861AF72DF7E4558FBE9C3477E9EAEFB2E5966BADAA3DC0"),
    # theta_sketch_agg(id) FROM range(1, 11)
    "ten": (list(range(1, 11)), 12,
            "0104033E011ACC930A16861AF72DF7E45429C550C15B0E52B006633BAC22AB4A4865304281678B9510"
            "3FE12D7D486EFC9D0DF3AA08965060E48705FE0D0E55FB397A41B6826FA07D69F2FCA362D0981723"
            "5B18C9738F80"),
    # theta_sketch_agg(id, 4) FROM range(1, 101): serial version 4, estimating, lg_k 4
    # (theta_union(theta_sketch_agg(id, 4), theta_sketch_agg(id, 4)) gives the same bytes)
    "hundred_lg4": (list(range(1, 101)), 4,
                    "0204033A011ACC936A918B0B0BE72C0F1057E1C72DF6C88282F9CF6D19E16F188993241A"
                    "609050D48321D8AC4AD90E37B3CDC48CBE847CF84CD7D310B26B31AD78C3B4A027F8C606"
                    "FBD5E208E2A84314369CDF9230678CF87F915EBA7A2652B374198CEEB08AAD29BC2F2322"
                    "B464D242759FD19422FAF31A4354A9E08545494BE26BED49D1"),
}


def ds_sketches(values: list, lg_k: int, seed: int = 9001):
    """(update sketch, union result) of datasketches for ``values``."""
    update = ds.update_theta_sketch(lg_k, seed=seed)
    for v in values:
        update.update(v)
    union = ds.theta_union(lg_k, seed=seed)
    union.update(update)
    return update, union.get_result()


def random_values(rng: np.random.Generator, kind: str, n: int) -> list:
    if kind == "int":
        return rng.integers(-(2**62), 2**62, n).tolist() + rng.integers(0, 50, n // 4).tolist()
    if kind == "float":
        return (rng.standard_normal(n) * 1e3).round(1).tolist()
    alphabet = list("abcxyz") + ["é", "日", "😀"]
    return ["".join(rng.choice(alphabet, int(rng.integers(0, 12)))) for _ in range(n)]


# ---------------------------------------------------------------- bytes = datasketches


@pytest.mark.parametrize("kind", ["int", "float", "str"])
@pytest.mark.parametrize("case", range(12))
def test_bytes_equal_datasketches_union_result(kind: str, case: int) -> None:
    rng = np.random.default_rng(1000 * case + len(kind))
    lg_k = int(rng.integers(5, 9))
    n = [0, 1, 2, 30, 1 << lg_k, (1 << lg_k) + 1][case] if case < 6 else int(rng.integers(0, 3000))
    values = random_values(rng, kind, n)
    _, result = ds_sketches(values, lg_k)
    ours = ThetaSketch(lg_k).update(values)
    assert ours.to_bytes() == result.serialize()
    assert ours.to_bytes(compressed=True) == result.serialize(True)
    assert ours.estimate() == result.get_estimate()
    assert ThetaSketch.from_bytes(ours.to_bytes(), lg_k=lg_k) == ours
    assert ThetaSketch.from_bytes(ours.to_bytes(compressed=True), lg_k=lg_k) == ours


def test_other_seed_matches_datasketches() -> None:
    values = list(range(500))
    _, result = ds_sketches(values, 6, seed=7)
    ours = ThetaSketch(6, seed=7).update(values)
    assert ours.to_bytes() == result.serialize()
    with pytest.raises(SketchFormatError, match=f"0x{seed_hash(7):04x}.*0x93cc.*9001"):
        ThetaSketch.from_bytes(ours.to_bytes())


def test_nulls_and_empty_strings_are_not_items() -> None:
    sk = ThetaSketch(5).update(["a", None, "", "a", np.nan])
    assert sk.to_bytes() == ds_sketches(["a"], 5)[1].serialize()


# ---------------------------------------------------------------- reading their bytes


@pytest.mark.parametrize("n", [0, 1, 2, 40, 100, 500, 5000])
@pytest.mark.parametrize("ordered", [True, False])
def test_reads_datasketches_update_sketch_bytes(n: int, ordered: bool) -> None:
    update, _ = ds_sketches(list(range(n)), 6)
    compact = update.compact(ordered)
    blobs = [compact.serialize()] + ([compact.serialize(True)] if ordered else [])
    for blob in blobs:
        ours = ThetaSketch.from_bytes(blob, lg_k=6)
        assert ours.num_retained == compact.num_retained  # may be more than k
        assert ours.estimate() == compact.get_estimate()
        assert ours.theta64 == compact.theta64
        for num_std in (1, 2, 3):
            assert ours.lower_bound(num_std) == pytest.approx(
                compact.get_lower_bound(num_std), rel=0.01, abs=1)
            assert ours.upper_bound(num_std) == pytest.approx(
                compact.get_upper_bound(num_std), rel=0.01, abs=1)
        # the next merge trims to k: the union result's bytes
        expected = ds_sketches(list(range(n)), 6)[1].serialize()
        assert ours.merge(ThetaSketch(6)).to_bytes() == expected


@pytest.mark.parametrize("name", sorted(SPARK))
def test_spark_bytes(name: str) -> None:
    values, lg_k, hex_bytes = SPARK[name]
    blob = bytes.fromhex(hex_bytes)
    ours = ThetaSketch(lg_k).update(values)
    read = ThetaSketch.from_bytes(blob, lg_k=lg_k)
    assert read == ours
    assert read.estimate() == ds.compact_theta_sketch.deserialize(blob).get_estimate()
    if blob[1] == 4:
        assert ours.to_bytes(compressed=True) == blob
    else:  # flags 0x3A (Java single item) or a zero seed hash (Java empty): ours are C++'s
        assert ours.to_bytes() == blob[:5] + bytes([blob[5] & 0x1F]) + ours.to_bytes()[6:]


def test_serial_versions_1_and_2() -> None:
    sk = ThetaSketch(5).update(np.arange(200))
    theta, entries = sk.theta64, sk.hashes.astype("<u8").tobytes()
    count = struct.pack("<IIQ", sk.num_retained, 0, theta)
    v1 = bytes([3, 1, 3, 0, 0, 0, 0, 0]) + count + entries
    v2 = struct.pack("<BBBHBH", 3, 2, 3, 0, 0, seed_hash()) + count + entries
    exact = ThetaSketch(5).update([5, 6, 7])
    v2_exact = struct.pack("<BBBHBHII", 2, 2, 3, 0, 0, seed_hash(), 3, 0) + exact.hashes.tobytes()
    for blob, expected in ((v1, sk), (v2, sk), (v2_exact, exact)):
        assert ThetaSketch.from_bytes(blob, lg_k=5) == expected
        assert ds.compact_theta_sketch.deserialize(blob).get_estimate() == expected.estimate()
    v2_empty = struct.pack("<BBBHBH", 1, 2, 3, 0, 0, seed_hash())
    assert ThetaSketch.from_bytes(v2_empty).is_empty()


# ---------------------------------------------------------------- format errors


def test_format_errors() -> None:
    good = ThetaSketch(5).update(np.arange(100)).to_bytes()
    compressed = ThetaSketch(5).update(np.arange(100)).to_bytes(compressed=True)
    for blob in (good, compressed, ThetaSketch().update([1]).to_bytes()):
        for cut in range(len(blob)):
            with pytest.raises(SketchFormatError):
                ThetaSketch.from_bytes(blob[:cut], lg_k=5)
        with pytest.raises(SketchFormatError, match="bytes"):
            ThetaSketch.from_bytes(blob + b"\0" * 8, lg_k=5)

    def patched(blob: bytes, offset: int, value: bytes) -> bytes:
        return blob[:offset] + value + blob[offset + len(value):]

    entries = np.frombuffer(good, "<u8")[3:]
    cases = {
        "family id 2": patched(good, 2, b"\x02"),
        "serial version 5": patched(good, 1, b"\x05"),
        "serial version 0": patched(good, 1, b"\x00"),
        "preLongs 4": patched(good, 0, b"\x04"),
        "flags 0x1b": patched(good, 5, b"\x1b"),  # big-endian
        "flags 0x12": patched(good, 5, b"\x12"),  # not compact
        "seed hash 0x1234": patched(good, 6, b"\x34\x12"),
        "theta 0 ": patched(good, 16, b"\0" * 8),
        "entries": patched(good, 24, entries[1].tobytes()),  # duplicate
        "entries ": patched(good, 24, entries[5].tobytes()),  # unordered
        "entries  ": patched(good, 16, entries[-1].tobytes()),  # theta at an entry
        "v4 header": patched(compressed, 3, b"\x00"),
        "preLongs 3, flags 0x3a": patched(good, 5, b"\x3a"),  # single-item flag
    }
    for what, blob in cases.items():
        with pytest.raises(SketchFormatError, match=what.strip()):
            ThetaSketch.from_bytes(blob, lg_k=5)
    with pytest.raises(SketchFormatError, match="expected bytes"):
        ThetaSketch.from_bytes("01030300001ecc93")  # type: ignore[arg-type]
    unordered = patched(good, 5, b"\x0a")  # no ordered flag: sorted on read
    assert ThetaSketch.from_bytes(unordered, lg_k=5).to_bytes() == good


# ---------------------------------------------------------------- order independence


@pytest.mark.parametrize("seed", range(8))
def test_split_and_merge_order_do_not_matter(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 3000, 6000)
    whole = ThetaSketch(7).update(values).to_bytes()
    part = rng.integers(0, 5, values.size)
    parts = [ThetaSketch(7).update(values[part == i]) for i in range(5)]
    order = rng.permutation(5)
    merged = ThetaSketch(7)
    for i in order:
        merged.merge(parts[i])
    assert merged.to_bytes() == whole
    assert theta_union(*[parts[i] for i in order]).to_bytes() == whole
    chunked = ThetaSketch(7)
    for chunk in np.array_split(values, 7):
        chunked.update(chunk)
    assert chunked.to_bytes() == whole


def test_merging_different_lg_k_takes_the_smaller() -> None:
    values = np.arange(5000)
    small, large = ThetaSketch(5).update(values[:3000]), ThetaSketch(8).update(values[2000:])
    expected = ThetaSketch(5).update(values)
    assert large.copy().merge(small) == expected == small.copy().merge(large)
    assert theta_union(large, small) == expected


def test_empty_sketch_is_the_identity() -> None:
    empty = ThetaSketch(6)
    sk = ThetaSketch(6).update(np.arange(1000))
    assert sk.copy().merge(empty) == sk == empty.copy().merge(sk)
    assert theta_union(empty, sk, empty) == sk
    assert empty.is_empty() and empty.estimate() == 0.0 and empty.upper_bound() == 0.0
    assert theta_intersection(sk, empty).is_empty()
    assert theta_difference(empty, sk).is_empty()
    assert theta_difference(sk, empty) == sk
    assert ThetaSketch.from_bytes(empty.to_bytes(), lg_k=6) == empty


def test_incompatible_and_invalid() -> None:
    with pytest.raises(IncompatibleSketchError):
        ThetaSketch(6).merge(ThetaSketch(6, seed=1))
    with pytest.raises(IncompatibleSketchError):
        theta_intersection(ThetaSketch(6), ThetaSketch(6, seed=1))
    with pytest.raises(IncompatibleSketchError):
        ThetaSketch(6).merge(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        theta_union()
    for lg_k in (3, 27, 4.0):
        with pytest.raises(InvalidParameterError):
            ThetaSketch(lg_k)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        ThetaSketch(6).lower_bound(4)


# ---------------------------------------------------------------- grouped build


def test_from_groups_equals_per_group_update() -> None:
    rng = np.random.default_rng(5)
    n_groups = 9
    values = rng.integers(0, 4000, 20_000).astype(object)
    values[rng.random(values.size) < 0.05] = None
    values[rng.random(values.size) < 0.05] = ""
    values[rng.random(values.size) < 0.2] = "s"
    codes = rng.integers(0, n_groups - 1, values.size)  # the last group stays empty
    codes[codes == 3] = rng.integers(0, 2, int(np.sum(codes == 3)))  # group 3 empty too
    groups = ThetaSketch.from_groups(codes, values, n_groups, lg_k=7)
    for g, sketch in enumerate(groups):
        assert sketch.to_bytes() == ThetaSketch(7).update(values[codes == g]).to_bytes()
    assert groups[3].is_empty() and groups[-1].is_empty()
    assert any(g.is_estimation_mode() for g in groups)
    assert [g.is_empty() for g in ThetaSketch.from_groups([], [], 2)] == [True, True]
    assert ThetaSketch.from_groups([1], [None], 2)[1].is_empty()


# ---------------------------------------------------------------- set operations


@pytest.mark.parametrize("seed", range(10))
def test_set_operations_equal_datasketches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lg_a, lg_b = rng.integers(5, 9, 2)
    a = ThetaSketch(int(lg_a)).update(rng.integers(0, 4000, int(rng.integers(0, 3000))))
    b = ThetaSketch(int(lg_b)).update(rng.integers(2000, 6000, int(rng.integers(0, 3000))))
    da, db = (ds.compact_theta_sketch.deserialize(s.to_bytes()) for s in (a, b))
    inter = ds.theta_intersection()
    inter.update(da)
    inter.update(db)
    assert theta_intersection(a, b).to_bytes() == inter.get_result().serialize()
    assert theta_intersection(a, b).estimate() == inter.get_result().get_estimate()
    diff = ds.theta_a_not_b().compute(da, db)
    assert theta_difference(a, b).to_bytes() == diff.serialize()
    assert theta_difference(a, b).estimate() == diff.get_estimate()


def test_set_operations_within_bounds() -> None:
    hits = {"inter": 0, "diff": 0}
    runs = 100
    for seed in range(runs):
        offset = seed * 10**6
        a = ThetaSketch(8).update(np.arange(offset, offset + 6000))
        b = ThetaSketch(8).update(np.arange(offset + 3000, offset + 9000))
        for name, result in (("inter", theta_intersection(a, b)), ("diff", theta_difference(a, b))):
            hits[name] += result.lower_bound(2) <= 3000 <= result.upper_bound(2)
    assert min(hits.values()) >= 0.9 * runs, hits
    exact = theta_intersection(ThetaSketch().update([1, 2, 3]), ThetaSketch().update([2, 3, 4]),
                               ThetaSketch().update([3, 4]))
    assert exact.estimate() == 1.0 and not exact.is_estimation_mode()


# ---------------------------------------------------------------- accuracy


def test_true_count_inside_the_bounds() -> None:
    runs, inside2, inside3, errors = 200, 0, 0, []
    for seed in range(runs):
        values = np.random.default_rng(seed).integers(0, 2**62, 5000)
        sk = ThetaSketch(6).update(values)
        inside2 += sk.lower_bound(2) <= 5000 <= sk.upper_bound(2)
        inside3 += sk.lower_bound(3) <= 5000 <= sk.upper_bound(3)
        errors.append(sk.estimate() / 5000 - 1)
    assert inside2 >= 0.9 * runs and inside3 >= 0.97 * runs, (inside2, inside3)
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    assert 0.7 / 8 < rmse < 1.3 / 8  # about 1 / sqrt(k)
    assert abs(float(np.mean(errors))) < 4 * rmse / np.sqrt(runs)
    assert sk.relative_error() == pytest.approx(1 / 8, rel=0.1)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 50, 120, 121, 300, 4096])
@pytest.mark.parametrize("theta", [0.9, 0.3, 0.05, 1e-3, 1e-9])
def test_bounds_close_to_datasketches(count: int, theta: float) -> None:
    theta64 = int(theta * MAX_THETA)
    entries = np.arange(1, count + 1, dtype="<u8") * np.uint64(theta64 // (count + 1))
    blob = struct.pack("<BBBHBHIIQ", 3, 3, 3, 0, 0x1A, seed_hash(), count, 0, theta64)
    blob += entries.tobytes()
    theirs = ds.compact_theta_sketch.deserialize(blob)
    ours = ThetaSketch.from_bytes(blob)
    for num_std in (1, 2, 3):
        low, high = binomial_bounds(count, ours.theta, num_std)
        assert (low, high) == (ours.lower_bound(num_std), ours.upper_bound(num_std))
        rel = 1e-9 if count > 120 else 0.01  # below 121 entries ours are exact binomial tails
        assert low == pytest.approx(theirs.get_lower_bound(num_std), rel=rel, abs=1)
        assert high == pytest.approx(theirs.get_upper_bound(num_std), rel=rel, abs=1)
        assert low <= ours.estimate() <= high


def test_large_compressed_sketch_round_trips_through_datasketches() -> None:
    sk = ThetaSketch(17).update(np.arange(300_000))  # > 65536 entries: several pack chunks
    blob = sk.to_bytes(compressed=True)
    theirs = ds.compact_theta_sketch.deserialize(blob)
    assert theirs.serialize() == sk.to_bytes() and theirs.serialize(True) == blob
    assert ThetaSketch.from_bytes(blob, lg_k=17) == sk


def test_from_groups_sorting_in_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    import sketches.theta as theta_module

    monkeypatch.setattr(theta_module, "_SORT_ROWS", 500)  # sort after every chunk
    rng = np.random.default_rng(11)
    parts = [rng.integers(0, 5000, 2000) for _ in range(10)]
    values = np.concatenate(parts)
    codes = rng.integers(0, 6, values.size)
    groups = ThetaSketch.from_groups(codes, pa.chunked_array(parts), 6, lg_k=5)
    assert groups == [ThetaSketch(5).update(values[codes == g]) for g in range(6)]
