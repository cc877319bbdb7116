"""Bloom filter: set membership with no false negatives.

Sized from an expected ``capacity`` n and a target false-positive rate p:
``num_bits = ceil(-n ln p / (ln 2)**2)`` rounded up to a multiple of 64, and
``num_hashes = max(1, round(num_bits / n * ln 2))``. The k bit positions come from the
one 64-bit hash by multiply-shift with k fixed odd multipliers
(:func:`~sketches.hashing.row_multipliers`): ``g_i = h * a_i mod 2**64`` mapped to
``[0, num_bits)`` by ``((g_i >> 32) * num_bits) >> 32`` (or ``g_i % num_bits`` above
2**32 bits). This costs the same as Kirsch-Mitzenmacher double hashing
(``h + i * h2``) but keeps the probes independent. Merge is a bitwise OR.

Small filters keep the values' hashes instead of bits: while at most ``num_bits / 64``
distinct hashes were added (8 bytes each, the size of the bits), the filter holds them
sorted, and turns them into bits past that. Every answer (membership, fill ratio,
estimate) is computed from the bit positions of the held hashes, so it is identical to
the bit form's: no false negatives, the same false positives. The mode depends on the
set of hashes alone, so any order, split and mix of merges gives the one-pass bytes.

Serialised payload (after the common header): capacity uint64, error_rate float64,
num_bits uint64, num_hashes uint16, encoding uint8 (0 dense, 1 sparse, 2 hashes);
dense: all uint64 words; sparse: uint32 count, uint32 word indices, uint64 words (used
exactly when smaller); hashes (format version 2): uint32 count and the uint64 hashes in
increasing order. Version 1 bytes load as bits (the empty filter as the empty one).

Example:
    >>> bf = BloomFilter(capacity=1000, error_rate=0.01).update(["a", "b"])
    >>> "a" in bf, bf.contains(["b", "zzz", None]).tolist()
    (True, [True, False, False])
    >>> BloomFilter.from_bytes(bf.to_bytes()) == bf
    True
"""

from __future__ import annotations

import math
import struct
from typing import Any, Self

import numpy as np

from sketches import _topk
from sketches._base import check_int, iter_grouped
from sketches._columns import iter_columns
from sketches._format import KIND_BLOOM, Reader, seal
from sketches._twomode import TwoModeSketch, read_sorted_hashes, sorted_group_hashes
from sketches.errors import InvalidParameterError, SketchFormatError, UnsupportedInputError
from sketches.hashing import check_seed, hash_column, row_multipliers

__all__ = ["BloomFilter", "bit_positions", "bloom_size", "hash_limit"]

MAX_BITS = 1 << 34
MAX_CAPACITY = 1 << 40
MAX_HASHES = 64
_ROW_TAG = b"ssk:blm "
_CHUNK = 1 << 17
_NO_HASHES = np.empty(0, dtype=np.uint64)
_NO_HASHES.flags.writeable = False


def hash_limit(num_bits: int) -> int:
    """Most distinct hashes a filter holds before it becomes bits: ``num_bits / 64``.

    Example:
        >>> hash_limit(bloom_size(100_000, 0.01)[0])
        14977
    """
    return num_bits // 64


