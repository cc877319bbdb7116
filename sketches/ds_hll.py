"""HyperLogLog whose bytes are Apache DataSketches HLL images (read by Spark SQL, Druid, Pinot).

Hash and registers are DataSketches': each item's MurmurHash3_x64_128 (seed 9001,
:mod:`sketches.murmur3`) gives a *coupon*, ``value << 26 | (h1 & (2**26 - 1))`` with
``value = min(nlz(h2), 62) + 1``; in HLL mode register ``h1 & (K - 1)`` (``K =
2**precision``) keeps the largest value. So Spark's ``hll_sketch_agg`` over the same
values fills the same registers, and ``hll_union_agg`` / ``hll_sketch_estimate`` read
these bytes as they read their own.

Small stays small, as in DataSketches: up to 7 distinct coupons the sketch is a coupon
*list*, up to ``3 * 2**(precision - 5)`` (precision >= 8) a coupon *set*, beyond that
HLL_8 registers (``K`` bytes). The state is a function of the set of values alone (the
distinct coupons while few, the registers beyond), so any order and any split of the
values give the same bytes, and merges are exact.

Bytes (little-endian; DataSketches' compact images, serial version 1, family 7):

- empty: ``02 01 07 p 03 0c 00 08`` (8 bytes);
- list: ``02 01 07 p 03 08 count 08`` then the coupons, ascending, uint32 each;
- set: ``03 01 07 p lgArr 08 00 09``, uint32 count, the coupons ascending;
- HLL: ``0a 01 07 p 00 18 00 0a``; then doubles HIP accumulator (0: the image is
  marked out of order, as a union's result is, so readers use the register
  estimator), ``kxq0`` and ``kxq1`` (sums of ``2**-v`` over registers below and from
  32, summed in register order), uint32 registers at zero, uint32 0 (no exceptions),
  then one byte per register (HLL_8).

:meth:`DataSketchesHLL.from_bytes` also reads the images DataSketches writes elsewhere:
updatable lists and sets (Spark's), and HLL_4 (with its exception table), HLL_6 and
HLL_8 registers, compact or not.

Estimates are this package's: Ertl's improved estimator over the registers (while
coupons: linear counting of their 26-bit addresses, which is the distinct count but for
rare shared addresses), with the usual ``1.04 / sqrt(K)`` relative standard error.
DataSketches' own estimators (HIP, composite) give numbers within the same error; the
registers, and so what every engine computes from them, are equal.

Example:
    >>> a = DataSketchesHLL(precision=12).update(["a", "b", "c"])
    >>> round(a.estimate()), a.to_bytes()[:3].hex()
    (3, '020107')
    >>> DataSketchesHLL.from_bytes(a.to_bytes()) == a
    True
"""

from __future__ import annotations

import math
import struct
from typing import Any, Self

import numpy as np

from sketches._base import Sketch, check_codes, check_int
from sketches._columns import input_length, iter_columns, prepare
from sketches._topk import sorted_unique
from sketches.errors import SketchFormatError
from sketches.hll import estimate_histogram
from sketches.murmur3 import murmur3_column

__all__ = ["DataSketchesHLL", "coupons_of", "coupon_limit", "MIN_LG_K", "MAX_LG_K"]

MIN_LG_K = 4
MAX_LG_K = 21
KIND_DS_HLL = 6  # this package's code for the class (DataSketches images carry none)

_FAMILY = 7
_SER_VER = 1
_LIST, _SET, _HLL = 0, 1, 2
_HLL4, _HLL6, _HLL8 = 0, 1, 2
_EMPTY_FLAG, _COMPACT_FLAG, _OOO_FLAG = 4, 8, 16
_KEY_MASK = np.uint32((1 << 26) - 1)
_LIST_MAX = 7
_COUPON_P = 26
_NO_COUPONS = np.empty(0, dtype=np.uint32)
_HLL_HEAD = struct.Struct("<BBBBBBBBdddII")


def coupon_limit(precision: int) -> int:
    """The most distinct coupons a sketch keeps before it turns into registers.

    Example:
        >>> coupon_limit(12), coupon_limit(6)
        (384, 7)
    """
    return _LIST_MAX if precision < 8 else 3 << (precision - 5)


def _values_of(h2: np.ndarray) -> np.ndarray:
    """``min(nlz(h2), 62) + 1`` (uint32): from the exponent of ``h2``'s high half as a
    double (exact: 32 bits); the rare ``h2`` whose high half is 0 (one in 2**32) takes
    its low half."""
    hi = (h2 >> np.uint64(32)).astype(np.float64)
    value = (hi.view(np.uint64) >> np.uint64(52)).astype(np.uint32)  # bit length + 1022
    np.subtract(np.uint32(33 + 1022), value, out=value)
    zero = np.flatnonzero(hi == 0)
    if zero.size:
        low = (h2[zero] & np.uint64(0xFFFFFFFF)).astype(np.float64)
        value[zero] = np.minimum(64 - np.frexp(low)[1], 62) + 1
    return value


