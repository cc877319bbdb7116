"""Hostile bytes: every malformed input raises SketchFormatError, nothing else, and
every accepted input is canonical (it serialises back to the very same bytes)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sketch_helpers import KINDS, KindSpec, reseal, sample_sketches

import sketches
from sketches import BloomFilter, CountMinSketch, HyperLogLog, MinHashSketch, SketchFormatError
from sketches._format import FORMAT_VERSION, MAGIC
from sketches.hll import estimate_from_registers

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def refuses(cls: Any, blob: Any) -> str:
    with pytest.raises(SketchFormatError) as err:
        cls.from_bytes(blob)
    return str(err.value)


def accepted_or_refused(cls: Any, blob: bytes) -> None:
    """Either a clean SketchFormatError or a sketch whose bytes are exactly ``blob``."""
    try:
        sketch = cls.from_bytes(blob)
    except SketchFormatError:
        return
    assert sketch.to_bytes() == blob


def test_layout_of_the_envelope(kind: KindSpec) -> None:
    blob = kind.make(seed=5).to_bytes()
    magic, version, code, seed = struct.unpack_from("<3sBBQ", blob)
    assert (magic, version, seed) == (MAGIC, FORMAT_VERSION, 5)
    assert code == kind.cls.KIND


def test_every_truncation_is_refused(kind: KindSpec) -> None:
    for sketch in sample_sketches(kind):
        blob = sketch.to_bytes()
        for cut in range(len(blob)):
            refuses(kind.cls, blob[:cut])
            refuses(sketches, blob[:cut])
        # even with a recomputed checksum, a shortened body is refused
        for cut in range(14, len(blob) - 4, max(1, (len(blob) - 18) // 40)):
            refuses(kind.cls, reseal(blob[:cut] + b"\0\0\0\0"))


def test_wrong_magic_future_version_and_trailing_junk(kind: KindSpec) -> None:
    blob = kind.build(["a", 1]).to_bytes()
    assert "magic" in refuses(kind.cls, b"XYZ" + blob[3:])
    future = blob[:3] + bytes([FORMAT_VERSION + 1]) + blob[4:]
    assert "version" in refuses(kind.cls, future)
    assert "version" in refuses(sketches, reseal(future))
    assert "kind" in refuses(kind.cls, reseal(blob[:4] + b"\x09" + blob[5:]))
    refuses(kind.cls, blob + b"\0")
    assert "trailing" in refuses(kind.cls, reseal(blob[:-4] + b"junk" + blob[-4:]))
    refuses(kind.cls, "not bytes")
    refuses(sketches, None)
    assert kind.cls.from_bytes(bytearray(blob)) == kind.cls.from_bytes(memoryview(blob))


def test_other_kinds_are_refused_by_name(kind: KindSpec) -> None:
    for other in KINDS:
        if other.cls is kind.cls:
            continue
        message = refuses(kind.cls, other.build(["a"]).to_bytes())
        assert other.cls.__name__ in message and kind.cls.__name__ in message


def test_every_single_byte_flip_is_refused(kind: KindSpec) -> None:
    for sketch in sample_sketches(kind)[:2]:
        blob = sketch.to_bytes()
        for i in range(len(blob)):
            for mask in (0x01, 0x80, 0xFF):
                flipped = bytearray(blob)
                flipped[i] ^= mask
                refuses(kind.cls, bytes(flipped))


def test_resealed_parameter_edits_are_refused_or_canonical(kind: KindSpec) -> None:
    # With the checksum recomputed, structural checks alone must hold the line.
    for sketch in sample_sketches(kind):
        blob = sketch.to_bytes()
        for i in range(5, min(len(blob) - 4, 48)):
            for mask in (0x01, 0x10, 0xFF):
                edited = bytearray(blob)
                edited[i] ^= mask
                accepted_or_refused(kind.cls, reseal(bytes(edited)))


@FUZZ
@given(junk=st.binary(max_size=300))
def test_random_junk_is_refused(kind: KindSpec, junk: bytes) -> None:
    refuses(kind.cls, junk)
    refuses(sketches, junk)


@FUZZ
@given(body=st.binary(max_size=200), seed=st.integers(0, 2**64 - 1))
def test_random_bodies_behind_a_valid_envelope(kind: KindSpec, body: bytes, seed: int) -> None:
    blob = struct.pack("<3sBBQ", MAGIC, FORMAT_VERSION, kind.cls.KIND, seed) + body + b"\0" * 4
    accepted_or_refused(kind.cls, reseal(blob))


@FUZZ
@given(data=st.data())
def test_random_edits_of_valid_bytes(kind: KindSpec, data: st.DataObject) -> None:
    blob = bytearray(data.draw(st.sampled_from(sample_sketches(kind))).to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(5, len(blob) - 5))
        blob[i] = data.draw(st.integers(0, 255))
    accepted_or_refused(kind.cls, reseal(bytes(blob)))


# ---------------------------------------------------------------- targeted inconsistencies


def test_hll_inconsistencies() -> None:
    good = HyperLogLog(8).update(["a", "b"]).to_bytes()  # sparse
    assert "precision" in refuses(HyperLogLog, reseal(good[:13] + b"\x03" + good[14:]))
    dense_small = good[:13] + bytes([8, 0]) + bytes(256) + b"\0\0\0\0"
    assert "non-canonical" in refuses(HyperLogLog, reseal(dense_small))
    too_high = good[:13] + bytes([8, 0]) + bytes([60] * 256) + b"\0\0\0\0"
    assert "register" in refuses(HyperLogLog, reseal(too_high))
    # sparse entries out of order
    entries = struct.pack("<II", (5 << 8) | 1, (3 << 8) | 1)
    unordered = good[:13] + bytes([8, 1]) + struct.pack("<I", 2) + entries + b"\0\0\0\0"
    assert "corrupt" in refuses(HyperLogLog, reseal(unordered))


def test_cms_inconsistencies() -> None:
    cms = CountMinSketch(width=64, depth=2, top_k=2).update(["a"] * 4 + ["b"] * 3 + list(range(20)))
    assert not cms.is_exact
    blob = cms.to_bytes()
    # total that disagrees with the counters
    width, depth, top_k, total, enc, vw = struct.unpack_from("<IHIQBB", blob, 13)
    edited = blob[:13] + struct.pack("<IHIQBB", width, depth, top_k, total + 1, enc, vw)
    assert "total" in refuses(CountMinSketch, reseal(edited + blob[13 + 20 :]))
    # candidates in the wrong order: swap the two serialised items
    items_at = blob.index(b"\x04\x01\x00\x00\x00a")
    a_item, b_item = blob[items_at : items_at + 6], blob[items_at + 6 : items_at + 12]
    swapped = blob[:items_at] + b_item + a_item + blob[items_at + 12 :]
    assert "rank order" in refuses(CountMinSketch, reseal(swapped))
    duplicated = blob[:items_at] + a_item + a_item + blob[items_at + 12 :]
    assert "duplicate" in refuses(CountMinSketch, reseal(duplicated))
    not_utf8 = blob[:items_at] + b"\x04\x01\x00\x00\x00\xff" + blob[items_at + 6 :]
    assert "UTF-8" in refuses(CountMinSketch, reseal(not_utf8))
    no_topk = CountMinSketch(width=64, depth=2).update(["a"]).to_bytes()
    with_candidate = no_topk[:-8] + struct.pack("<I", 1) + a_item + b"\0\0\0\0"
    refuses(CountMinSketch, reseal(with_candidate))


def test_hll_sparse_inconsistencies() -> None:
    good = HyperLogLog(8).update(["a", "b"]).to_bytes()
    assert good[14] == 2  # sparse entries

    def sparse(entries: list[int], count: int | None = None) -> bytes:
        n = len(entries) if count is None else count
        body = good[:13] + bytes([8, 2]) + struct.pack(f"<I{len(entries)}I", n, *entries)
        return reseal(body + b"\0\0\0\0")

    assert HyperLogLog.from_bytes(sparse([(3 << 6) | 1, (9 << 6) | 40])).to_bytes() == sparse(
        [(3 << 6) | 1, (9 << 6) | 40]
    )
    assert "corrupt" in refuses(HyperLogLog, sparse([(9 << 6) | 1, (3 << 6) | 1]))
    assert "corrupt" in refuses(HyperLogLog, sparse([(3 << 6) | 1, (3 << 6) | 2]))
    assert "corrupt" in refuses(HyperLogLog, sparse([(3 << 6) | 0]))
    assert "corrupt" in refuses(HyperLogLog, sparse([(3 << 6) | 41]))
    assert "corrupt" in refuses(HyperLogLog, sparse([(1 << 31) | 1]))  # index >= 2**25
    assert "too many" in refuses(HyperLogLog, sparse([(i << 6) | 1 for i in range(65)]))
    refuses(HyperLogLog, sparse([(3 << 6) | 1], count=2))
    # version 1 had no sparse entries, and version 2 writes the empty sketch as entries
    assert "encoding" in refuses(HyperLogLog, reseal(good[:3] + b"\x01" + good[4:]))
    empty_registers = good[:13] + bytes([8, 1]) + struct.pack("<I", 0) + b"\0\0\0\0"
    assert "non-canonical" in refuses(HyperLogLog, reseal(empty_registers))
    v1_empty = HyperLogLog.from_bytes(reseal(empty_registers[:3] + b"\x01" + empty_registers[4:]))
    assert v1_empty == HyperLogLog(8) and v1_empty.is_sparse


# ---------------------------------------------------------------- bytes of earlier versions


def _v1_cases() -> list[dict[str, Any]]:
    with open(Path(__file__).parent / "data" / "format_v1.json", encoding="utf-8") as fh:
        return json.load(fh)["cases"]


def _items(case: dict[str, Any]) -> list[Any]:
    raw = set(case["bytes_items"])
    return [bytes.fromhex(v) if i in raw else v for i, v in enumerate(case["items"])]


@pytest.mark.parametrize("case", _v1_cases(), ids=lambda c: c["name"])
def test_version_1_bytes_still_load(case: dict[str, Any]) -> None:
    blob = bytes.fromhex(case["hex"])
    assert blob[3] == 1
    cls = getattr(sketches, case["kind"])
    items = _items(case)
    old = cls.from_bytes(blob)
    assert sketches.from_bytes(blob) == old
    fresh = cls(**case["params"]).update(items)
    probes = [*items, "zz", 10**12, b"y", 9.25]
    assert old.is_empty() == fresh.is_empty() == (not items)
    if isinstance(old, HyperLogLog):
        assert old.registers.tolist() == fresh.registers.tolist()
        assert old.estimate() == estimate_from_registers(fresh.registers, old.precision)
    elif isinstance(old, CountMinSketch):
        assert old.counters.tolist() == fresh.counters.tolist()
        assert old.total == fresh.total
        assert old.estimate(probes).tolist() == fresh.estimate(probes).tolist()
        assert old.top(old.capacity) == fresh.top(fresh.capacity)
    elif isinstance(old, BloomFilter):
        assert old.contains(probes).tolist() == fresh.contains(probes).tolist()
        assert old.fill_ratio() == fresh.fill_ratio()
    else:
        assert old.hashvalues.tolist() == fresh.hashvalues.tolist()
        assert old.estimate() == fresh.estimate()
    again = old.to_bytes()
    assert again[3] == FORMAT_VERSION and cls.from_bytes(again) == old
    merged = old.copy().merge(fresh)  # the union of equal contents answers the same
    if isinstance(old, HyperLogLog):
        assert merged.registers.tolist() == fresh.registers.tolist()
    elif isinstance(old, BloomFilter):
        assert merged.contains(probes).tolist() == fresh.contains(probes).tolist()
    elif isinstance(old, MinHashSketch):
        assert merged.hashvalues.tolist() == fresh.hashvalues.tolist()


def test_cms_exact_inconsistencies() -> None:
    cms = CountMinSketch(width=64, depth=2, top_k=2).update(["a", "a", "b"])
    assert cms.is_exact
    blob = cms.to_bytes()
    head = struct.unpack_from("<IHIQBBI", blob, 13)
    assert head[4:] == (2, 1, 2)
    body = blob[13 + 24 : -4]  # counts then items, in hash order
    counts, items = body[:2], body[2:]
    first, second = items[:6], items[6:]

    def edit(counts: bytes, items: bytes, total: int = 3, n: int = 2, vw: int = 1) -> bytes:
        fields = struct.pack("<IHIQBBI", 64, 2, 2, total, 2, vw, n)
        return reseal(blob[:13] + fields + counts + items + b"\0\0\0\0")

    assert CountMinSketch.from_bytes(edit(counts, items)) == cms
    assert "hash order" in refuses(CountMinSketch, edit(counts[::-1], second + first))
    assert "hash order" in refuses(CountMinSketch, edit(counts, first + first))
    assert "total" in refuses(CountMinSketch, edit(counts, items, total=4))
    assert "non-canonical" in refuses(CountMinSketch, edit(b"\0" + counts[1:], items, total=2))
    wide = b"".join(struct.pack("<H", c) for c in counts)
    assert "non-canonical" in refuses(CountMinSketch, edit(wide, items, vw=2))
    many = [f"x{i}" for i in range(17)]  # the exact limit of 64 x 2 with top-k is 16
    hashes_order = np.argsort(sketches.hash64(many))
    many_items = b"".join(b"\x04\x02\x00\x00\x00" + many[i].encode() for i in hashes_order)
    too_many = edit(b"\x01" * 17, many_items, total=17, n=17)
    assert "too many" in refuses(CountMinSketch, too_many)
    assert "encoding" in refuses(CountMinSketch, reseal(blob[:3] + b"\x01" + blob[4:]))
    plain = CountMinSketch(width=64, depth=2).update(["a", "b"]).to_bytes()  # hashes, no items
    hashes = plain[13 + 24 : 13 + 24 + 16]
    swapped = plain[: 13 + 24] + hashes[8:] + hashes[:8] + plain[13 + 24 + 16 :]
    assert "hash order" in refuses(CountMinSketch, reseal(swapped))
    empty_counters = CountMinSketch(width=4, depth=1).update(np.arange(10)).to_bytes()
    fields = struct.pack("<IHIQBB", 4, 1, 0, 0, 0, 1)
    zero = reseal(empty_counters[:13] + fields + bytes(4) + struct.pack("<I", 0) + b"\0" * 4)
    assert "empty counters" in refuses(CountMinSketch, zero)
    v1_empty = CountMinSketch.from_bytes(reseal(zero[:3] + b"\x01" + zero[4:]))
    assert v1_empty == CountMinSketch(width=4, depth=1) and v1_empty.is_exact


def test_bloom_hash_inconsistencies() -> None:
    good = BloomFilter(200, 0.01).update(["a", "b"]).to_bytes()  # 1920 bits: 30 hashes
    head = good[: 13 + 26]
    assert good[13 + 26] == 2

    def with_hashes(hashes: list[int], count: int | None = None) -> bytes:
        n = len(hashes) if count is None else count
        body = head + struct.pack(f"<BI{len(hashes)}Q", 2, n, *hashes)
        return reseal(body + b"\0\0\0\0")

    assert BloomFilter.from_bytes(with_hashes([3, 2**64 - 1])).to_bytes() == with_hashes(
        [3, 2**64 - 1]
    )
    assert "order" in refuses(BloomFilter, with_hashes([9, 3]))
    assert "order" in refuses(BloomFilter, with_hashes([3, 3]))
    assert "too many" in refuses(BloomFilter, with_hashes(list(range(31))))
    refuses(BloomFilter, with_hashes([3], count=2))
    assert "encoding" in refuses(BloomFilter, reseal(good[:3] + b"\x01" + good[4:]))
    no_bits = head + struct.pack("<BI", 1, 0) + b"\0\0\0\0"
    assert "no bit" in refuses(BloomFilter, reseal(no_bits))
    v1_empty = BloomFilter.from_bytes(reseal(no_bits[:3] + b"\x01" + no_bits[4:]))
    assert v1_empty == BloomFilter(200, 0.01) and v1_empty.is_hashes


def test_minhash_hash_inconsistencies() -> None:
    good = MinHashSketch(num_perm=4).update(["a"]).to_bytes()
    assert good[13 + 4] == 1  # hashes

    def with_hashes(hashes: list[int], count: int | None = None) -> bytes:
        n = len(hashes) if count is None else count
        body = good[:13] + struct.pack(f"<IBI{len(hashes)}Q", 4, 1, n, *hashes)
        return reseal(body + b"\0\0\0\0")

    assert MinHashSketch.from_bytes(with_hashes([3, 5])).to_bytes() == with_hashes([3, 5])
    assert "order" in refuses(MinHashSketch, with_hashes([5, 3]))
    assert "order" in refuses(MinHashSketch, with_hashes([5, 5]))
    assert "too many" in refuses(MinHashSketch, with_hashes([1, 2, 3, 4, 5]))
    refuses(MinHashSketch, with_hashes([3], count=2))
    assert "encoding" in refuses(MinHashSketch, reseal(good[:17] + b"\x02" + good[18:]))
    empty = good[:13] + struct.pack("<IB4Q", 4, 0, *[2**64 - 1] * 4) + b"\0\0\0\0"
    assert "empty signature" in refuses(MinHashSketch, reseal(empty))
    v1_empty = reseal(empty[:3] + b"\x01" + empty[4:17] + empty[18:])
    assert MinHashSketch.from_bytes(v1_empty) == MinHashSketch(num_perm=4)
