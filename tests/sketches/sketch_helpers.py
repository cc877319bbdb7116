"""Factories shared by the sketch tests (a uniquely named module, importable from tests)."""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

import sketches
from sketches import BloomFilter, CountMinSketch, HyperLogLog, MinHashSketch, QuantileSketch

# An alphabet of 60 values (fewer than the Count-Min candidate capacity of 64, so
# the candidate list is order-independent too), mixing strings and integers.
WORDS = [f"w{i}" for i in range(30)]
ALPHABET = st.one_of(st.integers(0, 29), st.sampled_from(WORDS))
STREAMS = st.lists(ALPHABET, max_size=80)

# Numbers for the quantile sketches: every float (NaN, infinities, subnormals, both
# zeros), values on and next to bucket edges, integers and nulls.
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1.0078125, 1.02, -3.5, 1e-9, 2.5e6, 5e-324, -1e-310]),
    st.integers(-(10**9), 10**9),
    st.none(),
)
NUMBER_STREAMS = st.lists(NUMBERS, max_size=80)


@dataclass(frozen=True)
class KindSpec:
    """How to build small sketches of one kind for the shared-law tests."""

    name: str
    cls: type[sketches.Sketch]
    params: dict[str, Any]
    # parameter sets that must refuse to merge with ``params``
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    # the streams the shared laws draw (quantile sketches take numbers only)
    stream: st.SearchStrategy[list[Any]] = STREAMS

    def make(self, **overrides: Any) -> Any:
        return self.cls(**{**self.params, **overrides})

    def build(self, values: Any) -> Any:
        return self.make().update(values)


KINDS = [
    KindSpec(
        "hll",
        HyperLogLog,
        {"precision": 8},
        [{"precision": 9}, {"seed": 1}],
    ),
    # at most 8 sparse entries: the law streams mix sparse and dense sketches
    KindSpec(
        "hll-p5",
        HyperLogLog,
        {"precision": 5},
        [{"precision": 6}, {"seed": 1}],
    ),
    KindSpec(
        "cms",
        CountMinSketch,
        {"width": 64, "depth": 3, "top_k": 5},
        [{"width": 65}, {"depth": 4}, {"top_k": 6}, {"seed": 1}],
    ),
    KindSpec(
        "bloom",
        BloomFilter,
        {"capacity": 200, "error_rate": 0.01},
        [{"capacity": 201}, {"error_rate": 0.02}, {"seed": 1}],
    ),
    KindSpec(
        "minhash",
        MinHashSketch,
        {"num_perm": 32},
        [{"num_perm": 33}, {"seed": 2}],
    ),
]


# Quantile sketches, for the laws that hold for every kind (the rest of
# ``test_laws.py`` feeds strings); small max_buckets, so that collapsed stores are
# merged too, and the cells mapping once with its defaults.
QUANTILE_KINDS = [
    KindSpec(
        "quantiles-log",
        QuantileSketch,
        {"relative_accuracy": 0.05, "max_buckets": 6},
        [{"relative_accuracy": 0.04}, {"max_buckets": 7}, {"mapping": "cells"}],
        NUMBER_STREAMS,
    ),
    KindSpec(
        "quantiles-cells",
        QuantileSketch,
        {"relative_accuracy": 0.05, "max_buckets": 6, "mapping": "cells"},
        [{"relative_accuracy": 0.04}, {"max_buckets": 7}, {"mapping": "log"}],
        NUMBER_STREAMS,
    ),
    KindSpec(
        "quantiles-cells-default",
        QuantileSketch,
        {"mapping": "cells"},
        [{"mapping": "log"}, {"relative_accuracy": 0.02}],
        NUMBER_STREAMS,
    ),
]
# Apache DataSketches images: the algebraic laws (their bytes have no envelope of ours);
# precision 8 keeps up to 24 coupons, precision 5 turns into registers at 8.
DATASKETCHES_KINDS = [
    KindSpec("ds-hll", sketches.DataSketchesHLL, {"precision": 8}, [{"precision": 9}]),
    KindSpec("ds-hll-p5", sketches.DataSketchesHLL, {"precision": 5}, [{"precision": 6}]),
    # k = 32: the law streams (up to 60 distinct values) reach estimation mode; a
    # Theta sketch merges with another k (into the smaller), never with another seed
    KindSpec("theta", sketches.ThetaSketch, {"lg_k": 5}, [{"seed": 1}]),
]

LAW_KINDS = KINDS + QUANTILE_KINDS + DATASKETCHES_KINDS


def as_objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array (never 2-D, whatever the items)."""
    return np.fromiter(values, dtype=object, count=len(values))


def reseal(blob: bytes) -> bytes:
    """Recompute the CRC-32 trailer after a deliberate edit of the body."""
    body = blob[:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def sample_sketches(spec: KindSpec) -> list[Any]:
    """Empty, small (sparse encodings) and full (dense encodings) sketches of a kind."""
    return [spec.cls.from_bytes(blob) for blob in _sample_blobs(spec.name)]


@functools.cache
def _sample_blobs(name: str) -> tuple[bytes, ...]:
    spec = next(k for k in KINDS if k.name == name)
    full = np.random.default_rng(7).integers(0, 10**9, size=3000)
    built = [spec.make(), spec.build(["a", "b", 3, 4.5, b"x"]), spec.build(full)]
    return tuple(s.to_bytes() for s in built)
