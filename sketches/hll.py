"""HyperLogLog distinct counting with Ertl's improved estimator.

``m = 2**precision`` uint8 registers. A value's 64-bit hash ``h`` picks register
``h >> (64 - p)`` and offers ``rho`` = 1 + the number of leading zeros of the remaining
``64 - p`` bits (at most ``65 - p``); the register keeps the maximum. Merge is the
elementwise maximum, so it is associative, commutative and exact.

The estimate is the "improved raw estimator" of O. Ertl, *New cardinality estimation
algorithms for HyperLogLog sketches* (2017): it works on the histogram of register
values, needs no bias tables and no switch-over between linear counting and the raw
estimate, and stays within the usual ``1.04 / sqrt(m)`` relative standard error from
0 to far beyond 1e9 distinct values (64-bit hashes: no large-range correction).

Serialised payload (after the common header): ``precision`` (uint8), ``encoding``
(uint8; 0 dense, 1 sparse), then either ``m`` register bytes (dense) or a uint32 count
followed by that many uint32 entries ``index << 8 | value`` in increasing index order
(sparse). Sparse is used exactly when it is smaller (``4 * nonzero + 4 < m``).

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

import functools
import math
import struct
from typing import Any, Self

import numpy as np

from sketches._base import Sketch, check_int, iter_grouped
from sketches._format import KIND_HLL, Reader, seal
from sketches.errors import InvalidParameterError, SketchFormatError
from sketches.hashing import check_seed

__all__ = ["HyperLogLog", "MIN_PRECISION", "MAX_PRECISION"]

MIN_PRECISION = 4
MAX_PRECISION = 18
_ALPHA_INF = 1.0 / (2.0 * math.log(2.0))
_CHUNK = 1 << 16


@functools.cache
def _rho_table() -> np.ndarray:
    """``table[t]`` = 1 + leading zeros of the 16-bit value ``t`` (``table[0] = 0``)."""
    bit_length = np.frexp(np.arange(1 << 16, dtype=np.float64))[1]  # exact for integers
    table = (17 - bit_length).astype(np.uint8)
    table[0] = 0
    return table


def _split(hashes: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """Register index (intp) and rho (uint8) of each hash; exact for every input."""
    index = np.right_shift(hashes, np.uint64(64 - precision)).view(np.int64)
    top = np.left_shift(hashes, np.uint64(precision))
    np.right_shift(top, np.uint64(48), out=top)
    rho = np.take(_rho_table(), top.view(np.int64))
    if rho.all():
        return index, rho
    zero = np.flatnonzero(rho == 0)  # top 16 bits of the rest are zero: rare, do it exactly
    if zero.size:
        w = (hashes[zero] << np.uint64(precision)) | np.uint64(1 << (precision - 1))  # cap
        bit_length = np.frexp(w.astype(np.float64))[1]  # exact: w < 2**48
        rho[zero] = (65 - bit_length).astype(np.uint8)
    return index, rho


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
    m = float(1 << precision)
    q = 64 - precision
    counts = np.bincount(registers, minlength=q + 2).astype(np.float64)
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return float(_ALPHA_INF * m * m / z)


class HyperLogLog(Sketch):
    """Distinct-count sketch with ``2**precision`` one-byte registers.

    Args:
        precision: Number of index bits ``p`` in ``[4, 18]``; memory ``2**p`` bytes,
            relative standard error ``1.04 / sqrt(2**p)`` (p=14: 16 KiB, 0.81 %).
        seed: Hash seed; only sketches with equal seeds merge.

    Raises:
        InvalidParameterError: (a ``ValueError``) for a precision out of range.

    Example:
        >>> round(HyperLogLog(precision=10).update(["a", "b", "a", None]).estimate())
        2
    """

    KIND = KIND_HLL

    def __init__(self, precision: int = 14, *, seed: int = 0) -> None:
        self._precision = check_int("precision", precision, MIN_PRECISION, MAX_PRECISION)
        self._seed = check_seed(seed)
        self._registers = np.zeros(1 << self._precision, dtype=np.uint8)

    # ------------------------------------------------------------ basics

    @property
    def precision(self) -> int:
        """Number of index bits ``p``."""
        return self._precision

    @property
    def registers(self) -> np.ndarray:
        """A read-only view of the registers."""
        view = self._registers.view()
        view.flags.writeable = False
        return view

    def params(self) -> dict[str, Any]:
        """``{"precision": p, "seed": s}``."""
        return {"precision": self._precision, "seed": self._seed}

    def _update_hashes(self, hashes: np.ndarray) -> None:
        for a in range(0, hashes.size, _CHUNK):
            index, rho = _split(hashes[a : a + _CHUNK], self._precision)
            np.maximum.at(self._registers, index, rho)

    def _state_equal(self, other: Self) -> bool:
        return bool(np.array_equal(self._registers, other._registers))

    def is_empty(self) -> bool:
        """Whether every register is zero."""
        return not self._registers.any()

    def merge(self, other: Self) -> Self:
        """Elementwise maximum of the registers (in place).

        Raises:
            IncompatibleSketchError: if ``other`` is not a HyperLogLog with equal
                precision and seed.
        """
        self._check_mergeable(other)
        np.maximum(self._registers, other._registers, out=self._registers)
        return self

    # ------------------------------------------------------------ estimates

    def estimate(self) -> float:
        """Estimated number of distinct non-null values."""
        return estimate_from_registers(self._registers, self._precision)

    def relative_error(self) -> float:
        """Relative standard error ``1.04 / sqrt(m)`` of the estimate."""
        return 1.04 / math.sqrt(1 << self._precision)

    def lower_bound(self, k: float = 2.0) -> float:
        """``estimate - k * sigma``, never below the number of non-zero registers.

        Every non-zero register saw at least one distinct value, so that count is a hard
        lower bound.
        """
        est = self.estimate()
        floor = float(np.count_nonzero(self._registers))
        return min(est, max(est * (1.0 - k * self.relative_error()), floor, 0.0))

    def upper_bound(self, k: float = 2.0) -> float:
        """``estimate + k * sigma`` with ``sigma = relative_error() * estimate``."""
        return self.estimate() * (1.0 + k * self.relative_error())

    def _summary(self) -> str:
        return f"estimate={self.estimate():.1f}"

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise (sparse when that is smaller); equal states give equal bytes."""
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
        """Read bytes written by :meth:`to_bytes`.

        Raises:
            SketchFormatError: for anything but a valid, canonical HyperLogLog encoding.
        """
        reader, seed = Reader.open(data, KIND_HLL)
        precision, encoding = reader.unpack("<BB")
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise SketchFormatError(f"HyperLogLog precision {precision} out of range")
        m = 1 << precision
        max_rho = 65 - precision
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
        try:
            out = cls(precision, seed=seed)
        except InvalidParameterError as exc:  # pragma: no cover - ranges checked above
            raise SketchFormatError(str(exc)) from None
        out._registers = registers
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group: ``np.maximum.at`` on ``[group, register]`` indices.

        Sketch ``i`` is byte-identical to ``HyperLogLog(**params).update(values[codes == i])``.

        Example:
            >>> [s.is_empty() for s in HyperLogLog.from_groups([1, 1], ["a", "b"], 3)]
            [True, False, True]
        """
        template = cls(**params)
        p = template._precision
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        state = np.zeros(n_groups << p, dtype=np.uint8)
        for group, hashes, _, _ in chunks:
            for a in range(0, hashes.size, _CHUNK):
                index, rho = _split(hashes[a : a + _CHUNK], p)
                index += group[a : a + _CHUNK] << p
                np.maximum.at(state, index, rho)
        rows = state.reshape(n_groups, 1 << p)
        out = []
        for i in range(n_groups):
            sketch = cls(p, seed=template._seed)
            sketch._registers = rows[i].copy()
            out.append(sketch)
        return out
