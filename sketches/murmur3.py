"""MurmurHash3 x64-128, vectorised with NumPy: the hash of Apache DataSketches.

DataSketches' HLL and Theta sketches (and so Spark SQL's ``hll_sketch_agg`` and
``theta_sketch_agg``, Druid's and Pinot's sketch columns) hash each value with
MurmurHash3_x64_128 and the seed 9001, over these bytes:

=================  =========================================================
value              bytes hashed
=================  =========================================================
integer            its 8 bytes, little-endian two's complement (a Java ``long``:
                   Spark widens ``int`` to ``long`` first)
float              the 8 bytes of the IEEE double, ``-0.0`` as ``0.0`` and every
                   NaN as the canonical NaN (Java's ``doubleToLongBits``)
string             its UTF-8 bytes; the empty string is not an item (skipped)
bytes              the bytes; an empty byte string is skipped
=================  =========================================================

:func:`murmur3_128` returns both 64-bit halves for every non-null, non-empty value;
the sketches take what they need (HLL: the slot from ``h1``, the value from the
leading zeros of ``h2``; Theta: ``h1 >> 1``). All arithmetic is on uint64 modulo
2**64, a block of 16 bytes at a time across all values at once.

Example:
    >>> h1, h2 = murmur3_128(["a"])
    >>> hex(int(h1[0])), hex(int(h2[0]))
    ('0xf6020f0aa43b822f', '0xc51f4ded6e1eb0fe')
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sketches._columns import (
    BytesColumn,
    Column,
    DictColumn,
    FloatColumn,
    IntColumn,
    MixedColumn,
    iter_columns,
    prepare,
)

__all__ = ["DEFAULT_SEED", "murmur3_128", "murmur3_column", "seed_hash"]

#: DataSketches' default update seed
DEFAULT_SEED = 9001

_U64 = np.uint64
_C1 = _U64(0x87C37B91114253D5)
_C2 = _U64(0x4CF5AD432745937F)
_F1 = _U64(0xFF51AFD7ED558CCD)
_F2 = _U64(0xC4CEB9FE1A85EC53)
_N1 = _U64(0x52DCE729)
_N2 = _U64(0x38495AB5)
_FIVE = _U64(5)
_CANONICAL_NAN = _U64(0x7FF8000000000000)
_BLOCK = 1 << 15  # values per in-place step: the temporaries stay in the cache
_BYTE_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [(1 << 64) - 1],
                       dtype=np.uint64)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U64(r)) | (x >> _U64(64 - r))


def _fmix(k: np.ndarray) -> np.ndarray:
    k = k ^ (k >> _U64(33))
    k = k * _F1
    k = k ^ (k >> _U64(33))
    k = k * _F2
    return k ^ (k >> _U64(33))


def _mix_k1(k1: np.ndarray) -> np.ndarray:
    return _rotl(k1 * _C1, 31) * _C2


def _mix_k2(k2: np.ndarray) -> np.ndarray:
    return _rotl(k2 * _C2, 33) * _C1


def _finish(h1: np.ndarray, h2: np.ndarray, length: Any) -> tuple[np.ndarray, np.ndarray]:
    length = np.asarray(length).astype(np.uint64)
    h1 = h1 ^ length
    h2 = h2 ^ length
    h1 = h1 + h2
    h2 = h2 + h1
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = h1 + h2
    h2 = h2 + h1
    return h1, h2


def _fmix_inplace(k: np.ndarray, tmp: np.ndarray) -> None:
    np.right_shift(k, _U64(33), out=tmp)
    k ^= tmp
    k *= _F1
    np.right_shift(k, _U64(33), out=tmp)
    k ^= tmp
    k *= _F2
    np.right_shift(k, _U64(33), out=tmp)
    k ^= tmp


def _hash_words(words: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash of 8-byte values given as uint64 words (a tail of 8 bytes, no block).

    With no block, ``h2`` is the seed until the finish, so the arithmetic folds to:
    ``h1 = mix_k1(w) ^ seed ^ 8``; ``h1 += seed ^ 8``; ``h2 = h1 + (seed ^ 8)``; then
    both are mixed, ``h1 += h2``, ``h2 += h1``. In place, a cache-sized block at a time.
    """
    n = words.size
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    s8 = _U64(seed ^ 8)
    tmp = np.empty(min(n, _BLOCK), dtype=np.uint64)
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        x, y, t = h1[a:b], h2[a:b], tmp[: b - a]
        np.multiply(words[a:b], _C1, out=x)
        np.right_shift(x, _U64(33), out=t)
        x <<= _U64(31)
        x |= t
        x *= _C2
        x ^= s8
        x += s8
        np.add(x, s8, out=y)
        _fmix_inplace(x, t)
        _fmix_inplace(y, t)
        x += y
        y += x
    return h1, h2


