"""The one 64-bit hash shared by every sketch, vectorised with NumPy.

The algorithm is defined here, independently of any library, so that sketches
built on different machines, Python versions or NumPy/Arrow versions merge
correctly. All arithmetic is on unsigned 64-bit integers modulo 2**64.

Definition (``mix`` is the SplitMix64 output function, Stafford's "Mix13")::

    G = 0x9E3779B97F4A7C15
    mix(z):  z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
             z ^= z >> 27; z *= 0x94D049BB133111EB
             z ^= z >> 31
    key(seed, tag) = mix(seed ^ tag)      # tag: 8 ASCII bytes read little-endian

    integer v, -2**63 <= v < 2**63:   mix(key(seed, "ssk:int ") + (v mod 2**64) * G)
    integer v,  2**63 <= v < 2**64:   mix(key(seed, "ssk:uint") + v * G)
    float x, integral and in range:   the hash of the integer int(x)
    other float x (fractional, inf):  mix(key(seed, "ssk:flt ") + bits(x) * G)
    str s:                            bytes rule on s.encode("utf-8"), tag "ssk:str "
    bytes b, length L, k = key(seed, "ssk:byte"), words w_0 .. w_{n-1} the 8-byte
    little-endian words of b (n = ceil(L / 8), the last one zero-padded):
                                      acc = sum_j mix(w_j ^ (k + (j + 1) * G))
                                      h = mix(mix(k ^ (L * G)) + acc)

Consequences worth knowing:

* Numbers hash by value: ``1``, ``1.0``, ``True``, ``np.uint8(1)`` and ``-0.0 == 0`` collide
  on purpose; ``NaN`` is skipped like a null. Integers outside ``[-2**63, 2**64)`` are
  refused.
* ``"1"`` and ``1`` hash differently, and so do ``"a"`` and ``b"a"``.
* Temporal values (NumPy ``datetime64``, Arrow dates/timestamps) hash as their integer
  storage; ``NaT`` is a null.

Example:
    >>> import numpy as np
    >>> h = hash64(np.array([1, 2, 3], dtype=np.int64))
    >>> h.dtype, h.shape
    (dtype('uint64'), (3,))
    >>> bool(hash64([1.0])[0] == h[0]), hash64([None, "x"]).shape
    (True, (1,))
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
    input_length,
    iter_columns,
    prepare,
)
from sketches.errors import InvalidParameterError

__all__ = ["hash64", "check_seed", "hash_column", "mix64", "row_multipliers"]

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_GAMMA = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
# Domain tags: 8 ASCII bytes read as a little-endian integer.
_TAG_INT = int.from_bytes(b"ssk:int ", "little")
_TAG_UINT = int.from_bytes(b"ssk:uint", "little")
_TAG_FLOAT = int.from_bytes(b"ssk:flt ", "little")
_TAG_STR = int.from_bytes(b"ssk:str ", "little")
_TAG_BYTES = int.from_bytes(b"ssk:byte", "little")

_BLOCK = 1 << 16  # elements per inner block: keeps temporaries in the L2 cache
_STR_BLOCK = 1 << 15  # strings per block
_STR_BLOCK_BYTES = 1 << 22  # and at most this many bytes per block
_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [_MASK64], dtype=np.uint64)


def check_seed(seed: Any) -> int:
    """Validate a hash seed: an integer in ``[0, 2**64)``.

    Example:
        >>> check_seed(7)
        7
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    value = int(seed)
    if not 0 <= value <= _MASK64:
        raise InvalidParameterError(f"seed must be in [0, 2**64), got {value}")
    return value


def _mix_scalar(z: int) -> int:
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _key(seed: int, tag: int) -> np.uint64:
    return _U64(_mix_scalar(seed ^ tag))


