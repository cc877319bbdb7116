"""The laws every sketch kind obeys, run over each kind by the ``kind`` fixture.

The algebraic ones (merge monoid, bytes identical under any split and order, round
trip, grouped builds, mismatches) also run over the quantile sketches of each bucket
mapping, on streams of numbers (the ``law_kind`` fixture).
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sketch_helpers import LAW_KINDS, KindSpec, as_objects

import sketches
from sketches import IncompatibleSketchError, InvalidParameterError, SketchError, union

LAWS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def split_streams(
    draw: st.DrawFn, streams: st.SearchStrategy[list[Any]]
) -> tuple[list[Any], list[list[Any]]]:
    """A stream, and a permutation of it cut into parts at random points."""
    values = draw(streams)
    order = draw(st.permutations(range(len(values))))
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=4)))
    shuffled = [values[i] for i in order]
    bounds = [0, *cuts, len(values)]
    return values, [shuffled[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class TestSketchLaws:
    @LAWS
    @given(data=st.data())
    def test_any_split_and_order_merges_to_the_one_pass_bytes(
        self, law_kind: KindSpec, data: st.DataObject
    ) -> None:
        kind = law_kind
        values, parts = data.draw(split_streams(kind.stream))
        whole = kind.build(as_objects(values))
        merged = reduce(
            lambda acc, part: acc.merge(kind.build(as_objects(part))), parts, kind.make()
        )
        assert merged.to_bytes() == whole.to_bytes()
        assert merged == whole

    @LAWS
    @given(data=st.data())
    def test_merge_is_associative_and_commutative(
        self, law_kind: KindSpec, data: st.DataObject
    ) -> None:
        kind = law_kind
        a, b, c = (data.draw(kind.stream) for _ in range(3))
        sa, sb, sc = (kind.build(as_objects(v)) for v in (a, b, c))
        left = sa.copy().merge(sb).merge(sc)
        right = sa.copy().merge(sb.copy().merge(sc))
        swapped = sc.copy().merge(sb).merge(sa)
        assert left.to_bytes() == right.to_bytes() == swapped.to_bytes()
        assert union(sa, sb, sc) == left

    @LAWS
    @given(data=st.data())
    def test_empty_sketch_is_the_identity(self, law_kind: KindSpec, data: st.DataObject) -> None:
        kind = law_kind
        values = data.draw(kind.stream)
        s = kind.build(as_objects(values))
        assert kind.make().merge(s) == s
        assert s.copy().merge(kind.make()) == s
        assert kind.make().is_empty()
        counted = [v for v in values if v is not None and v == v]  # nulls and NaN skipped
        if kind.cls is sketches.QuantileSketch:  # infinities too
            counted = [v for v in counted if abs(v) != float("inf")]
        assert s.is_empty() == (len(counted) == 0)

    @LAWS
    @given(data=st.data())
    def test_bytes_round_trip(self, law_kind: KindSpec, data: st.DataObject) -> None:
        kind = law_kind
        values = data.draw(kind.stream)
        s = kind.build(as_objects(values))
        blob = s.to_bytes()
        back = kind.cls.from_bytes(blob)
        assert back == s
        assert back.to_bytes() == blob
        assert type(sketches.from_bytes(blob)) is kind.cls
        assert sketches.from_bytes(blob) == s
        assert kind.build(as_objects(values)).to_bytes() == blob  # deterministic

    @LAWS
    @given(
        data=st.data(),
        codes=st.lists(st.integers(0, 3), min_size=80, max_size=80),
        n_extra=st.integers(0, 2),
    )
    def test_from_groups_equals_per_group_updates(
        self, law_kind: KindSpec, data: st.DataObject, codes: list[int], n_extra: int
    ) -> None:
        kind = law_kind
        values = data.draw(kind.stream)
        codes_arr = np.array(codes[: len(values)], dtype=np.int64)
        n_groups = 4 + n_extra
        objects = as_objects(values)
        groups = kind.cls.from_groups(codes_arr, objects, n_groups, **kind.params)
        assert len(groups) == n_groups
        for i, group in enumerate(groups):
            expected = kind.build(objects[codes_arr == i])
            assert group.to_bytes() == expected.to_bytes(), i

    def test_from_groups_with_arrow_nulls_and_chunks(self, kind: KindSpec) -> None:
        values = pa.chunked_array([pa.array(["a", None, "b"]), pa.array(["c", "a", None, "d"])])
        codes = np.array([0, 1, 1, 0, 1, 0, 1])
        groups = kind.cls.from_groups(codes, values, 2, **kind.params)
        assert groups[0] == kind.build(["a", "c"])
        assert groups[1] == kind.build(["b", "a", "d"])

    def test_from_groups_rejects_bad_codes(self, kind: KindSpec) -> None:
        with pytest.raises(InvalidParameterError):
            kind.cls.from_groups(np.array([0, 2]), ["a", "b"], 2, **kind.params)
        with pytest.raises(InvalidParameterError):
            kind.cls.from_groups(np.array([0]), ["a", "b"], 2, **kind.params)
        with pytest.raises(InvalidParameterError):
            kind.cls.from_groups(np.array([-1, 0]), ["a", "b"], 2, **kind.params)
        assert kind.cls.from_groups(np.array([], dtype=np.int64), [], 0, **kind.params) == []

    def test_mismatched_parameters_refuse_to_merge_naming_both(self, law_kind: KindSpec) -> None:
        kind = law_kind
        base = kind.make()
        for override in kind.mismatched:
            other = kind.make(**override)
            with pytest.raises(IncompatibleSketchError) as err:
                base.copy().merge(other)
            message = str(err.value)
            name = kind.cls.__name__
            for params in (base.params(), other.params()):
                inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
                assert f"{name}({inner})" in message
            assert err.value.left_params == base.params()
            assert err.value.right_params == other.params()
            with pytest.raises(IncompatibleSketchError):
                union(base, other)
            assert base != other

    def test_other_kinds_refuse_to_merge(self, law_kind: KindSpec) -> None:
        kind = law_kind
        for other_kind in LAW_KINDS:
            if other_kind.cls is kind.cls:
                continue
            with pytest.raises(IncompatibleSketchError, match=other_kind.cls.__name__):
                kind.make().merge(other_kind.make())
        with pytest.raises(IncompatibleSketchError):
            kind.make().merge("not a sketch")  # type: ignore[arg-type]
        assert issubclass(IncompatibleSketchError, SketchError)

    def test_nulls_and_nan_are_skipped(self, kind: KindSpec) -> None:
        expected = kind.build(["a", 1.5, "b"])
        assert kind.build(["a", None, 1.5, float("nan"), "b", None]) == expected
        assert kind.build(pa.array(["a", None, "b"])) == kind.build(["a", "b"])
        assert kind.build(pd.Series(["a", None, "b"])) == kind.build(["a", "b"])
        floats = np.array([1.5, np.nan, 2.5, np.nan])
        assert kind.build(floats) == kind.build([1.5, 2.5])
        assert kind.build(pa.array([1.5, None, 2.5])) == kind.build([1.5, 2.5])
        assert kind.build([None, float("nan")]).is_empty()

    def test_containers_agree(self, kind: KindSpec) -> None:
        words = [f"user-{i % 50}" for i in range(300)]
        expected = kind.build(words)
        assert kind.build(np.array(words)) == expected
        assert kind.build(as_objects(words)) == expected
        assert kind.build(pa.array(words, pa.large_string())) == expected
        assert kind.build(pa.array(words).dictionary_encode()) == expected
        assert kind.build(pd.Series(words, dtype="category")) == expected
        ints = np.arange(100)
        assert kind.build(ints) == kind.build(ints.tolist()) == kind.build(pa.array(ints))

    def test_update_returns_self_and_copy_is_independent(self, kind: KindSpec) -> None:
        s = kind.make()
        assert s.update(["a"]) is s
        c = s.copy()
        c.update([f"x{i}" for i in range(50)])
        assert c != s
        assert s == kind.build(["a"])
        assert repr(s).startswith(kind.cls.__name__ + "(")
        assert s != "a"
        with pytest.raises(TypeError):
            hash(s)

    def test_union_needs_one_sketch_and_leaves_inputs_alone(self, kind: KindSpec) -> None:
        with pytest.raises(InvalidParameterError):
            union()
        a, b = kind.build(["a"]), kind.build(["b"])
        before = a.to_bytes()
        u = union(a, b)
        assert a.to_bytes() == before
        assert u == a.copy().merge(b)
        assert union(a) == a and union(a) is not a


@pytest.mark.parametrize("kind", [k for k in LAW_KINDS if hasattr(k.cls, "group_bytes")],
                         ids=lambda k: k.name)
@LAWS
@given(
    data=st.data(),
    codes=st.lists(st.integers(0, 3), min_size=80, max_size=80),
    form=st.sampled_from(["objects", "arrow", "dictionary"]),
)
def test_group_bytes_are_the_grouped_builds_bytes(
    kind: KindSpec, data: st.DataObject, codes: list[int], form: str
) -> None:
    values = data.draw(kind.stream)
    if form != "objects":  # strings as Arrow hands them over: plain or dictionary
        values = [None if v is None else str(v) for v in values]
    arrays = {
        "objects": lambda: as_objects(values),
        "arrow": lambda: pa.array(values, pa.string()),
        "dictionary": lambda: pa.array(values, pa.string()).dictionary_encode(),
    }
    codes_arr = np.array(codes[: len(values)], dtype=np.int64)
    for params in (kind.params, {**kind.params, "top_k": 0}):
        if "top_k" not in kind.params and params is not kind.params:
            continue
        want = [g.to_bytes() for g in kind.cls.from_groups(codes_arr, arrays[form](), 5, **params)]
        assert kind.cls.group_bytes(codes_arr, arrays[form](), 5, **params) == want


@pytest.mark.parametrize("kind", [k for k in LAW_KINDS if hasattr(k.cls, "group_bytes")],
                         ids=lambda k: k.name)
def test_group_bytes_when_no_group_stays_small(kind: KindSpec) -> None:
    values = pa.array([f"v{i}" for i in range(3000)], pa.string())
    codes = np.zeros(len(values), dtype=np.int64)  # one group, past every small form
    want = [g.to_bytes() for g in kind.cls.from_groups(codes, values, 2, **kind.params)]
    assert kind.cls.group_bytes(codes, values, 2, **kind.params) == want
    assert want[0] != kind.make().to_bytes()