def bloom_size(capacity: int, error_rate: float) -> tuple[int, int]:
    """``(num_bits, num_hashes)`` for a capacity and target false-positive rate.

    Example:
        >>> bloom_size(1000, 0.01)
        (9600, 7)
    """
    capacity = check_int("capacity", capacity, 1, MAX_CAPACITY)
    if not (isinstance(error_rate, int | float) and 0.0 < error_rate < 1.0):
        raise InvalidParameterError(f"error_rate must be in (0, 1), got {error_rate!r}")
    bits = math.ceil(-capacity * math.log(error_rate) / math.log(2.0) ** 2)
    bits = max(64, -(-bits // 64) * 64)
    hashes = max(1, round(bits / capacity * math.log(2.0)))
    if bits > MAX_BITS:
        raise InvalidParameterError(f"{bits} bits exceed the limit of {MAX_BITS}")
    if hashes > MAX_HASHES:
        raise InvalidParameterError(f"error_rate {error_rate} needs more than {MAX_HASHES} hashes")
    return bits, hashes


def bit_positions(hashes: np.ndarray, num_bits: int, num_hashes: int) -> np.ndarray:
    """``[num_hashes, n]`` uint64 bit positions of value hashes in a filter of
    ``num_bits`` bits and ``num_hashes`` probes (many filters' hashes at once, for
    readers that count set bits without building the filters).

    Example:
        >>> bit_positions(np.array([1 << 40], dtype=np.uint64), 9600, 7).shape
        (7, 1)
    """
    # all probes at once: a few NumPy calls, not a few per probe
    out = np.multiply(row_multipliers(_ROW_TAG, num_hashes)[:, None],
                      hashes.reshape(1, -1).astype(np.uint64, copy=False))
    m = np.uint64(num_bits)
    if num_bits <= 1 << 32:
        out >>= np.uint64(32)
        out *= m
        out >>= np.uint64(32)
    else:
        np.remainder(out, m, out=out)
    return out


def _popcount(words: np.ndarray) -> int:
    count = getattr(np, "bitwise_count", None)
    if count is not None:
        return int(count(words).sum())
    return int(np.unpackbits(words.view(np.uint8)).sum())  # pragma: no cover - NumPy 1.x


class BloomFilter(TwoModeSketch):
    """Membership sketch sized for ``capacity`` values at ``error_rate`` false positives.

    Args:
        capacity: Number of distinct values the filter is sized for (``>= 1``).
        error_rate: Target false-positive rate at capacity, in ``(0, 1)``.
        seed: Hash seed.

    Example:
        >>> BloomFilter(capacity=10_000, error_rate=0.001).num_bits
        143808
    """

    KIND = KIND_BLOOM
    _SMALL, _DENSE, _COMBINE = "_hashes", "_words", np.bitwise_or

    def __init__(
        self, capacity: int = 1_000_000, error_rate: float = 0.01, *, seed: int = 0
    ) -> None:
        self._num_bits, self._num_hashes = bloom_size(capacity, error_rate)
        self._capacity = int(capacity)
        self._error_rate = float(error_rate)
        self._seed = check_seed(seed)
        self._hashes: np.ndarray | None = _NO_HASHES  # sorted distinct hashes while small
        self._words: np.ndarray | None = None  # the bits, once past the hash limit

    # ------------------------------------------------------------ basics

    @property
    def capacity(self) -> int:
        """Number of distinct values the filter was sized for."""
        return self._capacity

    @property
    def error_rate(self) -> float:
        """Target false-positive rate at capacity."""
        return self._error_rate

    @property
    def num_bits(self) -> int:
        """Size of the bit array (a multiple of 64)."""
        return self._num_bits

    @property
    def num_hashes(self) -> int:
        """Bits set per value."""
        return self._num_hashes

    @property
    def is_hashes(self) -> bool:
        """Whether the filter holds its values' hashes rather than bits."""
        return self._words is None

    def params(self) -> dict[str, Any]:
        """``{"capacity", "error_rate", "seed"}``."""
        return {"capacity": self._capacity, "error_rate": self._error_rate, "seed": self._seed}

    def _set_positions(self) -> np.ndarray:
        """Sorted distinct bit positions set by the held hashes (hash mode)."""
        assert self._hashes is not None
        return _topk.sorted_unique(self._positions(self._hashes).reshape(-1))

    def _to_bits(self) -> None:
        assert self._hashes is not None
        words = np.zeros(self._num_bits // 64, dtype=np.uint64)
        self._set_bits(words, self._hashes, None)
        self._words, self._hashes = words, None

    def _add_items(self, hashes: np.ndarray) -> None:
        """Add hashes in either mode (hash mode: ``hashes`` need not be distinct)."""
        if self._words is None:
            assert self._hashes is not None
            self._hashes = _topk.sorted_unique(np.concatenate((self._hashes, hashes)))
            if self._hashes.size > hash_limit(self._num_bits):
                self._to_bits()
        else:
            self._set_bits(self._words, hashes, None)

    def _summary(self) -> str:
        return f"fill_ratio={self.fill_ratio():.4f}"

    def _positions(self, hashes: np.ndarray) -> np.ndarray:
        """``[num_hashes, n]`` uint64 bit positions."""
        return bit_positions(hashes, self._num_bits, self._num_hashes)

    def _set_bits(self, words: np.ndarray, hashes: np.ndarray, offsets: np.ndarray | None) -> None:
        """Set the bits of ``hashes`` (plus ``offsets`` bits each, for grouped state).

        ``np.bitwise_or.at`` has no fast path in NumPy, so: with many probes per bit,
        mark a one-byte-per-bit scratch array and pack it (a plain fancy assignment);
        with few, sort and deduplicate the positions, drop bits already set, and add
        them with ``np.add.at`` (exact, since each bit is then added at most once).
        """
        n_bits = words.size * 64
        scratch = (
            np.zeros(n_bits, dtype=bool) if hashes.size * self._num_hashes * 64 >= n_bits else None
        )
        for a in range(0, hashes.size, _CHUNK):
            pos = self._positions(hashes[a : a + _CHUNK])
            if offsets is not None:
                pos += offsets[a : a + _CHUNK]
            if scratch is not None:
                scratch[pos.reshape(-1).astype(np.intp)] = True
                continue
            unique = _topk.sorted_unique(pos.reshape(-1))
            index = (unique >> np.uint64(6)).astype(np.intp)
            bits = np.left_shift(np.uint64(1), unique & np.uint64(63))
            bits &= ~words[index]
            np.add.at(words, index, bits)
        if scratch is not None:
            words |= np.packbits(scratch, bitorder="little").view("<u8")

    def _update_hashes(self, hashes: np.ndarray) -> None:
        start, step = 0, hash_limit(self._num_bits) + 1
        while self._words is None and start < hashes.size:
            self._add_items(hashes[start : start + step])
            start += step
        if start < hashes.size:
            assert self._words is not None
            self._set_bits(self._words, hashes[start:], None)

    def merge(self, other: Self) -> Self:
        """Union: hashes merge while few, bits take the bitwise OR (in place).

        Raises:
            IncompatibleSketchError: if ``other`` is not a BloomFilter with equal
                capacity, error rate and seed.
        """
        return self._merge_modes(other)

    # ------------------------------------------------------------ queries

    def contains(self, values: Any) -> np.ndarray:
        """Membership test, one bool per input value (``False`` for nulls).

        ``True`` may be a false positive (rate about :meth:`expected_fpr`); ``False``
        is always right.
        """
        parts = []
        set_positions = self._set_positions() if self._words is None else None
        for _, column in iter_columns(values):
            hashes = hash_column(column, self._seed)
            found = np.ones(hashes.size, dtype=bool)
            for a in range(0, hashes.size, _CHUNK):
                pos = self._positions(hashes[a : a + _CHUNK])
                if set_positions is not None:  # hash mode: look the positions up
                    at = np.searchsorted(set_positions, pos)
                    np.minimum(at, max(set_positions.size - 1, 0), out=at)
                    hit = set_positions[at] == pos if set_positions.size else at < 0
                    found[a : a + _CHUNK] = hit.all(axis=0)
                    continue
                assert self._words is not None
                words = self._words[(pos >> np.uint64(6)).astype(np.intp)]
                bits = (words >> (pos & np.uint64(63))) & np.uint64(1)
                found[a : a + _CHUNK] = bits.all(axis=0)
            if column.valid is not None:
                found &= column.valid
            parts.append(found)
        return np.concatenate(parts) if parts else np.empty(0, dtype=bool)

    def __contains__(self, value: Any) -> bool:
        if not (value is None or isinstance(value, str | bytes | int | float | np.generic)):
            raise UnsupportedInputError("use contains() for arrays; `in` takes one value")
        return bool(self.contains([value])[0])

    def _bits_set(self) -> int:
        if self._words is None:
            # hash mode: the held array is replaced, never changed, when hashes are added,
            # so the count is kept for as long as that array is the state
            cached = getattr(self, "_bits_cache", None)
            if cached is not None and cached[0] is self._hashes:
                return cached[1]
            count = int(self._set_positions().size)
            self._bits_cache = (self._hashes, count)
            return count
        return _popcount(self._words)

    def fill_ratio(self) -> float:
        """Fraction of bits set."""
        return self._bits_set() / self._num_bits

    def expected_fpr(self) -> float:
        """False-positive probability implied by the current fill: ``fill_ratio ** k``."""
        return self.fill_ratio() ** self._num_hashes

    def estimate(self) -> float:
        """Estimated number of distinct values added: ``-m / k * ln(1 - X / m)``.

        ``inf`` once every bit is set.
        """
        x = self._bits_set()
        if x >= self._num_bits:
            return math.inf
        return -self._num_bits / self._num_hashes * math.log1p(-x / self._num_bits)

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise (sparse when smaller); equal states give equal bytes."""
        params = struct.pack(
            "<QdQH", self._capacity, self._error_rate, self._num_bits, self._num_hashes
        )
        if self._words is None:
            assert self._hashes is not None
            return seal(
                KIND_BLOOM,
                self._seed,
                params,
                struct.pack("<BI", 2, self._hashes.size),
                self._hashes.astype("<u8").tobytes(),
            )
        nonzero = np.flatnonzero(self._words)
        if 12 * nonzero.size + 4 < 8 * self._words.size:
            return seal(
                KIND_BLOOM,
                self._seed,
                params,
                struct.pack("<BI", 1, nonzero.size),
                nonzero.astype("<u4").tobytes(),
                self._words[nonzero].astype("<u8").tobytes(),
            )
        return seal(KIND_BLOOM, self._seed, params, b"\x00", self._words.astype("<u8").tobytes())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes`.

        Raises:
            SketchFormatError: for anything but a valid, canonical BloomFilter encoding.
        """
        reader, seed = Reader.open(data, KIND_BLOOM)
        capacity, error_rate, num_bits, num_hashes, encoding = reader.unpack("<QdQHB")
        try:
            out = cls(capacity, error_rate, seed=seed)
        except InvalidParameterError as exc:
            raise SketchFormatError(f"bad BloomFilter parameters: {exc}") from None
        if (num_bits, num_hashes) != (out._num_bits, out._num_hashes):
            raise SketchFormatError(
                f"inconsistent BloomFilter parameters: {num_bits} bits and {num_hashes} hashes "
                f"stored, {out._num_bits} and {out._num_hashes} implied"
            )
        n_words = num_bits // 64
        if encoding == 2 and reader.version >= 2:
            out._hashes = read_sorted_hashes(reader, hash_limit(num_bits), "BloomFilter")
            return out
        if encoding == 0:
            words = reader.array("<u8", n_words, "bits")
            if 12 * np.count_nonzero(words) + 4 < 8 * n_words:
                raise SketchFormatError("non-canonical BloomFilter bytes: dense but sparse")
        elif encoding == 1:
            (count,) = reader.unpack("<I", "sparse count")
            if 12 * count + 4 >= 8 * n_words:
                raise SketchFormatError("non-canonical BloomFilter bytes: sparse but dense")
            index = reader.array("<u4", count, "sparse indices").astype(np.intp)
            values = reader.array("<u8", count, "sparse words")
            if count and (
                int(index[-1]) >= n_words or np.any(np.diff(index) <= 0) or not values.all()
            ):
                raise SketchFormatError("corrupt sparse BloomFilter words")
            words = np.zeros(n_words, dtype=np.uint64)
            words[index] = values
        else:
            raise SketchFormatError(f"unknown BloomFilter encoding {encoding}")
        reader.finish()
        if words.any():
            out._words, out._hashes = words, None
        elif reader.version >= 2:  # version 1 wrote the empty filter as bits
            raise SketchFormatError("non-canonical BloomFilter bytes: no bit set")
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One filter per group from one sort of (group, hash) pairs: O(rows + groups).

        Groups past the hash limit get bits (for those groups only); the others keep
        their slice of the sorted pairs.

        Example:
            >>> parts = BloomFilter.from_groups([0, 1], ["a", "b"], 2, capacity=100)
            >>> ["a" in parts[0], "a" in parts[1]]
            [True, False]
        """
        template, group, hashes, bounds, slot, words = cls._grouped(codes, values, n_groups,
                                                                    params)
        return cls._from_parts(template, slot.tolist(), words, bounds, hashes)

    @classmethod
    def group_bytes(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[bytes]:
        """``[f.to_bytes() for f in from_groups(...)]``, the filters still holding hashes
        written all at once without building them."""
        template, group, hashes, bounds, slot, words = cls._grouped(codes, values, n_groups,
                                                                    params)
        # the hash form: header, parameters, encoding 2, then the count and hashes
        return cls._group_bytes(template, 40, hashes, slot, words, bounds)

    @classmethod
    def _grouped(cls, codes: Any, values: Any, n_groups: int, params: dict[str, Any]
                 ) -> tuple[Self, np.ndarray, np.ndarray, list[int], np.ndarray, np.ndarray]:
        """The grouped build's sorted (group, hash) pairs, and the bits of the groups past
        the hash limit (row ``slot[g]``)."""
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        m = template._num_bits
        group, hashes, bounds, slot, big = sorted_group_hashes(chunks, n_groups, hash_limit(m))
        state = np.zeros(big.size * (m // 64), dtype=np.uint64)
        rows = np.flatnonzero(slot[group] >= 0)
        if rows.size:
            offsets = slot[group[rows]].astype(np.uint64) * np.uint64(m)
            template._set_bits(state, hashes[rows], offsets)
        return template, group, hashes, bounds, slot, state.reshape(big.size, m // 64)