def coupons_of(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """DataSketches' coupon of each hash: ``value << 26 | low 26 bits of h1``, with
    ``value = min(nlz(h2), 62) + 1``.

    Example:
        >>> from sketches.murmur3 import murmur3_128
        >>> hex(int(coupons_of(*murmur3_128(["a"]))[0]))
        '0x43b822f'
    """
    value = _values_of(h2)
    value <<= np.uint32(26)
    value |= h1.astype(np.uint32) & _KEY_MASK
    return value


def _registers_of(coupons: np.ndarray, precision: int, out: np.ndarray) -> np.ndarray:
    np.maximum.at(out, (coupons & np.uint32((1 << precision) - 1)).astype(np.int64),
                  (coupons >> np.uint32(26)).astype(np.uint8))
    return out


class DataSketchesHLL(Sketch):
    """Distinct-count sketch stored as a DataSketches HLL image (HLL_8 once dense).

    Args:
        precision: ``lgK`` in ``[4, 21]``: ``2**precision`` registers once dense,
            relative standard error ``1.04 / sqrt(2**precision)``. Spark's
            ``hll_sketch_agg`` default is 12; sketches merge only at equal precision.

    Example:
        >>> s = DataSketchesHLL(precision=10).update(range(1000))
        >>> 900 < s.estimate() < 1100
        True
    """

    KIND = KIND_DS_HLL

    def __init__(self, precision: int = 12) -> None:
        self._precision = check_int("precision", precision, MIN_LG_K, MAX_LG_K)
        self._seed = 9001
        self._coupons: np.ndarray | None = _NO_COUPONS
        self._registers: np.ndarray | None = None

    @property
    def precision(self) -> int:
        return self._precision

    def params(self) -> dict[str, Any]:
        return {"precision": self._precision}

    # ------------------------------------------------------------ state

    def _set_coupons(self, coupons: np.ndarray) -> None:
        """Take a sorted, duplicate-free coupon array; registers beyond the limit."""
        if self._registers is None and coupons.size <= coupon_limit(self._precision):
            self._coupons = coupons
            return
        if self._registers is None:
            self._registers = np.zeros(1 << self._precision, dtype=np.uint8)
        _registers_of(coupons, self._precision, self._registers)
        self._coupons = None

    def _update_hashes(self, hashes: np.ndarray) -> None:
        """Add coupons (given as integers, the "hashes" of this sketch)."""
        coupons = hashes.astype(np.uint32, copy=False)
        if self._registers is not None:  # registers take the maximum: no need to dedupe
            _registers_of(coupons, self._precision, self._registers)
            return
        assert self._coupons is not None
        self._set_coupons(sorted_unique(np.concatenate([self._coupons, coupons])))

    def update(self, values: Any) -> Self:
        """Add values (array, Arrow array, Series, list or scalar), hashed as
        DataSketches hashes them; nulls, NaN and empty strings are skipped."""
        for _, column in iter_columns(prepare(values)):
            h1, h2, keep = murmur3_column(column)
            if keep is not None:
                h1, h2 = h1[keep], h2[keep]
            if self._registers is not None:  # the slot and value, no coupon
                slots = (h1 & np.uint64((1 << self._precision) - 1)).astype(np.intp)
                np.maximum.at(self._registers, slots, _values_of(h2).astype(np.uint8))
            else:
                self._update_hashes(coupons_of(h1, h2))
        return self

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group code, in one vectorised pass.

        Example:
            >>> a, b = DataSketchesHLL.from_groups([0, 1, 0], ["x", "y", "z"], 2)
            >>> a == DataSketchesHLL().update(["x", "z"]), round(b.estimate())
            (True, 1)
        """
        template = cls(**params)
        values = prepare(values)
        codes_arr, n = check_codes(codes, input_length(values), n_groups)
        keys = []
        for offset, column in iter_columns(values):
            h1, h2, keep = murmur3_column(column)
            key = (codes_arr[offset: offset + len(column)].astype(np.uint64) << np.uint64(32)
                   | coupons_of(h1, h2).astype(np.uint64))
            keys.append(key if keep is None else key[keep])
        key = sorted_unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.uint64)
        group = (key >> np.uint64(32)).astype(np.int64)
        coupons = key.astype(np.uint32)
        bounds = np.searchsorted(group, np.arange(n + 1))
        out = []
        for g in range(n):
            s = cls.__new__(cls)
            s._precision, s._seed = template._precision, template._seed
            s._registers = None
            s._set_coupons(coupons[bounds[g]: bounds[g + 1]])
            out.append(s)
        return out

    def merge(self, other: Self) -> Self:
        """Merge ``other`` in place (coupons united, registers by maximum)."""
        self._check_mergeable(other)
        if other._registers is None:
            assert other._coupons is not None
            self._update_hashes(other._coupons)
        elif self._registers is None:
            assert self._coupons is not None
            coupons = self._coupons
            self._registers = other._registers.copy()
            self._set_coupons(coupons)
        else:
            np.maximum(self._registers, other._registers, out=self._registers)
        return self

    def is_empty(self) -> bool:
        return self._registers is None and self._coupons is not None and not self._coupons.size

    def _state_equal(self, other: Self) -> bool:
        if (self._registers is None) != (other._registers is None):
            return False
        if self._registers is not None:
            return bool(np.array_equal(self._registers, other._registers))
        return bool(np.array_equal(self._coupons, other._coupons))

    def registers(self) -> np.ndarray:
        """The ``2**precision`` register values (from the coupons while few)."""
        if self._registers is not None:
            return self._registers.copy()
        assert self._coupons is not None
        return _registers_of(self._coupons, self._precision,
                             np.zeros(1 << self._precision, dtype=np.uint8))

    @property
    def coupons(self) -> np.ndarray | None:
        """The distinct coupons, ascending, while the sketch holds coupons; else None."""
        return None if self._coupons is None else self._coupons.copy()

    # ------------------------------------------------------------ estimates

    def _addresses(self) -> int:
        """Distinct 26-bit addresses among the coupons (coupon mode)."""
        assert self._coupons is not None
        return int(sorted_unique(self._coupons & _KEY_MASK).size)

    def estimate(self) -> float:
        """Estimated number of distinct values (Ertl's improved estimator)."""
        return self.estimate_with_bounds()[0]

    def relative_error(self) -> float:
        """Relative standard error ``1.04 / sqrt(2**precision)``; far smaller while the
        sketch holds coupons (which :meth:`lower_bound` and :meth:`upper_bound` use)."""
        return 1.04 / math.sqrt(1 << self._precision)

    def estimate_with_bounds(self, k: float = 2.0) -> tuple[float, float, float]:
        """(estimate, ``estimate - k sigma``, ``estimate + k sigma``); the lower bound is
        never below the number of registers (or coupon addresses) set.

        >>> est, low, high = DataSketchesHLL().update(["a", "b"]).estimate_with_bounds()
        >>> low <= round(est) == 2 <= high
        True
        """
        if self._registers is None:
            # coupons: linear counting over 2**26 addresses (at most 196,608 coupons held,
            # a load of 0.3 %: exact but for the rare shared address)
            floor = float(self._addresses())
            m = float(1 << _COUPON_P)
            est, sigma = m * math.log(m / (m - floor)), 1.04 / math.sqrt(m)
        else:
            counts = np.bincount(self._registers, minlength=64).astype(np.float64)
            floor = float((1 << self._precision) - counts[0])
            est = estimate_histogram(counts, self._precision, 62) if floor else 0.0
            sigma = self.relative_error()
        return est, max(floor, est * (1 - k * sigma)), max(floor, est * (1 + k * sigma))

    def lower_bound(self, k: float = 2.0) -> float:
        return self.estimate_with_bounds(k)[1]

    def upper_bound(self, k: float = 2.0) -> float:
        return self.estimate_with_bounds(k)[2]

    def _summary(self) -> str:
        return f"~{self.estimate():.0f} distinct"

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """The compact DataSketches image (see the module docstring)."""
        p = self._precision
        if self._registers is None:
            assert self._coupons is not None
            c = self._coupons
            if c.size == 0:
                return bytes((2, _SER_VER, _FAMILY, p, 3, _EMPTY_FLAG | _COMPACT_FLAG, 0,
                              _HLL8 << 2 | _LIST))
            if c.size <= _LIST_MAX:
                head = bytes((2, _SER_VER, _FAMILY, p, 3, _COMPACT_FLAG, c.size,
                              _HLL8 << 2 | _LIST))
                return head + c.astype("<u4").tobytes()
            lg_arr = max(5, math.ceil(math.log2(c.size * 4 / 3)))
            head = bytes((3, _SER_VER, _FAMILY, p, lg_arr, _COMPACT_FLAG, 0,
                          _HLL8 << 2 | _SET)) + struct.pack("<I", c.size)
            return head + c.astype("<u4").tobytes()
        regs = self._registers
        inv = np.ldexp(1.0, -regs.astype(np.int64))
        low = regs < 32
        kxq0 = float(np.cumsum(np.where(low, inv, 0.0))[-1])
        kxq1 = float(np.cumsum(np.where(low, 0.0, inv))[-1])
        head = _HLL_HEAD.pack(10, _SER_VER, _FAMILY, p, 0, _COMPACT_FLAG | _OOO_FLAG, 0,
                              _HLL8 << 2 | _HLL, 0.0, kxq0, kxq1,
                              int(np.count_nonzero(regs == 0)), 0)
        return head + regs.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read a DataSketches HLL image: list, set or HLL_4/6/8, compact or updatable.

        Raises:
            SketchFormatError: if the bytes are not a valid DataSketches HLL image.
        """
        view = memoryview(data).cast("B")
        if len(view) < 8:
            raise SketchFormatError(f"truncated DataSketches HLL image: {len(view)} bytes")
        pre, ser, family, p, lg_arr, flags, byte6, mode_byte = view[:8]
        if family != _FAMILY:
            raise SketchFormatError(f"not a DataSketches HLL image: family {family}, expected 7")
        if ser != _SER_VER:
            raise SketchFormatError(f"unsupported DataSketches HLL serial version {ser}")
        if not MIN_LG_K <= p <= MAX_LG_K:
            raise SketchFormatError(f"DataSketches HLL lgK {p} is outside [4, 21]")
        mode, tgt = mode_byte & 3, (mode_byte >> 2) & 3
        out = cls(p)
        compact = bool(flags & _COMPACT_FLAG)
        if mode == _LIST:
            _expect(pre, 2, view)
            if flags & _EMPTY_FLAG:
                return out
            n = byte6 if compact else 1 << lg_arr
            coupons = _uint32s(view, 8, n)
        elif mode == _SET:
            _expect(pre, 3, view)
            (count,) = struct.unpack_from("<I", _need(view, 12), 8)
            coupons = _uint32s(view, 12, count if compact else 1 << lg_arr)
            if np.count_nonzero(coupons) != count:
                raise SketchFormatError(f"DataSketches HLL set holds {np.count_nonzero(coupons)} "
                                        f"coupons, its header says {count}")
        elif mode == _HLL:
            _expect(pre, 10, view)
            out._coupons = None
            out._registers = _read_registers(view, p, tgt, compact)
            return out
        else:
            raise SketchFormatError(f"unknown DataSketches HLL mode {mode}")
        coupons = sorted_unique(coupons[coupons != 0])
        out._set_coupons(coupons)
        return out


def _expect(pre: int, want: int, view: memoryview) -> None:
    if pre != want:
        raise SketchFormatError(f"DataSketches HLL preamble of {pre} ints, expected {want}")


def _need(view: memoryview, n: int) -> memoryview:
    if len(view) < n:
        raise SketchFormatError(f"truncated DataSketches HLL image: {len(view)} bytes, "
                                f"needs {n}")
    return view


def _uint32s(view: memoryview, start: int, n: int) -> np.ndarray:
    _need(view, start + 4 * n)
    return np.frombuffer(view, dtype="<u4", count=n, offset=start).astype(np.uint32)


def _read_registers(view: memoryview, p: int, tgt: int, compact: bool) -> np.ndarray:
    k = 1 << p
    _need(view, 40)
    cur_min = view[6]
    aux_count = struct.unpack_from("<I", view, 36)[0]
    if tgt == _HLL8:
        return np.frombuffer(_need(view, 40 + k), dtype=np.uint8, count=k, offset=40).copy()
    if tgt == _HLL6:
        nbytes = (k * 3 >> 2) + 1
        raw = np.frombuffer(_need(view, 40 + nbytes), dtype=np.uint8, count=nbytes, offset=40)
        pad = np.zeros(nbytes + 1, dtype=np.uint16)
        pad[:nbytes] = raw
        start = np.arange(k, dtype=np.int64) * 6
        pair = pad[start >> 3] | (pad[(start >> 3) + 1] << np.uint16(8))
        return ((pair >> (start & 7).astype(np.uint16)) & np.uint16(63)).astype(np.uint8)
    if tgt != _HLL4:
        raise SketchFormatError(f"unknown DataSketches HLL type {tgt}")
    nbytes = k >> 1
    raw = np.frombuffer(_need(view, 40 + nbytes), dtype=np.uint8, count=nbytes, offset=40)
    nibbles = np.empty(k, dtype=np.uint8)
    nibbles[0::2] = raw & 15
    nibbles[1::2] = raw >> 4
    regs = nibbles + np.uint8(cur_min)
    exceptions = nibbles == 15
    if aux_count or exceptions.any():
        lg_aux = view[4]
        n = aux_count if compact else 1 << lg_aux
        aux = _uint32s(view, 40 + nbytes, n)
        aux = aux[aux != 0]
        slots = (aux & np.uint32(k - 1)).astype(np.int64)
        if aux.size != aux_count or not np.array_equal(np.sort(slots),
                                                       np.flatnonzero(exceptions)):
            raise SketchFormatError("DataSketches HLL_4 exception table does not match "
                                    "its registers")
        regs[slots] = (aux >> np.uint32(26)).astype(np.uint8)
    return regs
