"""QuantileSketch: accuracy against exact quantiles over many seeds, the shared laws
(merge monoid, bytes identical under any split and order, round trip) and hostile
bytes, for both bucket mappings where they differ. The bucket layouts themselves are
checked in ``test_logbuckets.py`` and ``test_cells.py``.

The exact ``q``-quantile of ``n`` values is the value at 0-based rank
``floor(q * (n - 1))`` of ``np.sort(values)`` (NumPy's ``method="lower"``). Expected
quantiles and ranks come from NumPy, never from the sketch; only the collapse test takes
the bucket of each value from the key function, which ``test_logbuckets.py`` checks.
"""

from __future__ import annotations

import functools
import math
import struct
import tracemalloc
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sketch_helpers import KINDS, KindSpec, as_objects, reseal

import sketches
from sketches import (
    IncompatibleSketchError,
    InvalidParameterError,
    QuantileSketch,
    SketchFormatError,
    UnsupportedInputError,
    union,
)
from sketches._cells import cell_keys, get_cells
from sketches._format import FORMAT_VERSION, KIND_QUANTILES, MAGIC
from sketches._logbuckets import combined_keys, get_layout

LAWS = settings(max_examples=60, deadline=None)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# small max_buckets, so that the laws are also checked with collapsed stores
SPEC = KindSpec(
    "quantiles",
    QuantileSketch,
    {"relative_accuracy": 0.05, "max_buckets": 6},
    [{"relative_accuracy": 0.04}, {"max_buckets": 7}],
)
QS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0]
MAPPINGS = ["log", "cells"]
TINY = 2.2250738585072014e-308  # the smallest normal float


def exact_quantiles(values: np.ndarray, qs: list[float]) -> np.ndarray:
    """The lower (nearest-rank) quantiles: ``sorted[floor(q (n - 1))]``."""
    ordered = np.sort(values)
    ranks = np.floor(np.asarray(qs) * (ordered.size - 1)).astype(np.int64)
    return ordered[ranks]


# ---------------------------------------------------------------- accuracy

DISTRIBUTIONS = {
    "lognormal": lambda rng, n: rng.lognormal(0.0, 2.5, n),
    "uniform": lambda rng, n: rng.uniform(-1e3, 1e6, n),
    "pareto": lambda rng, n: rng.pareto(1.2, n) * 1e-3,
    "constant": lambda rng, n: np.full(n, -42.125),
    "mixed_signs": lambda rng, n: rng.normal(0.0, 1.0, n) * 10.0 ** rng.integers(-5, 6, n),
    "with_zeros": lambda rng, n: np.where(rng.random(n) < 0.3, 0.0, rng.standard_cauchy(n)),
    "integers": lambda rng, n: rng.integers(-(10**12), 10**12, n),
    # both signs, from the smallest subnormal to above the smallest normal (62 octaves)
    "subnormals": lambda rng, n: rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-1074, -1012, n),
}


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("accuracy", [0.001, 0.01, 0.05])
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_quantile_is_within_the_relative_error(
    name: str, accuracy: float, mapping: str
) -> None:
    for seed in range(40):
        rng = np.random.default_rng([seed, int(accuracy * 1e4)])
        n = int(rng.choice([1, 2, 3, 10, 1000, 20_000]))
        values = DISTRIBUTIONS[name](rng, n)
        sketch = QuantileSketch(accuracy, mapping=mapping).update(values)
        exact = exact_quantiles(values.astype(np.float64), QS)
        estimate = sketch.quantiles(QS)
        assert sketch.relative_error() == accuracy and sketch.bucket_accuracy <= accuracy
        # a subnormal estimate is rounded to the subnormal grid: half its spacing more
        bound = accuracy * np.abs(exact) + np.where(np.abs(exact) < TINY, 2.0**-1075, 0.0)
        assert np.all(np.abs(estimate - exact) <= bound), (seed, n)
        for q, x in zip(QS, exact.tolist(), strict=True):
            assert sketch.lower_bound(q) <= x <= sketch.upper_bound(q), (seed, q)
        assert sketch.quantile(0.5) == estimate[QS.index(0.5)]
        assert sketch.count == n and sketch.skipped == 0
        assert sketch.collapsed_count == 0  # 2**64 range by default: nothing collapsed here


