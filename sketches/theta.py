"""Theta sketch in Apache DataSketches' compact format (Spark SQL ``theta_sketch_*``).

A value's hash is ``h1 >> 1`` (63 bits) of its MurmurHash3_x64_128 with DataSketches'
seed (:mod:`sketches.murmur3`); a hash of 0 is not an item. The sketch holds ``theta``
(an integer, ``2**63 - 1`` meaning "exact") and the sorted distinct hashes below it,
at most ``k = 2**lg_k``: once more than ``k`` distinct hashes were seen it keeps the
``k`` smallest, and ``theta`` is the ``(k + 1)``-th smallest. The estimate is
``count / (theta / (2**63 - 1))``.

Order independence: the state is a function of the *set* of hashes, so any order or
split of the values, merged in any order, gives the same bytes: those of DataSketches'
``theta_union(lg_k)`` of an ``update_theta_sketch(lg_k)`` of the values (whose own
``compact()`` may hold up to about ``2k`` entries, depending on its table's history).
Sketches of different ``lg_k`` merge (as in a DataSketches union) into the smaller.

Bytes, little-endian; serial version 3 (:meth:`ThetaSketch.to_bytes`)::

    byte 0    preLongs: 1 empty or one entry in exact mode, 2 exact, 3 estimating
    byte 1, 2 serial version 3, family 3 (compact); bytes 3-4 unused
    byte 5    flags 0x02 read-only, 0x04 empty, 0x08 compact, 0x10 ordered (we write
              0x1A or 0x1E, as the C++ library; Java adds 0x20 for a single item)
    byte 6-7  16-bit seed hash (Java writes 0 when empty)
    then      preLongs >= 2: uint32 count, 4 unused bytes; preLongs 3: uint64 theta;
              the entries as uint64

Serial version 4 (``to_bytes(compressed=True)``, written by Java and Spark for ordered
sketches with entries, unless one in exact mode): preLongs 1, or 2 with theta; byte 3
the bit width ``b`` of the largest delta between successive sorted entries (the first
from 0); byte 4 the byte length of the count; flags; seed hash; theta (preLongs 2); the
count; the deltas as one big-endian bit stream of ``b`` bits each. Versions 1 and 2
(older Java) are read too, strictly: wrong family or version, bad preLongs, truncation,
trailing bytes, another seed's hash, bad entries raise
:class:`~sketches.errors.SketchFormatError`. The bytes do not hold ``k``: pass the
writer's ``lg_k`` (or none: the sketch it is merged into sets k); more than ``k`` entries
read stay until the next update or merge.

Example:
    >>> import numpy as np
    >>> big = ThetaSketch(lg_k=10).update(np.arange(100_000))
    >>> big.num_retained, big.lower_bound(2) < 100_000 < big.upper_bound(2)
    (1024, True)
    >>> ThetaSketch.from_bytes(big.to_bytes(), lg_k=10) == big
    True
    >>> ThetaSketch(lg_k=10).merge(ThetaSketch.from_bytes(big.to_bytes())) == big
    True
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any, Self

import numpy as np

from sketches._base import Sketch, check_int, iter_grouped, read_only
from sketches._bounds import binomial_bounds
from sketches._columns import Column, iter_columns
from sketches._topk import sorted_unique
from sketches.errors import IncompatibleSketchError, InvalidParameterError, SketchFormatError
from sketches.hashing import check_seed
from sketches.murmur3 import DEFAULT_SEED, murmur3_column, seed_hash

__all__ = ["ThetaSketch", "theta_union", "theta_intersection", "theta_difference",
           "binomial_bounds", "MAX_THETA", "MIN_LG_K", "MAX_LG_K"]

MAX_THETA = (1 << 63) - 1  #: theta in exact mode (Java's ``Long.MAX_VALUE``)
MIN_LG_K, MAX_LG_K = 4, 26  # Spark's range (the C++ library's minimum is 5)
_FAMILY, _BIG_ENDIAN, _EMPTY, _COMPACT, _ORDERED, _SINGLE = 3, 0x01, 0x04, 0x08, 0x10, 0x20
_FLAGS = 0x02 | _COMPACT | _ORDERED  # read-only, compact, ordered
_HEAD, _HEAD_V4 = struct.Struct("<BBBHBH"), struct.Struct("<BBBBBBH")
_SORT_ROWS = 1 << 22  # grouped build: rows gathered between sorts
_PACK_CHUNK = 1 << 16  # entries per bit-packing step (a multiple of 8: byte aligned)
_NO_HASHES = read_only(np.empty(0, dtype=np.uint64))


def _pack(values: np.ndarray, bits: int) -> bytes:
    """``values`` (< 2**bits) as one big-endian bit stream of ``bits`` bits each."""
    out = []
    for a in range(0, values.size, _PACK_CHUNK):
        octets = values[a : a + _PACK_CHUNK].astype(">u8").view(np.uint8).reshape(-1, 8)
        out.append(np.packbits(np.unpackbits(octets, axis=1)[:, 64 - bits :]).tobytes())
    return b"".join(out)


def _unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`_pack`: ``count`` values of ``bits`` bits."""
    out = []
    for a in range(0, count, _PACK_CHUNK):
        n = min(_PACK_CHUNK, count - a)
        raw = np.frombuffer(data, np.uint8, (n * bits + 7) // 8, a // 8 * bits)
        wide = np.zeros((n, 64), dtype=np.uint8)
        wide[:, 64 - bits :] = np.unpackbits(raw)[: n * bits].reshape(n, bits)
        out.append(np.packbits(wide, axis=1).view(">u8").ravel().astype(np.uint64))
    return np.concatenate(out) if out else _NO_HASHES


def _parse(data: Any, seed: int) -> tuple[int, np.ndarray]:
    """``(theta, sorted entries)`` of compact Theta bytes (serial versions 1 to 4)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SketchFormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8:
        raise SketchFormatError(f"truncated Theta sketch: {len(data)} bytes, at least 8 needed")
    pre, version, family, _, flags, stored = _HEAD.unpack_from(data)
    pre &= 0x3F  # Java keeps a resize factor in the top two bits
    if family != _FAMILY:
        raise SketchFormatError(f"family id {family} is not a compact Theta sketch (3)")
    if version not in (1, 2, 3, 4):
        raise SketchFormatError(f"unsupported Theta serial version {version} (reads 1 to 4)")
    if version >= 3 and (flags & _BIG_ENDIAN or not flags & _COMPACT):
        raise SketchFormatError(f"Theta flags 0x{flags:02x}: not a little-endian compact sketch")
    empty = (version == 3 and flags & _EMPTY) or (version == 2 and pre == 1)
    allowed = {1: (3,), 2: (1, 2, 3), 3: (1, 2, 3), 4: (1, 2)}[version]
    if pre not in allowed or (flags & _SINGLE and version == 3 and (pre != 1 or empty)):
        raise SketchFormatError(f"Theta serial version {version} with preLongs {pre}, "
                                f"flags 0x{flags:02x}")
    if version > 1 and not empty and stored != seed_hash(seed):
        raise SketchFormatError(f"Theta seed hash 0x{stored:04x} of the bytes differs from "
                                f"0x{seed_hash(seed):04x} of seed {seed}")
    head = 8 * pre + (data[4] if version == 4 else 0)  # v4: the count follows theta
    if len(data) < head:
        raise SketchFormatError(f"truncated Theta sketch: its preamble needs {head} bytes")
    has_theta = pre == (2 if version == 4 else 3)
    theta = struct.unpack_from("<Q", data, 8 * pre - 8)[0] if has_theta else MAX_THETA
    if empty:
        count, size = 0, 8 * pre
    elif version == 4:
        bits, count = data[3], int.from_bytes(data[8 * pre : head], "little")
        if not 1 <= bits <= 64 or not 1 <= data[4] <= 4 or not count:
            raise SketchFormatError(f"bad Theta v4 header: {count} entries of {bits} bits")
        size = head + (count * bits + 7) // 8
    else:
        count = 1 if pre == 1 else struct.unpack_from("<I", data, 8)[0]
        size = 8 * (pre + count)
    if len(data) != size:
        raise SketchFormatError(f"Theta sketch of {len(data)} bytes, {size} expected "
                                f"(serial version {version}, preLongs {pre}, {count} entries)")
    if empty:
        return MAX_THETA, _NO_HASHES
    if version == 4:
        entries = np.cumsum(_unpack(data[head:], count, data[3]), dtype=np.uint64)
    else:
        entries = np.frombuffer(data, "<u8", count, 8 * pre).astype(np.uint64)
        if not (version == 3 and flags & _ORDERED):
            entries = np.sort(entries)
    if not 0 < theta <= MAX_THETA:
        raise SketchFormatError(f"Theta theta {theta} outside (0, 2**63 - 1]")
    if entries.size and (int(entries[0]) == 0 or int(entries[-1]) >= theta
                         or np.any(entries[1:] <= entries[:-1])):
        raise SketchFormatError("corrupt Theta entries: zero, unordered, repeated or >= theta")
    return int(theta), entries


class ThetaSketch(Sketch):
    """Distinct counting with set operations, DataSketches-compatible bytes.

    Args:
        lg_k: log2 of the nominal entries ``k``, in ``[4, 26]`` (Spark's default is 12):
            exact up to ``k`` distinct values, then a relative error about ``1 / sqrt(k)``.
        seed: DataSketches update seed; sketches of different seeds never combine.

    Example:
        >>> a = ThetaSketch(lg_k=5).update(["x", "y", "", None, "x"])
        >>> a.estimate(), a.num_retained, a.to_bytes()[:2].hex()
        (2.0, 2, '0203')
    """

    def __init__(self, lg_k: int = 12, *, seed: int = DEFAULT_SEED) -> None:
        self._lg_k = check_int("lg_k", lg_k, MIN_LG_K, MAX_LG_K)
        self._seed = check_seed(seed)
        self._theta, self._hashes = MAX_THETA, _NO_HASHES

    @property
    def lg_k(self) -> int:
        """log2 of the nominal number of entries ``k``."""
        return self._lg_k

    @property
    def theta64(self) -> int:
        """The threshold as an integer: hashes below it are kept (``2**63 - 1``: exact)."""
        return self._theta

    @property
    def theta(self) -> float:
        """The sampled fraction of the hash space, ``theta64 / (2**63 - 1)``."""
        return self._theta / float(MAX_THETA)

    @property
    def hashes(self) -> np.ndarray:
        """A read-only view of the retained hashes, increasing (``num_retained`` many)."""
        return read_only(self._hashes)

    @property
    def num_retained(self) -> int:
        """Number of retained hashes."""
        return int(self._hashes.size)

    def params(self) -> dict[str, Any]:
        """``{"lg_k": lg_k, "seed": seed}``."""
        return {"lg_k": self._lg_k, "seed": self._seed}

    def is_empty(self) -> bool:
        """Whether the sketch stands for the empty set (exact, nothing retained)."""
        return self._theta == MAX_THETA and not self._hashes.size

    def is_estimation_mode(self) -> bool:
        """Whether theta is below its maximum (the count is an estimate)."""
        return self._theta < MAX_THETA

    def _state_equal(self, other: Self) -> bool:
        return self._theta == other._theta and np.array_equal(self._hashes, other._hashes)

    def _set(self, theta: int, hashes: np.ndarray) -> Self:
        """Adopt ``theta`` and sorted distinct ``hashes`` (all below it), trimmed to k."""
        k = 1 << self._lg_k
        if hashes.size > k:
            theta, hashes = min(theta, int(hashes[k])), hashes[:k].copy()
        self._theta, self._hashes = theta, hashes
        return self

    def _hashed(self, values: Any) -> Iterator[tuple[int, Column, np.ndarray]]:
        """DataSketches' item hashes ``h1 >> 1``; rows that are not items hash to 0."""
        for offset, column in iter_columns(values):
            h1, _, keep = murmur3_column(column, self._seed)
            hashes = h1 >> np.uint64(1)
            yield offset, column, hashes if keep is None else np.where(keep, hashes, 0)

    def _update_hashes(self, hashes: np.ndarray) -> None:
        hashes = hashes[(hashes != 0) & (hashes < np.uint64(self._theta))]
        if hashes.size:
            self._set(self._theta, sorted_unique(np.concatenate([self._hashes, hashes])))

    def merge(self, other: Self) -> Self:
        """Union in place: the smaller theta, the k smallest hashes below it, the smaller
        ``lg_k``. Raises IncompatibleSketchError unless ``other`` has the same seed."""
        _check_seeds([self, other])
        self._lg_k = min(self._lg_k, other._lg_k)
        theta = min(self._theta, other._theta)
        both = sorted_unique(np.concatenate([self._hashes, other._hashes]))
        return self._set(theta, both[: np.searchsorted(both, np.uint64(theta))])

    def estimate(self) -> float:
        """Estimated number of distinct values: ``count / theta`` (exact count if exact)."""
        return self._hashes.size / self.theta

    def lower_bound(self, num_std: int = 2) -> float:
        """Bound at ``num_std`` (1 to 3) sigmas (:func:`binomial_bounds`); exact: count."""
        return self._bounds(num_std)[0]

    def upper_bound(self, num_std: int = 2) -> float:
        """Bound at ``num_std`` (1 to 3) sigmas (:func:`binomial_bounds`); exact: count."""
        return self._bounds(num_std)[1]

    def _bounds(self, num_std: float) -> tuple[float, float]:
        if isinstance(num_std, float) and num_std.is_integer():  # 2.0, as other kinds take
            num_std = int(num_std)
        num_std = check_int("num_std", num_std, 1, 3)
        if not self.is_estimation_mode():
            return float(self._hashes.size), float(self._hashes.size)
        return binomial_bounds(self._hashes.size, self.theta, num_std)

    def relative_error(self) -> float:
        """Binomial relative standard error ``sqrt((1 - theta) / count)`` (about
        ``1 / sqrt(k)`` past ``k`` values); 0 if exact, infinite if estimating none."""
        if not self.is_estimation_mode():
            return 0.0
        return math.sqrt((1.0 - self.theta) / self._hashes.size) if self._hashes.size else math.inf

    def _summary(self) -> str:
        return f"estimate={self.estimate():.1f}"

    def to_bytes(self, compressed: bool = False) -> bytes:
        """DataSketches compact ordered bytes: serial version 3, or with ``compressed``
        serial version 4 when it applies (as ``serialize(compress=True)`` and Spark).

        Example:
            >>> ThetaSketch().update([1]).to_bytes().hex()
            '01030300001acc9315f97dcbbd86a105'
        """
        n, estimating, sh = self._hashes.size, self.is_estimation_mode(), seed_hash(self._seed)
        if compressed and n and (estimating or n > 1):
            deltas = np.diff(self._hashes, prepend=np.uint64(0))
            bits = int(np.bitwise_or.reduce(deltas)).bit_length()
            width = (n.bit_length() + 7) // 8
            head = _HEAD_V4.pack(1 + estimating, 4, _FAMILY, bits, width, _FLAGS, sh)
            theta = struct.pack("<Q", self._theta) if estimating else b""
            return head + theta + n.to_bytes(width, "little") + _pack(deltas, bits)
        if self.is_empty():
            return _HEAD.pack(1, 3, _FAMILY, 0, _FLAGS | _EMPTY, sh)
        pre = 3 if estimating else 1 if n == 1 else 2
        count = struct.pack("<II", n, 0) if pre > 1 else b""
        theta = struct.pack("<Q", self._theta) if estimating else b""
        entries = self._hashes.astype("<u8").tobytes()
        return _HEAD.pack(pre, 3, _FAMILY, 0, _FLAGS, sh) + count + theta + entries

    def __eq__(self, other: object) -> bool:
        """Same seed, theta and hashes: what the bytes hold (not lg_k, which they lack)."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ThetaSketch)
        return self._seed == other._seed and self._state_equal(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    @classmethod
    def _union_many(cls, sketches: list[Self]) -> Self:
        return theta_union(*sketches)  # type: ignore[return-value]

    def _check_mergeable(self, other: Any) -> None:
        _check_seeds([self, other])  # lg_k may differ: a merge takes the smaller

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, lg_k: int = MAX_LG_K,
                   seed: int = DEFAULT_SEED) -> Self:
        """Read compact Theta bytes of any writer (serial version 1 to 4, ordered or not)
        with the writer's ``lg_k`` (not in the bytes; by default the largest, so that the
        sketch merged into decides k) and ``seed`` (its hash is checked).
        Raises SketchFormatError for anything but valid compact Theta sketch bytes.

        Example:
            >>> spark = bytes.fromhex("01030300003ACC9315F97DCBBD86A105")  # Java flags
            >>> ThetaSketch.from_bytes(spark).estimate()
            1.0
        """
        out = cls(lg_k, seed=seed)
        out._theta, out._hashes = _parse(data, out._seed)
        return out

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group: the k + 1 smallest distinct hashes of each group, from
        sorts of (group, hash) pairs; rows above a full group's (k + 1)-th are dropped.

        Example:
            >>> parts = ThetaSketch.from_groups([0, 1, 0], ["a", "b", "c"], 2, lg_k=5)
            >>> [p.estimate() for p in parts]
            [2.0, 1.0]
        """
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        keep, rows = (1 << template._lg_k) + 1, 0
        groups, hashes = [np.empty(0, dtype=np.int64)], [_NO_HASHES]
        limit = np.full(n_groups, np.iinfo(np.uint64).max, dtype=np.uint64)
        for group, chunk, _, _ in chunks:
            items = (chunk != 0) & (chunk <= limit[group])
            groups.append(group[items])
            hashes.append(chunk[items])
            rows += int(items.sum())
            if rows > _SORT_ROWS:
                kept = _smallest_per_group(groups, hashes, limit, keep)
                groups, hashes, rows = [kept[0]], [kept[1]], 0
        group, found = _smallest_per_group(groups, hashes, limit, keep)
        bounds = np.searchsorted(group, np.arange(n_groups + 1)).tolist()
        return [cls(**params)._set(MAX_THETA, found[bounds[g] : bounds[g + 1]].copy())
                for g in range(n_groups)]


def _smallest_per_group(groups: list[np.ndarray], hashes: list[np.ndarray], limit: np.ndarray,
                        keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` smallest distinct hashes of each group, sorted by (group, hash);
    ``limit`` becomes the largest kept hash of the groups that have ``keep``."""
    group, found = np.concatenate(groups), np.concatenate(hashes)
    order = np.argsort(found)  # then a stable (radix, for small codes) sort by group
    small = group[order].astype(np.uint16 if limit.size <= 1 << 16 else np.int64)
    order = order[np.argsort(small, kind="stable")]
    group, found = group[order], found[order]
    new = np.r_[True, (group[1:] != group[:-1]) | (found[1:] != found[:-1])][: group.size]
    group, found = group[new], found[new]
    rank = np.arange(group.size) - np.searchsorted(group, np.arange(limit.size))[group]
    group, found = group[rank < keep], found[rank < keep]
    ends = np.cumsum(np.bincount(group, minlength=limit.size))
    full = np.flatnonzero(np.diff(ends, prepend=0) == keep)
    limit[full] = found[ends[full] - 1]
    return group, found


def _check_seeds(sketches: tuple[Any, ...] | list[Any]) -> None:
    """Raise IncompatibleSketchError unless all are ThetaSketches of one seed."""
    first = sketches[0]
    for other in sketches:
        if not (isinstance(first, ThetaSketch) and isinstance(other, ThetaSketch)
                and other.seed == first.seed):
            left = first.params() if isinstance(first, Sketch) else {}
            right = other.params() if isinstance(other, Sketch) else {}
            raise IncompatibleSketchError(type(first).__name__, left, type(other).__name__, right)


def _result(sketches: Any, theta: int, hashes: np.ndarray) -> ThetaSketch:
    out = ThetaSketch(min(s.lg_k for s in sketches), seed=sketches[0].seed)
    out._theta, out._hashes = theta, hashes.astype(np.uint64)
    return out


def _below(hashes: np.ndarray, theta: int) -> np.ndarray:
    return hashes[: np.searchsorted(hashes, np.uint64(theta))]


def theta_union(*sketches: ThetaSketch) -> ThetaSketch:
    """A new sketch of the union: the smallest theta, the k smallest hashes below it
    (``k`` of the smallest ``lg_k``); the same as merging them one by one in any order.
    Raises InvalidParameterError with no sketch, IncompatibleSketchError if seeds differ.

    Example:
        >>> a = ThetaSketch(lg_k=5).update([1, 2, 3])
        >>> theta_union(a, ThetaSketch(lg_k=5).update([3, 4])).estimate()
        4.0
    """
    if not sketches:
        raise InvalidParameterError("theta_union() needs at least one sketch")
    _check_seeds(sketches)
    theta = min(s.theta64 for s in sketches)
    merged = np.concatenate([_below(s.hashes, theta) for s in sketches])
    k = 1 << min(s.lg_k for s in sketches)
    if merged.size > 4 * (k + 1):  # many: the k + 1 smallest first, in linear time
        cut = np.partition(merged, k)[k]
        some = sorted_unique(merged[merged <= cut])
        # more than k distinct hashes up to the cut: the k + 1 smallest are among them
        merged = some if some.size > k else sorted_unique(merged)
    else:
        merged = sorted_unique(merged)
    return _result(sketches, theta, _NO_HASHES)._set(theta, merged.astype(np.uint64))


def theta_intersection(first: ThetaSketch, *others: ThetaSketch) -> ThetaSketch:
    """A new sketch of the intersection: the smallest theta, the hashes below it held
    by every sketch (DataSketches' ``theta_intersection``). Empty if any input is.

    Example:
        >>> a = ThetaSketch(lg_k=5).update([1, 2, 3])
        >>> theta_intersection(a, ThetaSketch(lg_k=5).update([2, 3, 4])).estimate()
        2.0
    """
    sketches = (first, *others)
    _check_seeds(sketches)
    if any(s.is_empty() for s in sketches):
        return _result(sketches, MAX_THETA, _NO_HASHES)
    theta = min(s.theta64 for s in sketches)
    common = _below(first.hashes, theta)
    for other in others:
        common = np.intersect1d(common, other.hashes, assume_unique=True)
    return _result(sketches, theta, common)


def theta_difference(a: ThetaSketch, b: ThetaSketch) -> ThetaSketch:
    """A new sketch of ``a`` and not ``b``: the smaller theta, the hashes of ``a`` below
    it not in ``b`` (DataSketches' ``theta_a_not_b``); its ``lg_k`` is ``a``'s.

    Example:
        >>> a = ThetaSketch(lg_k=5).update([1, 2, 3])
        >>> theta_difference(a, ThetaSketch(lg_k=5).update([2, 3, 4])).estimate()
        1.0
    """
    _check_seeds((a, b))
    if a.is_empty() or b.is_empty():
        return _result((a,), a.theta64, a.hashes.copy())
    theta = min(a.theta64, b.theta64)
    rest = np.setdiff1d(_below(a.hashes, theta), b.hashes, assume_unique=True)
    return _result((a,), theta, rest)
