"""The shared 64-bit hash: frozen golden vectors, an independent scalar reference,
and agreement across every accepted input container."""

from __future__ import annotations

import math
import struct
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketches import UnsupportedInputError, hash64
from sketches.errors import InvalidParameterError

# ---------------------------------------------------------------- scalar reference
# A deliberately naive pure-Python transcription of the definition in
# sketches/hashing.py, sharing no code with the vectorised implementation.

MASK = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


def ref_mix(z: int) -> int:
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def ref_key(seed: int, tag: bytes) -> int:
    return ref_mix(seed ^ int.from_bytes(tag, "little"))


def ref_hash(value: Any, seed: int = 0) -> int:
    if isinstance(value, bool):
        value = int(value)
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value == math.trunc(value)
        and -(2.0**63) <= value < 2.0**64
    ):
        value = int(value)
    if isinstance(value, int):
        if value < 1 << 63:
            return ref_mix((ref_key(seed, b"ssk:int ") + (value & MASK) * G) & MASK)
        return ref_mix((ref_key(seed, b"ssk:uint") + value * G) & MASK)
    if isinstance(value, float):
        bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        return ref_mix((ref_key(seed, b"ssk:flt ") + bits * G) & MASK)
    if isinstance(value, str):
        data, tag = value.encode("utf-8"), b"ssk:str "
    else:
        data, tag = bytes(value), b"ssk:byte"
    k = ref_key(seed, tag)
    acc = 0
    for j in range(0, len(data), 8):
        word = int.from_bytes(data[j : j + 8].ljust(8, b"\0"), "little")
        acc = (acc + ref_mix(word ^ ((k + (j // 8 + 1) * G) & MASK))) & MASK
    return ref_mix((ref_mix(k ^ ((len(data) * G) & MASK)) + acc) & MASK)


# ---------------------------------------------------------------- golden vectors

GOLDEN_INPUTS: list[Any] = [
    0, 1, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, True, False,
    1.5, -0.0, 2.0, -3.0, math.inf, -math.inf, 1e300, 5e-324, 2.0**63, 2.0**70,
    "", "a", "hello", "12345678", "123456789", "ünïcødé ✓", "x" * 100,
    b"", b"\x00", b"\xff" * 17, b"hello",
]  # fmt: skip

GOLDEN_SEED_0 = [
    14401148713360154070, 8216944775334761501, 15413877203292154258, 13751056416687871991,
    12551968317950753058, 14409655188228740764, 10070869734596910957, 8216944775334761501,
    14401148713360154070, 10260768587393793870, 14401148713360154070, 17732501038646475010,
    3983044416807389303, 1437473853762873210, 11571509627102879592, 12685601272168668293,
    4767805965332718204, 14409655188228740764, 10076079115202137203, 8352702039974057372,
    2362457152775500226, 9237819575655228321, 7995607494000462618, 12896418984212519459,
    12811999766769853802, 11305813584617435669, 2151903857887206871, 6712643976306373278,
    5065914893823135910, 11970245959271679327,
]  # fmt: skip

GOLDEN_SEED_42 = [
    7345573964241896145, 11978151760062898600, 14416056455349751058, 11984646761860494666,
    18185876600131944435, 16965229270369631938, 3467575536496954890, 11978151760062898600,
    7345573964241896145, 10241323093446259281, 7345573964241896145, 2142654296036636603,
    12890133964190515571, 9895097160143141869, 14927665261990851235, 6434565132078356679,
    3889507129349464530, 16965229270369631938, 308302912337816540, 11531328634792159376,
    1722781749703890715, 15870082985722368674, 647500840290521850, 4883510864156385639,
    10844481391659054904, 4602137575694437757, 6536958344412477367, 18245182522681946521,
    13176108244755374893, 2245993327921981619,
]  # fmt: skip


@pytest.mark.parametrize(("seed", "expected"), [(0, GOLDEN_SEED_0), (42, GOLDEN_SEED_42)])
def test_golden_vectors_are_frozen(seed: int, expected: list[int]) -> None:
    assert hash64(GOLDEN_INPUTS, seed=seed).tolist() == expected


@pytest.mark.parametrize(("seed", "expected"), [(0, GOLDEN_SEED_0), (42, GOLDEN_SEED_42)])
def test_golden_vectors_match_the_scalar_reference(seed: int, expected: list[int]) -> None:
    assert [ref_hash(v, seed) for v in GOLDEN_INPUTS] == expected


def test_each_golden_input_alone_hashes_the_same() -> None:
    # one value at a time takes the single-type fast paths instead of the mixed path
    for value, expected in zip(GOLDEN_INPUTS, GOLDEN_SEED_0, strict=True):
        assert hash64([value]).tolist() == [expected], value


# ---------------------------------------------------------------- reference agreement


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=50), st.integers(0, 2**64 - 1))
def test_strings_match_reference_in_every_container(values: list[str], seed: int) -> None:
    expected = [ref_hash(v, seed) for v in values]
    assert hash64(values, seed=seed).tolist() == expected
    assert hash64(pa.array(values, pa.string()), seed=seed).tolist() == expected
    assert hash64(pa.array(values, pa.large_string()), seed=seed).tolist() == expected
    # NumPy 'U' arrays cannot hold trailing NULs, so compare only where they survive
    if all(not v.endswith("\0") for v in values):
        assert hash64(np.array(values, dtype=str), seed=seed).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=40))
def test_bytes_match_reference(values: list[bytes]) -> None:
    expected = [ref_hash(v) for v in values]
    assert hash64(values).tolist() == expected
    assert hash64(pa.array(values, pa.binary())).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**64 - 1), max_size=50), st.integers(0, 2**64 - 1))
