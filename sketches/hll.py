"""HyperLogLog distinct counting with Ertl's improved estimator.

``m = 2**precision`` uint8 registers. A value's 64-bit hash ``h`` picks register
``h >> (64 - p)`` and offers ``rho`` = 1 + the number of leading zeros of the remaining
``64 - p`` bits (at most ``65 - p``); the register keeps the maximum. Merge is the
elementwise maximum, so it is associative, commutative and exact.

Small sketches are sparse (in memory and in bytes): while at most ``m / 4`` entries
are held, the sketch keeps sorted uint32 entries ``index25 << 6 | rho25`` at the
sparse precision 25 (HyperLogLog++'s idea: ``h >> 39`` and ``rho`` of the remaining
39 bits, one entry per index with the largest ``rho``), 4 bytes each against the
``m`` bytes of the registers. Entries convert exactly into registers of any precision
up to 25, so the state is a function of the set of values alone: sparse while that set
gives at most ``m / 4`` entries, registers beyond. Merges of sparse and dense sketches
in any mix give the bytes of a one-pass build. A sparse estimate is Ertl's estimator
at precision 25, whose error at these cardinalities is far below the registers'
(a few in 10,000 at most).

The estimate is the "improved raw estimator" of O. Ertl, *New cardinality estimation
algorithms for HyperLogLog sketches* (2017): it works on the histogram of register
values, needs no bias tables and no switch-over between linear counting and the raw
estimate, and stays within the usual ``1.04 / sqrt(m)`` relative standard error from
0 to far beyond 1e9 distinct values (64-bit hashes: no large-range correction).

Serialised payload (after the common header): ``precision`` (uint8), ``encoding``
(uint8), then: 2 (sparse mode, format version 2): a uint32 count and that many uint32
entries in increasing order; registers: 0, ``m`` register bytes, or 1, a uint32 count
and that many uint32 ``index << 8 | value`` in increasing index order, used exactly
when smaller (``4 * nonzero + 4 < m``). Version 1 bytes (encodings 0 and 1 only) load
as registers, or as the empty sketch.

Example:
    >>> import numpy as np
    >>> hll = HyperLogLog(precision=12).update(np.arange(10_000))
    >>> abs(hll.estimate() / 10_000 - 1) < 4 * hll.relative_error()
    True
    >>> other = HyperLogLog(precision=12).update(np.arange(5_000, 20_000))
    >>> merged = hll.copy().merge(other)
    >>> abs(merged.estimate() / 20_000 - 1) < 4 * merged.relative_error()
    True
    >>> HyperLogLog.from_bytes(merged.to_bytes()) == merged
    True
"""

from __future__ import annotations

import math
import struct
from typing import Any, Self

import numpy as np

from sketches._base import check_int, iter_grouped, read_only
from sketches._format import KIND_HLL, Reader, seal
from sketches._hll_sparse import (
    RHO_BITS,
    SPARSE_PRECISION,
    SPARSE_Q,
    GroupedBuild,
    dedupe,
    entries_of,
    entry_registers,
    sparse_limit,
    split,
)
from sketches._twomode import TwoModeSketch
from sketches.errors import SketchFormatError
from sketches.hashing import check_seed

__all__ = ["HyperLogLog", "estimate_histogram", "MIN_PRECISION", "MAX_PRECISION",
           "SPARSE_PRECISION", "sparse_limit"]

MIN_PRECISION = 4
MAX_PRECISION = 18
_ALPHA_INF = 1.0 / (2.0 * math.log(2.0))
_CHUNK = 1 << 16
_NO_ENTRIES = np.empty(0, dtype=np.uint32)
_NO_ENTRIES.flags.writeable = False


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_old:
            return z / 3.0


def estimate_from_registers(registers: np.ndarray, precision: int) -> float:
    """Ertl's improved raw estimate from a register array.

    Example:
        >>> estimate_from_registers(np.zeros(16, dtype=np.uint8), 4)
        0.0
    """
    counts = np.bincount(registers, minlength=66 - precision)
    return estimate_histogram(counts.astype(np.float64), precision)