def test_exact_quantile_definition_is_numpys_lower_method() -> None:
    values = np.random.default_rng(1).lognormal(size=1001)  # q (n - 1) never near .5
    qs = [0.0, 0.123, 0.5, 0.777, 1.0]
    assert np.array_equal(exact_quantiles(values, qs), np.quantile(values, qs, method="lower"))


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("name", ["lognormal", "mixed_signs", "with_zeros"])
def test_rank_lies_between_the_exact_ranks_of_the_shrunk_and_stretched_value(
    name: str, mapping: str
) -> None:
    a = 0.01
    for seed in range(10):
        rng = np.random.default_rng(seed)
        values = DISTRIBUTIONS[name](rng, 5000)
        sketch = QuantileSketch(a, mapping=mapping).update(values)
        ordered = np.sort(values)
        for x in np.concatenate([rng.choice(values, 20), [0.0, -1.0, 1.0]]).tolist():
            lo, hi = sorted([x / (1 + a), x / (1 - a)])
            exact_lo = np.searchsorted(ordered, lo, side="right") / values.size
            exact_hi = np.searchsorted(ordered, hi, side="right") / values.size
            assert exact_lo <= sketch.rank(x) <= exact_hi, (seed, x)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_nan_infinities_and_nulls_are_skipped_and_counted(mapping: str) -> None:
    values = [1.0, None, float("nan"), float("inf"), -float("inf"), 2.0, 0.0, -0.0]
    sketch = QuantileSketch(mapping=mapping).update(values)
    assert (sketch.count, sketch.skipped, sketch.zero_count) == (4, 4, 2)
    assert sketch == QuantileSketch(mapping=mapping).update(pa.array(values, pa.float64()))
    floats = np.array([np.nan if v is None else v for v in values])  # NaN bits, no nulls
    assert QuantileSketch(mapping=mapping).update(floats) == sketch
    negative_nan = np.array([-np.nan, 1.0, 2.0, 0.0, -0.0, np.inf, -np.inf, np.nan])
    assert QuantileSketch(mapping=mapping).update(negative_nan) == sketch
    # skipped is state
    assert sketch != QuantileSketch(mapping=mapping).update([1.0, 2.0, 0.0, 0.0])
    only_bad = QuantileSketch(mapping=mapping).update([None, float("nan"), float("inf")])
    assert only_bad.is_empty() and only_bad.skipped == 3
    assert math.isnan(only_bad.quantile(0.5)) and math.isnan(only_bad.rank(1.0))
    assert math.isnan(only_bad.lower_bound(0.5)) and math.isnan(only_bad.upper_bound(0.5))
    assert sketch.quantiles([0.0, 1.0]).tolist() == pytest.approx([0.0, 2.0], rel=0.01)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_extreme_magnitudes_and_subnormals(mapping: str) -> None:
    tiny = [5e-324, 1e-310, 2.2250738585072014e-308, 1e-300]
    huge = [1e300, 1.7976931348623157e308]
    values = np.array(tiny + huge + [-v for v in tiny + huge])
    sketch = QuantileSketch(0.01, mapping=mapping).update(values)
    assert sketch.count == values.size and sketch.num_buckets == values.size
    for q, x in zip(QS, exact_quantiles(values, QS).tolist(), strict=True):
        assert sketch.lower_bound(q) <= x <= sketch.upper_bound(q)
        if abs(x) >= 1e-300:  # the bound holds above the subnormal range
            assert abs(sketch.quantile(q) - x) <= 0.01 * abs(x)
    assert math.isfinite(sketch.quantile(1.0)) and sketch.upper_bound(1.0) == math.inf


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_few_values_take_little_memory_and_few_bytes(mapping: str) -> None:
    values = [3.0, 3.0, 100.0, -7.0]
    sketch = QuantileSketch(mapping=mapping).update(values)
    assert sketch.num_buckets == 3
    # header 13 + parameters 28 (+ mapping 2) + two stores 2 x 12 + CRC 4; then 6 + gaps +
    # counts per store
    empty = 69 if mapping == "log" else 71
    assert len(QuantileSketch(mapping=mapping).to_bytes()) == empty
    assert len(sketch.to_bytes()) == empty + (6 + 1 + 2) + (6 + 0 + 1)
    tracemalloc.start()
    try:
        many = QuantileSketch.from_groups(
            np.repeat(np.arange(1000), 4), np.tile(values, 1000), 1000, mapping=mapping
        )
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(many) == 1000 and held / 1000 < 2048  # bytes per sketch of four values
    wide = QuantileSketch(mapping=mapping).update(np.random.default_rng(0).lognormal(0, 3, 100_000))
    assert wide.num_buckets < 2048 and len(wide.to_bytes()) < 4 * wide.num_buckets