def _load(words: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Unaligned little-endian 8-byte loads at byte positions ``pos`` (two aligned
    gathers and shifts)."""
    shift = ((pos & 7) << 3).astype(np.uint64)
    q = pos >> 3
    lo = words[q]
    lo >>= shift
    hi = words[q + 1]
    np.subtract(_U64(63), shift, out=shift)
    hi <<= shift
    hi <<= _U64(1)  # two steps: a shift by 64 must give 0
    lo |= hi
    return lo


def _strings_block(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = starts.size
    h1 = np.full(n, seed, dtype=np.uint64)
    h2 = h1.copy()
    blocks = lengths >> 4
    with np.errstate(over="ignore"):
        for j in range(int(blocks.max()) if n else 0):
            rows = np.flatnonzero(blocks > j) if blocks.min() <= j else None
            pos = starts + 16 * j if rows is None else starts[rows] + 16 * j
            a = h1 if rows is None else h1[rows]
            b = h2 if rows is None else h2[rows]
            a = a ^ _mix_k1(_load(words, pos))
            a = _rotl(a, 27) + b
            a = a * _FIVE + _N1
            b = b ^ _mix_k2(_load(words, pos + 8))
            b = _rotl(b, 31) + a
            b = b * _FIVE + _N2
            if rows is None:
                h1, h2 = a, b
            else:
                h1[rows], h2[rows] = a, b
        tail = lengths & 15
        pos = starts + (blocks << 4)
        k1 = _load(words, pos)
        k1 &= _BYTE_MASKS[np.minimum(tail, 8)]
        k2 = _load(words, pos + 8)
        k2 &= _BYTE_MASKS[np.clip(tail - 8, 0, 8)]
        long_tail = tail > 8
        if long_tail.any():
            h2 ^= np.where(long_tail, _mix_k2(k2), _U64(0))
        h1 ^= np.where(tail > 0, _mix_k1(k1), _U64(0))
        length = lengths.astype(np.uint64)
        h1 ^= length
        h2 ^= length
        h1 += h2
        h2 += h1
        tmp = np.empty(n, dtype=np.uint64)
        _fmix_inplace(h1, tmp)
        _fmix_inplace(h2, tmp)
        h1 += h2
        h2 += h1
    return h1, h2


def _hash_strings(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash of byte strings ``data[starts[i]:starts[i] + lengths[i]]``.

    Block ``j`` of every string long enough is mixed in at once, then the tails (the
    last ``length % 16`` bytes, zero-padded); a cache-sized run of strings at a time.
    """
    n = starts.size
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    if n == 0:
        return h1, h2
    words = np.zeros(data.size // 8 + 4, dtype=np.uint64)  # an aligned copy, zero-padded
    words.view(np.uint8)[: data.size] = data
    starts = starts.astype(np.int64)
    lengths = lengths.astype(np.int64)
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        h1[a:b], h2[a:b] = _strings_block(words, starts[a:b], lengths[a:b], seed)
    return h1, h2


def murmur3_column(column: Column, seed: int = DEFAULT_SEED
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(h1, h2, keep)`` for every row of a normalised column; ``keep`` (None: all)
    marks the rows that are items: not null, not NaN-free nulls, not empty strings."""
    if isinstance(column, IntColumn):
        h1, h2 = _hash_words(column.bits, seed)
        return h1, h2, column.valid
    if isinstance(column, FloatColumn):
        values = np.where(column.values == 0.0, 0.0, column.values)
        bits = values.view(np.uint64).copy()
        bits[np.isnan(values)] = _CANONICAL_NAN
        h1, h2 = _hash_words(bits, seed)
        return h1, h2, column.valid
    if isinstance(column, BytesColumn):
        h1, h2 = _hash_strings(column.data, column.starts, column.lengths, seed)
        keep = column.lengths > 0
        return h1, h2, keep if column.valid is None else keep & column.valid
    if isinstance(column, DictColumn):
        d1, d2, dkeep = murmur3_column(column.dictionary, seed)
        keep = None if dkeep is None else dkeep[column.indices]
        if column.valid is not None:
            keep = column.valid if keep is None else keep & column.valid
        return d1[column.indices], d2[column.indices], keep
    if isinstance(column, MixedColumn):
        h1 = np.zeros(len(column), dtype=np.uint64)
        h2 = h1.copy()
        keep = np.ones(len(column), dtype=bool) if column.valid is None else column.valid.copy()
        for rows, part in column.parts:
            p1, p2, pkeep = murmur3_column(part, seed)
            h1[rows], h2[rows] = p1, p2
            if pkeep is not None:
                keep[rows] &= pkeep
        return h1, h2, keep
    raise TypeError(f"unknown column type {type(column).__name__}")  # pragma: no cover


def murmur3_128(values: Any, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(h1, h2)``: the two uint64 halves of each item's MurmurHash3_x64_128.

    Nulls, NaN-as-null inputs and empty strings are skipped, as DataSketches skips them.

    Example:
        >>> h1, _ = murmur3_128([1, None, "", 2])
        >>> h1.size
        2
    """
    firsts, seconds = [], []
    for _, column in iter_columns(prepare(values)):
        h1, h2, keep = murmur3_column(column, seed)
        if keep is not None:
            h1, h2 = h1[keep], h2[keep]
        firsts.append(h1)
        seconds.append(h2)
    if not firsts:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64)
    return np.concatenate(firsts), np.concatenate(seconds)


@functools.cache
def seed_hash(seed: int = DEFAULT_SEED) -> int:
    """The 16-bit seed hash DataSketches stores in a Theta sketch: the low 16 bits of
    ``h1`` of the seed hashed as a long with seed 0.

    Example:
        >>> hex(seed_hash())
        '0x93cc'
    """
    h1, _ = _hash_words(np.array([seed], dtype=np.uint64), 0)
    return int(h1[0]) & 0xFFFF