def _mix(z: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """Apply ``mix`` in place to the uint64 array ``z``; ``tmp`` is scratch of equal size."""
    np.right_shift(z, _U64(30), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, _M1, out=z)
    np.right_shift(z, _U64(27), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, _M2, out=z)
    np.right_shift(z, _U64(31), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    return z


def mix64(values: np.ndarray) -> np.ndarray:
    """Return ``mix`` applied to a copy of a uint64 array (used to derive secondary hashes).

    Example:
        >>> mix64(np.array([0], dtype=np.uint64))
        array([0], dtype=uint64)
    """
    z = np.array(values, dtype=np.uint64, copy=True)
    return _mix(z, np.empty_like(z))


@functools.lru_cache(maxsize=64)
def row_multipliers(tag: bytes, count: int) -> np.ndarray:
    """``count`` fixed odd 64-bit multipliers ``mix(tag + (i + 1) * G) | 1``.

    Sketches derive their per-row (or per-probe) positions from the one 64-bit hash by
    multiply-shift: ``(h * a_i mod 2**64) >> 32`` is a uniform 32-bit value for each
    row, and distinct multipliers make the rows independent for distinct values.

    Example:
        >>> a = row_multipliers(b"ssk:cms ", 3)
        >>> a.dtype, bool(np.all(a % 2 == 1)), len(set(a.tolist()))
        (dtype('uint64'), True, 3)
    """
    base = int.from_bytes(tag, "little")
    values = [_mix_scalar((base + (i + 1) * int(_GAMMA)) & _MASK64) | 1 for i in range(count)]
    out = np.array(values, dtype=np.uint64)
    out.flags.writeable = False  # cached: shared by every caller
    return out


def _hash_ints(
    bits: np.ndarray, unsigned: bool, seed: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Hash uint64 bit patterns of integers (two's complement for signed input)."""
    n = bits.size
    if out is None:
        out = np.empty(n, dtype=np.uint64)
    tmp = np.empty(min(n, _BLOCK), dtype=np.uint64)
    key_int = _key(seed, _TAG_INT)
    delta = _U64((int(_key(seed, _TAG_UINT)) - int(key_int)) & _MASK64)
    for a in range(0, n, _BLOCK):
        src = bits[a : a + _BLOCK]
        z = out[a : a + _BLOCK]
        t = tmp[: z.size]
        np.multiply(src, _GAMMA, out=z)
        np.add(z, key_int, out=z)
        if unsigned:
            # values >= 2**63 live in their own domain: add (key_uint - key_int) to them
            np.right_shift(src, _U64(63), out=t)
            np.multiply(t, delta, out=t)
            np.add(z, t, out=z)
        _mix(z, t)
    return out


def _hash_floats(values: np.ndarray, seed: int) -> np.ndarray:
    """Hash float64 values; NaN rows get an arbitrary value (callers mask them out)."""
    n = values.size
    out = np.empty(n, dtype=np.uint64)
    tmp = np.empty(min(n, _BLOCK), dtype=np.uint64)
    key_int = _key(seed, _TAG_INT)
    key_uint = _key(seed, _TAG_UINT)
    key_float = _key(seed, _TAG_FLOAT)
    for a in range(0, n, _BLOCK):
        x = values[a : a + _BLOCK]
        with np.errstate(invalid="ignore"):
            integral = (x == np.trunc(x)) & (x >= -(2.0**63)) & (x < 2.0**64)
        high = integral & (x >= 2.0**63)
        low = integral & ~high
        as_int = np.where(low, x, 0.0).astype(np.int64).view(np.uint64)
        as_uint = np.where(high, x, 0.0).astype(np.uint64)
        z = out[a : a + _BLOCK]
        np.copyto(z, x.view(np.uint64))
        np.copyto(z, as_int, where=low)
        np.copyto(z, as_uint, where=high)
        np.multiply(z, _GAMMA, out=z)
        keys = np.where(low, key_int, np.where(high, key_uint, key_float))
        np.add(z, keys, out=z)
        _mix(z, tmp[: z.size])
    return out


def _gather_words(words: np.ndarray, byte_pos: np.ndarray, last: int | None) -> np.ndarray:
    """Unaligned little-endian 8-byte loads at ``byte_pos`` via two aligned gathers."""
    q = byte_pos >> 3
    shift = ((byte_pos & 7) << 3).astype(np.uint64)
    if last is not None:  # rows past their end read clamped garbage that is masked later
        np.minimum(q, last - 1, out=q)
    lo = words[q]
    q += 1
    hi = words[q]
    np.right_shift(lo, shift, out=lo)
    np.subtract(_U64(63), shift, out=shift)
    np.left_shift(hi, shift, out=hi)
    np.left_shift(hi, _U64(1), out=hi)  # two steps: a shift by 64 must give 0
    np.bitwise_or(lo, hi, out=lo)
    return lo


def _hash_bytes_block(
    data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, key: np.uint64
) -> np.ndarray:
    """Hash one block of byte strings given by (start, length) into ``data``.

    Short strings (at most 8 words): a loop over word positions, vectorised across
    the block. Longer ones: every word of every string at once, summed per string
    with ``np.add.reduceat``. Both compute the same sum, so results are identical.
    """
    n = starts.size
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    max_len = int(lengths.max())
    if max_len < 2 * n:
        table = np.arange(max_len + 1, dtype=np.uint64)
        np.multiply(table, _GAMMA, out=table)
        np.bitwise_xor(table, key, out=table)
        h = _mix(table, np.empty_like(table))[lengths]
    else:
        h = lengths.astype(np.uint64)
        np.multiply(h, _GAMMA, out=h)
        np.bitwise_xor(h, key, out=h)
        _mix(h, np.empty_like(h))
    tmp = np.empty(n, dtype=np.uint64)
    if max_len == 0:
        return _mix(h, tmp)
    lo = int(starts.min())
    nbytes = int((starts + lengths).max()) - lo
    words = np.zeros(nbytes // 8 + 2, dtype=np.uint64)  # aligned copy plus zero padding
    words.view(np.uint8)[:nbytes] = data[lo : lo + nbytes]
    rel = starts - lo
    min_len = int(lengths.min())
    max_words = (max_len + 7) >> 3
    if max_words <= 8:
        for j in range(max_words):
            done = 8 * j
            w = _gather_words(words, rel + done, None if min_len > done else words.size - 1)
            if min_len < done + 8:  # some strings end inside this word: zero the bytes past it
                np.bitwise_and(w, _MASKS[np.clip(lengths - done, 0, 8)], out=w)
            np.bitwise_xor(w, _U64((int(key) + (j + 1) * int(_GAMMA)) & _MASK64), out=w)
            _mix(w, tmp)
            np.add(h, w, out=h, where=(lengths > done) if min_len <= done else True)
        return _mix(h, tmp)
    nwords = (lengths + 7) >> 3
    first = np.cumsum(nwords) - nwords
    word_no = np.arange(int(first[-1] + nwords[-1]), dtype=np.int64)
    word_no -= np.repeat(first, nwords)
    offset = word_no << 3
    w = _gather_words(words, np.repeat(rel, nwords) + offset, None)
    rem = np.repeat(lengths, nwords) - offset
    np.clip(rem, 0, 8, out=rem)
    np.bitwise_and(w, _MASKS[rem], out=w)
    pos_key = (word_no + 1).astype(np.uint64)
    np.multiply(pos_key, _GAMMA, out=pos_key)
    np.add(pos_key, key, out=pos_key)
    np.bitwise_xor(w, pos_key, out=w)
    _mix(w, pos_key)
    nonempty = np.flatnonzero(nwords)
    h[nonempty] += np.add.reduceat(w, first[nonempty])
    return _mix(h, tmp)


def _hash_bytes(
    data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, seed: int, is_str: bool
) -> np.ndarray:
    key = _key(seed, _TAG_STR if is_str else _TAG_BYTES)
    n = starts.size
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    ends = np.cumsum(lengths)
    a = 0
    while a < n:
        base = int(ends[a - 1]) if a else 0
        b = int(np.searchsorted(ends, base + _STR_BLOCK_BYTES, side="right"))
        b = max(a + 1, min(b, a + _STR_BLOCK, n))
        out[a:b] = _hash_bytes_block(data, starts[a:b], lengths[a:b], key)
        a = b
    return out


def hash_column(column: Column, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Hash every row of a normalised column (rows that are null get arbitrary values).

    ``out``, if given, is a uint64 array of ``len(column)`` that may receive the result.

    Example:
        >>> from sketches._columns import IntColumn
        >>> col = IntColumn(np.array([5], dtype=np.uint64), unsigned=False, valid=None)
        >>> bool(hash_column(col, 0)[0] == hash64([5])[0])
        True
    """
    if isinstance(column, IntColumn):
        return _hash_ints(column.bits, column.unsigned, seed, out)
    if isinstance(column, FloatColumn):
        return _hash_floats(column.values, seed)
    if isinstance(column, BytesColumn):
        return _hash_bytes(column.data, column.starts, column.lengths, seed, column.is_str)
    if isinstance(column, DictColumn):
        return hash_column(column.dictionary, seed)[column.indices]
    if isinstance(column, MixedColumn):
        out = np.zeros(len(column), dtype=np.uint64)
        for rows, part in column.parts:
            out[rows] = hash_column(part, seed)
        return out
    raise TypeError(f"unknown column type {type(column).__name__}")  # pragma: no cover


#: lists of at most this many strings are hashed one by one (no array set-up)
_FEW = 32


def _hash_few_strings(values: list[str], seed: int) -> np.ndarray:
    """The block hash of :func:`_hash_bytes_block`, string by string in Python.

    Same arithmetic mod 2**64: ``h = mix(len * G ^ key)``, plus ``mix(word_j ^ (key +
    (j + 1) * G))`` for each little-endian 8-byte word (zero-padded), then ``mix(h)``.
    For a few short strings this skips the vectorised path's fixed set-up cost.
    """
    key = int(_key(seed, _TAG_STR))
    gamma = int(_GAMMA)
    out = []
    for text in values:
        data = text.encode("utf-8")
        n = len(data)
        h = _mix_scalar(((n * gamma) & _MASK64) ^ key)
        for j in range(0, (n + 7) >> 3):
            w = int.from_bytes(data[8 * j: 8 * j + 8], "little")
            h = (h + _mix_scalar(w ^ ((key + (j + 1) * gamma) & _MASK64))) & _MASK64
        out.append(_mix_scalar(h))
    return np.array(out, dtype=np.uint64)


def hash64(values: Any, seed: int = 0) -> np.ndarray:
    """Hash values to uint64 with the package's stable hash, skipping nulls.

    Args:
        values: A NumPy array (int, uint, bool, float, datetime, ``U``/``S`` or object
            dtype), a pyarrow Array or ChunkedArray, a pandas Series, a list, or a
            scalar. ``None``, Arrow nulls, ``NaN`` and ``NaT`` are skipped.
        seed: Hash seed in ``[0, 2**64)``; different seeds give independent hashes.

    Returns:
        One uint64 per non-null input value, in input order.

    Example:
        >>> hash64(["a", None, float("nan"), 3]).size
        2
        >>> bool(hash64(["a"], seed=1)[0] != hash64(["a"], seed=2)[0])
        True
    """
    seed = check_seed(seed)
    if type(values) is list and 0 < len(values) <= _FEW and all(type(v) is str for v in values):
        return _hash_few_strings(values, seed)
    values = prepare(values)
    out = np.empty(input_length(values), dtype=np.uint64)
    filled = 0
    for _, column in iter_columns(values):
        n = len(column)
        if column.valid is None:
            h = hash_column(column, seed, out[filled : filled + n])
            if h is not out[filled : filled + n]:
                out[filled : filled + n] = h
            filled += n
        else:
            h = hash_column(column, seed)[column.valid]
            out[filled : filled + h.size] = h
            filled += h.size
    return out if filled == out.size else out[:filled].copy()