# ---------------------------------------------------------------- collapsing


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_collapsing_keeps_the_highest_buckets_and_valid_bounds(mapping: str) -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.lognormal(0, 4, 3000), -rng.lognormal(0, 4, 1000)])
    sketch = QuantileSketch(0.01, max_buckets=300, mapping=mapping).update(values)
    if mapping == "log":
        layout = get_layout(0.01)

        def key_of(x: np.ndarray) -> np.ndarray:
            return combined_keys(layout, x) - 1023 * layout.per_octave
    else:
        layout = get_cells(0.01).layout

        def key_of(x: np.ndarray) -> np.ndarray:
            return cell_keys(get_cells(0.01), x)

    for sign, part in ((1, values[values > 0]), (-1, -values[values < 0])):
        keys = np.unique(key_of(part))
        dropped = part[key_of(part) < keys[-300]]
        store = sketch._positive if sign > 0 else sketch._negative
        assert store.keys.tolist() == keys[-300:].tolist()
        assert store.collapsed == dropped.size > 0
    assert sketch.collapsed_count == sketch._negative.collapsed + sketch._positive.collapsed
    qs = np.linspace(0, 1, 201).tolist()
    exact = exact_quantiles(values, qs)
    for q, x in zip(qs, exact.tolist(), strict=True):
        assert sketch.lower_bound(q) <= x <= sketch.upper_bound(q), q
    # values in kept buckets (beyond the collapsed ones nearest zero) keep the bound
    pos_edge = layout.bucket_bounds(sketch._positive.keys[:1])[0][0]
    neg_edge = layout.bucket_bounds(sketch._negative.keys[:1])[0][0]
    kept = (exact >= pos_edge) | (exact <= -neg_edge)
    estimate = sketch.quantiles(qs)
    assert 20 < kept.sum() < len(qs)
    assert np.all(np.abs(estimate[kept] - exact[kept]) <= 0.01 * np.abs(exact[kept]))