def estimate_histogram(counts: np.ndarray, precision: int, q: int | None = None) -> float:
    """Ertl's estimate from ``counts[k]`` = number of registers equal to ``k``.

    ``q`` is the largest value a register can take minus one: ``64 - precision`` when
    the value counts the zeros of the hash bits left after the index (the default);
    62 for DataSketches' registers, whose value comes from a 64-bit word of its own,
    capped at 63.

    Example:
        >>> estimate_histogram(np.array([16.0] + [0.0] * 61), 4)
        0.0
    """
    m = float(1 << precision)
    q = 64 - precision if q is None else q
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return float(_ALPHA_INF * m * m / z)


class HyperLogLog(TwoModeSketch):
    """Distinct-count sketch with ``2**precision`` one-byte registers, sparse while small.

    Args:
        precision: Number of index bits ``p`` in ``[4, 18]``; memory ``2**p`` bytes once
            dense, relative standard error ``1.04 / sqrt(2**p)`` (p=14: 16 KiB, 0.81 %).
            Until more than ``2**p / 4`` sparse entries are held the sketch is sparse:
            4 bytes per entry and a far smaller error.
        seed: Hash seed; only sketches with equal seeds merge.

    Raises:
        InvalidParameterError: (a ``ValueError``) for a precision out of range.

    Example:
        >>> hll = HyperLogLog(precision=10).update(["a", "b", "a", None])
        >>> round(hll.estimate()), hll.is_sparse
        (2, True)
    """

    KIND = KIND_HLL
    _SMALL, _DENSE, _COMBINE = "_sparse", "_registers", np.maximum

    def __init__(self, precision: int = 14, *, seed: int = 0) -> None:
        self._precision = check_int("precision", precision, MIN_PRECISION, MAX_PRECISION)
        self._seed = check_seed(seed)
        self._sparse: np.ndarray | None = _NO_ENTRIES  # sorted entries while sparse
        self._registers: np.ndarray | None = None  # once dense

    # ------------------------------------------------------------ basics

    @property
    def precision(self) -> int:
        """Number of index bits ``p``."""
        return self._precision

    @property
    def is_sparse(self) -> bool:
        """Whether the sketch holds sparse entries rather than registers."""
        return self._registers is None

    @property
    def registers(self) -> np.ndarray:
        """A read-only view of the registers (built from the entries while sparse)."""
        return read_only(self._dense_registers())

    def params(self) -> dict[str, Any]:
        """``{"precision": p, "seed": s}``."""
        return {"precision": self._precision, "seed": self._seed}

    def _dense_registers(self) -> np.ndarray:
        if self._registers is not None:
            return self._registers
        registers = np.zeros(1 << self._precision, dtype=np.uint8)
        assert self._sparse is not None
        index, rho = entry_registers(self._sparse, self._precision)
        np.maximum.at(registers, index, rho)
        return registers

    def _densify(self) -> None:
        self._set_dense(self._dense_registers())

    def _add_items(self, entries: np.ndarray) -> None:
        """Add sparse entries to this sketch, in either mode."""
        if self._registers is None:
            assert self._sparse is not None
            self._sparse = dedupe(np.concatenate((self._sparse, entries)))
            if self._sparse.size > sparse_limit(self._precision):
                self._densify()
        else:
            index, rho = entry_registers(entries, self._precision)
            np.maximum.at(self._registers, index, rho)

    def _update_hashes(self, hashes: np.ndarray) -> None:
        start = 0
        step = max(sparse_limit(self._precision) + 1, 1 << 12)
        while self._registers is None and start < hashes.size:
            self._add_items(entries_of(hashes[start : start + step]))
            start += step
        if self._registers is None:
            return
        for a in range(start, hashes.size, _CHUNK):
            index, rho = split(hashes[a : a + _CHUNK], self._precision)
            np.maximum.at(self._registers, index, rho)

    def merge(self, other: Self) -> Self:
        """Union: entries merge while sparse, registers take the elementwise maximum.

        Raises:
            IncompatibleSketchError: if ``other`` is not a HyperLogLog with equal
                precision and seed.
        """
        return self._merge_modes(other)

    # ------------------------------------------------------------ estimates

    def estimate(self) -> float:
        """Estimated number of distinct non-null values."""
        if self._registers is None:
            assert self._sparse is not None
            rho = self._sparse & np.uint32((1 << RHO_BITS) - 1)
            counts = np.bincount(rho, minlength=SPARSE_Q + 2).astype(np.float64)
            counts[0] = float((1 << SPARSE_PRECISION) - self._sparse.size)
            return estimate_histogram(counts, SPARSE_PRECISION)
        return estimate_from_registers(self._registers, self._precision)

    def relative_error(self) -> float:
        """Relative standard error ``1.04 / sqrt(m)`` of the estimate.

        A bound at every cardinality: sparse sketches do far better, and their
        :meth:`lower_bound` and :meth:`upper_bound` use their own, smaller error.
        """
        return 1.04 / math.sqrt(1 << self._precision)

    def _sigma(self) -> float:
        precision = SPARSE_PRECISION if self._registers is None else self._precision
        return 1.04 / math.sqrt(1 << precision)

    def lower_bound(self, k: float = 2.0) -> float:
        """``estimate - k * sigma``, never below the number of non-zero registers.

        Every non-zero register (or sparse entry) saw at least one distinct value, so
        that count is a hard lower bound. ``sigma`` is ``1.04 / sqrt(2**25)`` of the
        estimate while sparse, :meth:`relative_error` once dense.
        """
        return self.estimate_with_bounds(k)[1]

    def upper_bound(self, k: float = 2.0) -> float:
        """``estimate + k * sigma`` (``sigma`` as in :meth:`lower_bound`)."""
        return self.estimate_with_bounds(k)[2]

    def estimate_with_bounds(self, k: float = 2.0) -> tuple[float, float, float]:
        """(:meth:`estimate`, :meth:`lower_bound`, :meth:`upper_bound`), the estimate
        computed once.

        >>> h = HyperLogLog(precision=12).update(["a", "b", "c"])
        >>> est, low, high = h.estimate_with_bounds()
        >>> low <= round(est) == 3 <= high
        True
        """
        est = self.estimate()
        if self._registers is None:
            assert self._sparse is not None
            floor = float(self._sparse.size)
        else:
            floor = float(np.count_nonzero(self._registers))
        sigma = self._sigma()
        return est, min(est, max(est * (1.0 - k * sigma), floor, 0.0)), est * (1.0 + k * sigma)

    def _summary(self) -> str:
        return f"estimate={self.estimate():.1f}"

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise; equal states give equal bytes."""
        if self._registers is None:
            assert self._sparse is not None
            return seal(
                KIND_HLL,
                self._seed,
                bytes([self._precision, 2]),
                struct.pack("<I", self._sparse.size),
                self._sparse.astype("<u4").tobytes(),
            )
        m = self._registers.size
        nonzero = np.flatnonzero(self._registers)
        if 4 * nonzero.size + 4 < m:
            entries = (nonzero.astype(np.uint32) << np.uint32(8)) | self._registers[nonzero]
            return seal(
                KIND_HLL,
                self._seed,
                bytes([self._precision, 1]),
                struct.pack("<I", nonzero.size),
                entries.astype("<u4").tobytes(),
            )
        return seal(KIND_HLL, self._seed, bytes([self._precision, 0]), self._registers.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes` (format version 1 or 2).

        Raises:
            SketchFormatError: for anything but a valid, canonical HyperLogLog encoding.
        """
        reader, seed = Reader.open(data, KIND_HLL)
        precision, encoding = reader.unpack("<BB")
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise SketchFormatError(f"HyperLogLog precision {precision} out of range")
        out = cls(precision, seed=seed)
        m = 1 << precision
        max_rho = 65 - precision
        if encoding == 2 and reader.version >= 2:
            (count,) = reader.unpack("<I", "sparse count")
            if count > sparse_limit(precision):
                raise SketchFormatError("non-canonical HyperLogLog bytes: too many sparse entries")
            entries = reader.array("<u4", count, "sparse entries")
            reader.finish()
            index = entries >> np.uint32(RHO_BITS)
            rho = entries & np.uint32((1 << RHO_BITS) - 1)
            if count and (
                int(index[-1]) >= 1 << SPARSE_PRECISION
                or np.any(np.diff(index.astype(np.int64)) <= 0)
                or int(rho.min()) == 0
                or int(rho.max()) > SPARSE_Q + 1
            ):
                raise SketchFormatError("corrupt sparse HyperLogLog entries")
            out._sparse = entries
            return out
        if encoding == 0:
            registers = reader.array("<u1", m, "registers")
            if 4 * np.count_nonzero(registers) + 4 < m:
                raise SketchFormatError("non-canonical HyperLogLog bytes: dense but sparse")
        elif encoding == 1:
            (count,) = reader.unpack("<I", "sparse count")
            if 4 * count + 4 >= m:
                raise SketchFormatError("non-canonical HyperLogLog bytes: sparse but dense")
            entries = reader.array("<u4", count, "sparse registers")
            index = (entries >> np.uint32(8)).astype(np.intp)
            values = (entries & np.uint32(0xFF)).astype(np.uint8)
            if count and (
                int(index[-1]) >= m or np.any(np.diff(index) <= 0) or int(values.min()) == 0
            ):
                raise SketchFormatError("corrupt sparse HyperLogLog registers")
            registers = np.zeros(m, dtype=np.uint8)
            registers[index] = values
        else:
            raise SketchFormatError(f"unknown HyperLogLog encoding {encoding}")
        reader.finish()
        if registers.size and int(registers.max()) > max_rho:
            raise SketchFormatError(f"HyperLogLog register above {max_rho}")
        if registers.any():
            out._registers = registers
            out._sparse = None
        elif reader.version >= 2:  # version 1 wrote the empty sketch as empty registers
            raise SketchFormatError("non-canonical HyperLogLog bytes: empty registers")
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group from sorts of ``(group, entry)`` keys: O(rows + groups).

        Keys are deduplicated in batches that grow with the kept keys (so each row is
        sorted a bounded number of times); a group found past :func:`sparse_limit`
        entries moves to registers, and its later rows go there directly. Sketch ``i``
        is byte-identical to ``HyperLogLog(**params).update(values[codes == i])``.

        Example:
            >>> [s.is_empty() for s in HyperLogLog.from_groups([1, 1], ["a", "b"], 3)]
            [True, False, True]
        """
        template, slot, dense, bounds, entries = cls._grouped(codes, values, n_groups, params)
        return cls._from_parts(template, slot.tolist(), dense, bounds.tolist(), entries)

    @classmethod
    def group_bytes(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[bytes]:
        """``[s.to_bytes() for s in from_groups(...)]``, the sparse sketches written all
        at once without building them."""
        template, slot, dense, bounds, entries = cls._grouped(codes, values, n_groups, params)
        # the sparse form: header, precision, encoding 2, then the count and entries
        return cls._group_bytes(template, 15, entries, slot, dense, bounds)

    @classmethod
    def _grouped(cls, codes: Any, values: Any, n_groups: int, params: dict[str, Any]
                 ) -> tuple[Self, np.ndarray, Any, np.ndarray, np.ndarray]:
        """The grouped build: sorted sparse entries per group (``bounds``), and the
        registers of the groups past the sparse limit (row ``slot[g]`` of ``dense``)."""
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        build = GroupedBuild(template._precision, n_groups)
        for group, hashes, _, _ in chunks:
            for a in range(0, hashes.size, _CHUNK):
                build.add(group[a : a + _CHUNK], hashes[a : a + _CHUNK])
        build.compact()
        keys = build.keys
        group_of = (keys >> np.uint64(32)).astype(np.int64)
        bounds = np.searchsorted(group_of, np.arange(n_groups + 1))
        return template, build.slot, build.dense, bounds, keys.astype(np.uint32)
