"""Mergeable probabilistic sketches over one stable, vectorised 64-bit hash.

Every sketch has the same surface: vectorised ``update(values)`` (NumPy, Arrow,
pandas, lists; nulls skipped), in-place ``merge(other)`` (associative, commutative,
the empty sketch is the identity), ``copy()``, ``is_empty()``, ``==``, deterministic
self-describing ``to_bytes()`` / ``from_bytes()``, a vectorised grouped build
``from_groups(codes, values, n_groups, **params)`` and error bounds as methods.

Example:
    >>> import sketches
    >>> a = sketches.HyperLogLog(precision=12).update(["a", "b", "c"])
    >>> b = sketches.HyperLogLog(precision=12).update(["c", "d"])
    >>> round(sketches.union(a, b).estimate())
    4
    >>> sketches.from_bytes(a.to_bytes()) == a
    True
"""

from __future__ import annotations

from typing import Any, TypeVar

from sketches._base import Sketch
from sketches._format import KIND_BLOOM, KIND_CMS, KIND_HLL, KIND_MINHASH, MAGIC, peek_kind
from sketches.bloom import BloomFilter
from sketches.cms import CountMinSketch
from sketches.ds_hll import DataSketchesHLL
from sketches.errors import (
    IncompatibleSketchError,
    InvalidParameterError,
    SketchError,
    SketchFormatError,
    UnsupportedInputError,
)
from sketches.hashing import hash64
from sketches.hll import HyperLogLog
from sketches.minhash import MinHashSketch
from sketches.quantiles import QuantileSketch
from sketches.theta import ThetaSketch

__all__ = [
    "hash64",
    "HyperLogLog",
    "DataSketchesHLL",
    "CountMinSketch",
    "BloomFilter",
    "MinHashSketch",
    "QuantileSketch",
    "ThetaSketch",
    "Sketch",
    "union",
    "from_bytes",
    "SketchError",
    "IncompatibleSketchError",
    "SketchFormatError",
    "InvalidParameterError",
    "UnsupportedInputError",
]

_S = TypeVar("_S", bound=Sketch)

_CLASSES: dict[int, type[Sketch]] = {
    KIND_HLL: HyperLogLog,
    KIND_CMS: CountMinSketch,
    KIND_BLOOM: BloomFilter,
    KIND_MINHASH: MinHashSketch,
    QuantileSketch.KIND: QuantileSketch,
}


def union(*sketches: _S) -> _S:
    """A new sketch: the merge of all arguments (which are left unchanged).

    Raises:
        InvalidParameterError: with no arguments.
        IncompatibleSketchError: if kinds or parameters differ.

    Example:
        >>> a = CountMinSketch(width=64, depth=2).update(["x"])
        >>> union(a, a.copy()).estimate("x")
        2
    """
    if not sketches:
        raise InvalidParameterError("union() needs at least one sketch")
    first = sketches[0]
    if not isinstance(first, Sketch):
        raise IncompatibleSketchError(type(first).__name__, {}, type(first).__name__, {})
    return type(first)._union_many(list(sketches))


#: DataSketches family ids (byte 2 of their images) and the classes that read them
_DATASKETCHES: dict[int, type[Sketch]] = {7: DataSketchesHLL, 3: ThetaSketch}


def from_bytes(data: Any) -> Sketch:
    """Deserialise any sketch kind, dispatching on the kind code in the header, or on
    the family id of an Apache DataSketches image (HLL; Theta).

    Raises:
        SketchFormatError: if the bytes are not a valid sketch.

    Example:
        >>> bf = BloomFilter(capacity=100).update([1, 2])
        >>> type(from_bytes(bf.to_bytes())).__name__
        'BloomFilter'
    """
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        if len(view) >= 3 and bytes(view[:3]) != MAGIC and view[2] in _DATASKETCHES:
            return _DATASKETCHES[view[2]].from_bytes(view)
    return _CLASSES[peek_kind(data)].from_bytes(data)