# ---------------------------------------------------------------- the shared laws

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1.001, 1.02, -3.5, 1e-9, 2.5e6, 5e-324]),
    st.integers(-(10**9), 10**9),
    st.none(),
)
STREAMS = st.lists(FLOATS, max_size=80)


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[list[Any], list[list[Any]]]:
    values = draw(STREAMS)
    order = draw(st.permutations(range(len(values))))
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=4)))
    shuffled = [values[i] for i in order]
    bounds = [0, *cuts, len(values)]
    return values, [shuffled[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@pytest.mark.parametrize("params", [SPEC.params, {}], ids=["collapsing", "default"])
@LAWS
@given(data=split_streams())
def test_any_split_and_order_merges_to_the_one_pass_bytes(
    params: dict[str, Any], data: tuple[list[Any], list[list[Any]]]
) -> None:
    values, parts = data
    whole = QuantileSketch(**params).update(as_objects(values))
    merged = reduce(
        lambda acc, part: acc.merge(QuantileSketch(**params).update(as_objects(part))),
        parts,
        QuantileSketch(**params),
    )
    assert merged.to_bytes() == whole.to_bytes() and merged == whole
    assert union(*[QuantileSketch(**params).update(as_objects(p)) for p in parts]) == whole
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    assert whole.count == len(finite) and whole.skipped == len(values) - len(finite)


@LAWS
@given(a=STREAMS, b=STREAMS, c=STREAMS)
def test_merge_is_associative_and_commutative(a: list[Any], b: list[Any], c: list[Any]) -> None:
    sa, sb, sc = (SPEC.build(as_objects(v)) for v in (a, b, c))
    left = sa.copy().merge(sb).merge(sc)
    right = sa.copy().merge(sb.copy().merge(sc))
    swapped = sc.copy().merge(sb).merge(sa)
    assert left.to_bytes() == right.to_bytes() == swapped.to_bytes()
    assert union(sa, sb, sc) == left


@LAWS
@given(values=STREAMS)
def test_empty_sketch_is_the_identity_and_bytes_round_trip(values: list[Any]) -> None:
    s = SPEC.build(as_objects(values))
    assert SPEC.make().merge(s) == s and s.copy().merge(SPEC.make()) == s
    counted = [v for v in values if v is not None and math.isfinite(v)]
    assert s.is_empty() == (not counted)
    blob = s.to_bytes()
    back = QuantileSketch.from_bytes(blob)
    assert back == s and back.to_bytes() == blob
    assert type(sketches.from_bytes(blob)) is QuantileSketch and sketches.from_bytes(blob) == s
    assert SPEC.build(np.array([np.nan if v is None else float(v) for v in values])) == s


@LAWS
@given(
    values=STREAMS,
    codes=st.lists(st.integers(0, 3), min_size=80, max_size=80),
    n_extra=st.integers(0, 2),
)
def test_from_groups_equals_per_group_updates(
    values: list[Any], codes: list[int], n_extra: int
) -> None:
    codes_arr = np.array(codes[: len(values)], dtype=np.int64)
    objects = as_objects(values)
    groups = QuantileSketch.from_groups(codes_arr, objects, 4 + n_extra, **SPEC.params)
    assert len(groups) == 4 + n_extra
    for i, group in enumerate(groups):
        assert group.to_bytes() == SPEC.build(objects[codes_arr == i]).to_bytes(), i


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_from_groups_many_groups_chunks_and_nulls(mapping: str) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, 30_000) * 10.0 ** rng.integers(-30, 30, 30_000)
    values[::7] = np.nan
    codes = rng.integers(0, 500, values.size)
    chunked = pa.chunked_array([pa.array(values[:10_000]), pa.array(values[10_000:])])
    with_nulls = pa.array(values, from_pandas=True)  # NaN as nulls
    for source in (values, chunked, with_nulls):
        groups = QuantileSketch.from_groups(codes, source, 501, max_buckets=40, mapping=mapping)
        for i in (0, 17, 499, 500):
            expected = QuantileSketch(max_buckets=40, mapping=mapping).update(values[codes == i])
            assert groups[i].to_bytes() == expected.to_bytes(), i
    with pytest.raises(InvalidParameterError):
        QuantileSketch.from_groups(np.array([0, 2]), [1.0, 2.0], 2)
    with pytest.raises(InvalidParameterError):
        QuantileSketch.from_groups(np.array([0]), [1.0, 2.0], 2)
    assert QuantileSketch.from_groups(np.array([], dtype=np.int64), [], 0) == []


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_containers_agree(mapping: str) -> None:
    ints = np.arange(-50, 250)
    expected = QuantileSketch(mapping=mapping).update(ints.astype(np.float64))
    for form in (
        ints,
        ints.tolist(),
        as_objects(ints.tolist()),
        pa.array(ints),
        pa.array(ints.astype(np.int32)),
        pa.array(ints.astype(np.float32)),
        pd.Series(ints),
        pd.Series(ints, dtype="Int64"),
        pa.array(ints).dictionary_encode(),
        pa.chunked_array([pa.array(ints[:100]), pa.array(ints[100:])]),
        pa.array(ints.astype(np.float64)).slice(0),
        pa.concat_arrays([pa.array([9.0]), pa.array(ints.astype(np.float64))]).slice(1),
        ints.astype(np.float64)[::-1],  # strided
        ints.astype(">f8"),  # big-endian
    ):
        assert QuantileSketch(mapping=mapping).update(form) == expected, type(form)
    unsigned = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert QuantileSketch(mapping=mapping).update(unsigned) == QuantileSketch(
        mapping=mapping
    ).update(unsigned.astype(np.float64))
    assert QuantileSketch(mapping=mapping).update(True) == QuantileSketch(mapping=mapping).update(
        1.0
    )
    assert QuantileSketch(mapping=mapping).update(2.5) == QuantileSketch(mapping=mapping).update(
        [2.5]
    )


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_non_numbers_are_refused(mapping: str) -> None:
    for bad in (["a", "b"], [1.0, "x"], [b"x"], np.array(["2024-01-01"], dtype="M8[D]")):
        with pytest.raises(UnsupportedInputError):
            QuantileSketch(mapping=mapping).update(bad)
    with pytest.raises(UnsupportedInputError):
        QuantileSketch(mapping=mapping).update(pa.array([1, 2], pa.timestamp("s")))
    with pytest.raises(TypeError):  # UnsupportedInputError is a TypeError
        QuantileSketch(mapping=mapping).update(pd.Series(pd.to_timedelta([1, 2], unit="s")))


def test_parameters_are_validated_and_mismatches_refuse_to_merge() -> None:
    for bad in (0.0, 1e-5, 0.6, float("nan"), "0.01", True, None):
        with pytest.raises(InvalidParameterError):
            QuantileSketch(bad)  # type: ignore[arg-type]
    for bad_n in (0, 2**24 + 1, 2.0):
        with pytest.raises(InvalidParameterError):
            QuantileSketch(max_buckets=bad_n)  # type: ignore[arg-type]
    for bad_mapping in ("LOG", "cell", "", None, 1, ["log"]):
        with pytest.raises(InvalidParameterError, match="mapping"):
            QuantileSketch(mapping=bad_mapping)  # type: ignore[arg-type]
    cells = QuantileSketch(mapping="cells").update([1.0])
    with pytest.raises(IncompatibleSketchError, match="mapping='cells'"):
        QuantileSketch().update([1.0]).merge(cells)
    for bad_q in (-0.1, 1.1, float("nan")):
        with pytest.raises(InvalidParameterError):
            QuantileSketch().update([1.0]).quantile(bad_q)
    with pytest.raises(InvalidParameterError):
        QuantileSketch().update([1.0]).rank(float("nan"))
    base = SPEC.make()
    for override in SPEC.mismatched:
        other = SPEC.make(**override)
        with pytest.raises(IncompatibleSketchError) as err:
            base.copy().merge(other)
        for params in (base.params(), other.params()):
            inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
            assert f"QuantileSketch({inner})" in str(err.value)
        with pytest.raises(IncompatibleSketchError):
            union(base, other)
    for kind in KINDS:
        with pytest.raises(IncompatibleSketchError, match=kind.cls.__name__):
            base.copy().merge(kind.make())
        with pytest.raises(IncompatibleSketchError):
            kind.make().merge(base)


def test_update_returns_self_copy_is_independent_and_union_leaves_inputs() -> None:
    s = QuantileSketch()
    assert s.update([1.0]) is s
    c = s.copy().update([2.0, 3.0])
    assert s == QuantileSketch().update([1.0]) and c != s
    assert repr(s).startswith(
        "QuantileSketch(relative_accuracy=0.01, max_buckets=2240, mapping='log';"
    )
    with pytest.raises(TypeError):
        hash(s)
    before = s.to_bytes()
    u = union(s, c)
    assert s.to_bytes() == before and u == s.copy().merge(c) and u.count == 4


# ---------------------------------------------------------------- hostile bytes


def refuses(blob: Any) -> str:
    with pytest.raises(SketchFormatError) as err:
        QuantileSketch.from_bytes(blob)
    return str(err.value)


def accepted_or_refused(blob: bytes) -> None:
    try:
        sketch = QuantileSketch.from_bytes(blob)
    except SketchFormatError:
        return
    assert sketch.to_bytes() == blob


@functools.cache
def samples() -> list[bytes]:
    rng = np.random.default_rng(7)
    full = np.concatenate([rng.lognormal(0, 3, 3000), -rng.lognormal(0, 1, 500), [0.0] * 3])
    return [
        QuantileSketch().to_bytes(),
        QuantileSketch(0.05).update([1.0, -2.0, 0.0, None, 3e9]).to_bytes(),
        QuantileSketch(max_buckets=30).update(full).to_bytes(),  # collapsed stores
        QuantileSketch().update(full).to_bytes(),
        QuantileSketch(mapping="cells").to_bytes(),
        QuantileSketch(0.05, mapping="cells").update([1.0, -2.0, 0.0, None, 3e9]).to_bytes(),
        QuantileSketch(max_buckets=30, mapping="cells").update(full).to_bytes(),
        QuantileSketch(mapping="cells").update(full).to_bytes(),
    ]


def test_layout_of_the_envelope() -> None:
    blob = QuantileSketch(0.02, max_buckets=99).update([1.0, None]).to_bytes()
    magic, version, code, seed = struct.unpack_from("<3sBBQ", blob)
    assert (magic, version, code, seed) == (MAGIC, FORMAT_VERSION, KIND_QUANTILES, 0)
    assert struct.unpack_from("<dIQQ", blob, 13) == (0.02, 99, 1, 0)
    cells = QuantileSketch(0.02, max_buckets=99, mapping="cells").update([1.0, None]).to_bytes()
    magic, version, code, seed = struct.unpack_from("<3sBBQ", cells)
    assert (magic, version, code, seed) == (MAGIC, 3, KIND_QUANTILES, 0)
    # the parameters, then mapping 1 (cells) of 6 bits: 2**-6 <= 0.02 < 2**-5
    assert struct.unpack_from("<dIQQBB", cells, 13) == (0.02, 99, 1, 0, 1, 6)
    assert cells[43:-4] == blob[41:-4]  # 1.0 is the lower edge of bucket 0 either way


def test_truncations_flips_and_trailing_bytes_are_refused() -> None:
    for blob in samples():
        for cut in range(len(blob)):
            refuses(blob[:cut])
        for cut in range(14, len(blob) - 4, max(1, (len(blob) - 18) // 40)):
            refuses(reseal(blob[:cut] + b"\0\0\0\0"))
        for i in range(0, len(blob), max(1, len(blob) // 60)):
            for mask in (0x01, 0x80, 0xFF):
                flipped = bytearray(blob)
                flipped[i] ^= mask
                refuses(bytes(flipped))
        assert "trailing" in refuses(reseal(blob[:-4] + b"junk" + blob[-4:]))
        assert QuantileSketch.from_bytes(bytearray(blob)) == QuantileSketch.from_bytes(
            memoryview(blob)
        )
    refuses("not bytes")
    for kind in KINDS:
        message = refuses(kind.build(["a"]).to_bytes())
        assert kind.cls.__name__ in message and "QuantileSketch" in message


def test_resealed_edits_are_refused_or_canonical() -> None:
    for blob in samples():
        for i in range(5, min(len(blob) - 4, 120)):
            for mask in (0x01, 0x10, 0xFF):
                edited = bytearray(blob)
                edited[i] ^= mask
                accepted_or_refused(reseal(bytes(edited)))


def test_targeted_inconsistencies() -> None:
    good = QuantileSketch(0.05, max_buckets=4).update([1.0, 2.0, 300.0]).to_bytes()
    body = good[:-4]
    assert "seed" in refuses(reseal(body[:5] + struct.pack("<Q", 1) + body[13:] + b"\0" * 4))
    params = struct.unpack_from("<dIQQ", body, 13)

    def with_params(accuracy: float, max_buckets: int) -> bytes:
        edited = struct.pack("<dIQQ", accuracy, max_buckets, *params[2:])
        return reseal(body[:13] + edited + body[41:] + b"\0" * 4)

    assert "parameters" in refuses(with_params(0.7, 4))
    assert "parameters" in refuses(with_params(float("nan"), 4))
    assert "buckets" in refuses(with_params(0.05, 2))  # 3 positive buckets > max 2
    # the negative store is empty: say it collapsed values without being full
    neg = struct.pack("<QI", 5, 0)
    assert "collapsed" in refuses(reseal(body[:41] + neg + body[53:] + b"\0" * 4))
    # positive store: first key, widths, gaps, counts
    first, gap_w, count_w = struct.unpack_from("<iBB", body, 65)
    assert (gap_w, count_w) == (1, 1)
    tail = body[71:]
    for widths in ((3, 1), (2, 1), (1, 2)):
        bad = body[:65] + struct.pack("<iBB", first, *widths) + tail
        refuses(reseal(bad + b"\0" * 4))
    zero_count = body[:-1] + b"\0"
    assert "corrupt" in refuses(reseal(zero_count + b"\0" * 4))
    out_of_range = body[:65] + struct.pack("<iBB", 2**31 - 1, 1, 1) + tail
    assert "range" in refuses(reseal(out_of_range + b"\0" * 4))
    below = body[:65] + struct.pack("<iBB", -(2**31), 1, 1) + tail
    assert "corrupt" in refuses(reseal(below + b"\0" * 4))


def test_targeted_mapping_inconsistencies() -> None:
    log = QuantileSketch(0.05).update([1.0, 2.0, 300.0]).to_bytes()
    cells = QuantileSketch(0.05, mapping="cells").update([1.0, 2.0, 300.0]).to_bytes()
    assert (log[3], cells[3]) == (2, 3) and cells[41:43] == bytes([1, 5])

    def edited(blob: bytes, at: int, new: bytes) -> bytes:
        return reseal(blob[:at] + new + blob[at + len(new) :])

    assert "mapping code 0" in refuses(edited(cells, 41, b"\x00"))  # log is version 2
    assert "mapping code 2" in refuses(edited(cells, 41, b"\x02"))
    assert "bits" in refuses(edited(cells, 42, b"\x06"))
    refuses(edited(cells, 3, b"\x02"))  # version 2 has no mapping bytes: misaligned
    refuses(edited(log, 3, b"\x03"))
    for version in (4, 255):
        assert "version" in refuses(edited(cells, 3, bytes([version])))
    # another kind refuses version 3 even with a valid checksum
    for kind in KINDS:
        other = kind.build(["a"]).to_bytes()
        with pytest.raises(SketchFormatError, match="version 3"):
            kind.cls.from_bytes(edited(other, 3, b"\x03"))
        with pytest.raises(SketchFormatError, match="version 3"):
            sketches.from_bytes(edited(other, 3, b"\x03"))


@FUZZ
@given(junk=st.binary(max_size=300))
def test_random_junk_is_refused(junk: bytes) -> None:
    refuses(junk)


@FUZZ
@given(
    body=st.binary(max_size=200), seed=st.integers(0, 2**64 - 1), version=st.sampled_from([2, 3])
)
def test_random_bodies_behind_a_valid_envelope(body: bytes, seed: int, version: int) -> None:
    blob = struct.pack("<3sBBQ", MAGIC, version, KIND_QUANTILES, seed) + body + b"\0" * 4
    accepted_or_refused(reseal(blob))


@FUZZ
@given(data=st.data())
def test_random_edits_of_valid_bytes(data: st.DataObject) -> None:
    blob = bytearray(data.draw(st.sampled_from(samples()[1:])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(5, len(blob) - 5))
        blob[i] = data.draw(st.integers(0, 255))
    accepted_or_refused(reseal(bytes(blob)))


@pytest.mark.parametrize("seed", range(20))
def test_quantiles_with_bounds_equal_the_one_at_a_time_answers(seed):
    rng = np.random.default_rng(seed)
    sketch = QuantileSketch(relative_accuracy=0.01)
    if seed:  # seed 0: the empty sketch
        sketch.update(rng.lognormal(0, 2, 500) * rng.choice([-1.0, 1.0], 500))
    qs = [0.0, 0.01, 0.5, 0.9, 0.99, 1.0]
    est, lo, hi = sketch.quantiles_with_bounds(qs)
    for i, q in enumerate(qs):
        np.testing.assert_equal([est[i], lo[i], hi[i]],
                                [sketch.quantile(q), sketch.lower_bound(q), sketch.upper_bound(q)])
