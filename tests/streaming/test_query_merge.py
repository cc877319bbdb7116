"""Bulk merge of stored sketch bytes against the ``sketches`` package's own merge.

The reference is :func:`sketches.union` over ``from_bytes`` of every blob (plus,
for Count-Min, every blob's candidates offered to the union), and a sketch built
in one pass over all the values.
"""

from __future__ import annotations

import numpy as np
import pytest

import sketches
from streaming.engine.sketch_merge import merge_blobs, merge_each
from streaming.spec.windows import SketchSpec

SPECS = {
    "hll": SketchSpec("users", "hll", "user_id", (("precision", 8),)),
    "bloom": SketchSpec("seen", "bloom", "user_id", (("capacity", 200), ("error_rate", 0.01))),
    "cms": SketchSpec("pages", "cms", "page", (("epsilon", 0.02), ("delta", 0.05),
                                               ("top_k", 3))),
    "minhash": SketchSpec("sim", "minhash", "user_id", (("num_perm", 32),)),
}


def parts(kind: str, seed: int, *, ints: bool = False):
    """Value lists of very different sizes, so both sparse and dense encodings occur."""
    rng = np.random.default_rng(seed)
    out = []
    for size in rng.choice([1, 3, 20, 400], size=40):
        vals = rng.zipf(1.3, size) % 500
        out.append(vals.tolist() if ints else [f"v{v}" for v in vals])
    return out


@pytest.mark.parametrize("kind", ["hll", "bloom", "cms", "minhash"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_merge_equals_one_by_one_and_one_pass(kind, seed):
    spec = SPECS[kind]
    values = parts(kind, seed)
    blobs = [spec.new().update(v).to_bytes() for v in values]
    bulk = merge_blobs(blobs, spec)
    each = merge_each(blobs, spec)
    assert bulk.to_bytes() == each.to_bytes()
    one_pass = spec.new().update([x for v in values for x in v])
    if kind == "cms":
        assert np.array_equal(bulk.counters, one_pass.counters)
        assert bulk.total == one_pass.total
        assert bulk.top() == one_pass.top()
    else:
        assert bulk == one_pass


def test_sparse_and_dense_encodings_both_occur():
    """The test above covers both encodings of each kind (else it would prove less)."""
    # the encoding byte of each format (sketches/hll.py, bloom.py, _cms_bytes.py): 0 dense,
    # 2 the compact form small sketches keep (1, the sparse form of dense state, needs
    # sizes between the two)
    for kind, at in (("hll", 14), ("bloom", 39), ("cms", 31)):
        spec = SPECS[kind]
        encodings = {spec.new().update(v).to_bytes()[at] for v in parts(kind, 1)}
        assert encodings == {0, 2}, kind


def test_non_string_heavy_hitters_take_the_one_by_one_path():
    spec = SPECS["cms"]
    values = parts("cms", 5, ints=True)
    blobs = [spec.new().update(v).to_bytes() for v in values]
    assert merge_blobs(blobs, spec).to_bytes() == merge_each(blobs, spec).to_bytes()


def test_empty_input_is_the_empty_sketch():
    for spec in SPECS.values():
        assert merge_blobs([], spec) == spec.new()


def test_a_damaged_blob_is_refused():
    spec = SPECS["hll"]
    blobs = [spec.new().update(v).to_bytes() for v in parts("hll", 1)]
    bad = bytearray(blobs[5])
    bad[len(bad) // 2] ^= 0x10
    blobs[5] = bytes(bad)
    with pytest.raises(sketches.SketchFormatError):
        merge_blobs(blobs, spec)


def test_other_parameters_are_refused():
    spec = SPECS["hll"]
    other = SketchSpec("users", "hll", "user_id", (("precision", 9),))
    blobs = [spec.new().update(["a"]).to_bytes(), other.new().update(["b"]).to_bytes()]
    with pytest.raises(sketches.IncompatibleSketchError):
        merge_blobs(blobs, spec)
