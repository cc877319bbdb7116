"""Our sketches as the groups build them (parameters shared with the baselines)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.sketch_bench.harness import BLOOM_FPR, CMS_DELTA, CMS_EPSILON, HLL_P, ds, ours


def our_hll() -> Any:
    return ours.HyperLogLog(HLL_P)


def our_cms(top_k: int) -> Any:
    return ours.CountMinSketch(epsilon=CMS_EPSILON, delta=CMS_DELTA, top_k=top_k)


def our_cms_dims(cms: Any) -> tuple[int, int]:
    width = getattr(cms, "width", None)
    depth = getattr(cms, "depth", None)
    if not isinstance(width, (int, np.integer)) or not isinstance(depth, (int, np.integer)):
        width = math.ceil(math.e / CMS_EPSILON)
        depth = math.ceil(math.log(1.0 / CMS_DELTA))
    return int(width), int(depth)


def our_bloom(capacity: int) -> Any:
    return ours.BloomFilter(capacity, BLOOM_FPR)


def our_union(sks: list[Any]) -> tuple[Callable[[list[Any]], Any], str]:
    if hasattr(ours, "union"):
        return (lambda s: ours.union(*s)), "sketches.union(*sketches)"
    return our_repeated_merge, "repeated .merge() into an empty sketch"


def our_repeated_merge(sks: list[Any]) -> Any:
    acc = our_hll()
    for sk in sks:
        acc.merge(sk)
    return acc


def our_copy(sk: Any) -> Any:
    cls = type(sk)
    if hasattr(sk, "to_bytes") and hasattr(cls, "from_bytes"):
        return cls.from_bytes(sk.to_bytes())
    import copy

    return copy.deepcopy(sk)


def ds_batch_supported(make: Callable[[], Any]) -> str | None:
    """A description of the array input a DataSketches sketch ``make`` builds accepts in
    ``update`` (a NumPy array, a list), or None: it takes one item at a time."""
    for arg, desc in ((np.arange(4, dtype=np.int64), "numpy int64 array"), ([1, 2, 3], "list")):
        try:
            sk = make()
            sk.update(arg)
            if sk.get_estimate() > 1.5:
                return desc
        except Exception:  # noqa: BLE001
            pass
    return None


def ds_hll_batch_supported() -> str | None:
    """Return a description if this datasketches build accepts an array in hll_sketch.update."""
    return ds_batch_supported(lambda: ds.hll_sketch(HLL_P, ds.tgt_hll_type.HLL_8))