def test_ints_match_reference(values: list[int], seed: int) -> None:
    assert hash64(values, seed=seed).tolist() == [ref_hash(v, seed) for v in values]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False), max_size=50))
def test_floats_match_reference(values: list[float]) -> None:
    expected = [ref_hash(v) for v in values]
    assert hash64(np.array(values, dtype=np.float64)).tolist() == expected
    assert hash64(values).tolist() == expected


def test_long_and_mixed_length_strings_match_reference() -> None:
    rng = np.random.default_rng(3)
    lengths = [0, 1, 7, 8, 9, 63, 64, 65, 200, 5000] + rng.integers(0, 300, size=200).tolist()
    values = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(n)) for i, n in enumerate(lengths)]
    values.append("é" * 3001)
    assert hash64(pa.array(values)).tolist() == [ref_hash(v) for v in values]


def test_block_boundaries_do_not_change_hashes() -> None:
    # more strings than one inner block, with a long string in the middle
    values = [f"id-{i}" for i in range(70_000)]
    values[40_000] = "y" * 10_000
    got = hash64(pa.array(values))
    for i in (0, 32_767, 32_768, 39_999, 40_000, 40_001, 69_999):
        assert int(got[i]) == ref_hash(values[i])


# ---------------------------------------------------------------- containers and types


def test_numbers_hash_by_value_across_dtypes() -> None:
    expected = hash64([0, 1, 2, 100]).tolist()
    for dtype in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64"):  # fmt: skip
        assert hash64(np.array([0, 1, 2, 100], dtype=dtype)).tolist() == expected, dtype
    for arrow_type in (pa.int8(), pa.int32(), pa.uint64(), pa.float32(), pa.float64()):
        assert hash64(pa.array([0, 1, 2, 100], arrow_type)).tolist() == expected
    assert hash64(np.array([False, True])).tolist() == expected[:2]
    assert hash64(pa.array([False, True])).tolist() == expected[:2]


def test_distinct_domains_do_not_collide() -> None:
    h = hash64([1, "1", b"1", 1.5, "1.5"]).tolist()
    assert len(set(h)) == 5
    assert hash64(["a"]).tolist() != hash64([b"a"]).tolist()
    assert hash64([-1]).tolist() != hash64(np.array([2**64 - 1], dtype=np.uint64)).tolist()


def test_nulls_and_nan_are_skipped_everywhere() -> None:
    want = hash64(["a", "b"]).tolist()
    assert hash64(["a", None, "b"]).tolist() == want
    assert hash64(pa.array(["a", None, "b"])).tolist() == want
    assert hash64(pd.Series(["a", None, "b"])).tolist() == want
    assert hash64(pd.Series(["a", None, "b"], dtype="string")).tolist() == want
    nums = hash64([1.5, 2.5]).tolist()
    assert hash64(np.array([1.5, np.nan, 2.5])).tolist() == nums
    assert hash64(pa.array([1.5, None, float("nan"), 2.5])).tolist() == nums
    assert hash64([1.5, float("nan"), None, 2.5]).tolist() == nums
    assert hash64(pd.Series([1, None, 3], dtype="Int64")).tolist() == hash64([1, 3]).tolist()
    assert hash64(np.array(["2024-01-01", "NaT"], dtype="datetime64[s]")).size == 1
    assert hash64(pa.nulls(3)).size == 0
    assert hash64([]).size == 0


def test_arrow_layouts_agree() -> None:
    values = ["x", "yy", None, "zzz", "x", "long string of some length"]
    want = hash64(values).tolist()
    plain = pa.array(values)
    assert hash64(plain.dictionary_encode()).tolist() == want
    assert hash64(pa.chunked_array([plain[:2], plain[2:]])).tolist() == want
    assert hash64(plain.slice(1, 4)).tolist() == hash64(values[1:5]).tolist()
    assert hash64(pa.array(values, pa.string_view())).tolist() == want
    assert hash64(pd.Series(values, dtype="category")).tolist() == want
    ints = pa.array([5, None, 7, 9], pa.int64())
    assert hash64(ints.slice(1, 3)).tolist() == hash64([7, 9]).tolist()
    fixed = pa.array([b"ab", b"cd", None], pa.binary(2))
    assert hash64(fixed.slice(1)).tolist() == hash64([b"cd"]).tolist()
    assert hash64(np.array([b"ab", b"c"])).tolist() == hash64([b"ab", b"c"]).tolist()


def test_temporal_values_hash_as_integer_storage() -> None:
    stamps = np.array([0, 86_400], dtype="datetime64[s]")
    assert hash64(stamps).tolist() == hash64([0, 86_400]).tolist()
    days = pa.array([0, 1], pa.date32())
    assert hash64(days).tolist() == hash64([0, 1]).tolist()


def test_chunked_inputs_give_the_same_result_as_one_piece() -> None:
    values = np.arange(3_000_000, dtype=np.int64)  # more than one internal chunk
    h = hash64(values)
    assert h.size == values.size
    assert int(h[2_999_999]) == ref_hash(2_999_999)
    assert int(h[1_048_576]) == ref_hash(1_048_576)


def test_hash_quality_no_collisions_and_uniform_top_bits() -> None:
    h = hash64(np.arange(1_000_000))
    assert np.unique(h).size == h.size
    top = np.bincount((h >> np.uint64(56)).astype(np.int64), minlength=256)
    expected = h.size / 256
    chi2 = float(((top - expected) ** 2 / expected).sum())
    assert chi2 < 400  # 255 degrees of freedom: p(chi2 > 400) is about 1e-8


def test_refuses_unhashable_values_and_bad_seeds() -> None:
    with pytest.raises(UnsupportedInputError):
        hash64([1, (2, 3)])
    with pytest.raises(UnsupportedInputError):
        hash64([2**64])
    with pytest.raises(UnsupportedInputError):
        hash64(np.zeros((2, 2)))
    with pytest.raises(UnsupportedInputError):
        hash64(np.array([1 + 2j]))
    with pytest.raises(InvalidParameterError):
        hash64([1], seed=-1)
    with pytest.raises(InvalidParameterError):
        hash64([1], seed=2**64)
    assert isinstance(UnsupportedInputError("x"), TypeError)


def test_scalars_and_iterables() -> None:
    assert hash64("abc").tolist() == [ref_hash("abc")]
    assert hash64(7).tolist() == [ref_hash(7)]
    assert hash64(np.int32(7)).tolist() == [ref_hash(7)]
    assert hash64(v for v in ["a", "b"]).tolist() == [ref_hash("a"), ref_hash("b")]
    assert hash64(range(3)).tolist() == [ref_hash(i) for i in range(3)]


def test_odd_numpy_layouts() -> None:
    big_endian = np.array([1, 2, 3], dtype=">i8")
    assert hash64(big_endian).tolist() == hash64([1, 2, 3]).tolist()
    assert hash64(np.array(["ab", "c"], dtype=">U2")).tolist() == hash64(["ab", "c"]).tolist()
    strided = np.arange(10)[::3]
    assert hash64(strided).tolist() == hash64([0, 3, 6, 9]).tolist()
    with pytest.raises(UnsupportedInputError):
        hash64(pd.DataFrame({"a": [1]}))
    with pytest.raises(UnsupportedInputError):
        hash64(pa.array([[1, 2]]))


def test_works_without_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    values = ["a", "ü", None, "long string " * 3]
    expected = hash64(values).tolist()
    unicode_array = np.array(["a", "ü", "long string " * 3])
    expected_unicode = hash64(unicode_array).tolist()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    assert hash64(values).tolist() == expected
    assert hash64(unicode_array).tolist() == expected_unicode
    assert hash64(pd.Series([1, None], dtype="Int64")).tolist() == hash64([1]).tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=32),
       st.integers(min_value=0, max_value=2**64 - 1))
def test_a_few_strings_hash_as_the_vectorised_path_does(values, seed):
    # lists of up to 32 strings take a scalar path; an object array always the vectorised
    assert np.array_equal(hash64(list(values), seed),
                          hash64(np.array(values + [None], dtype=object), seed))
