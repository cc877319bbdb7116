"""HyperLogLog arithmetic: register and sparse-entry splits of hashes, and grouped builds.

A hash ``h`` gives register ``h >> (64 - p)`` and ``rho`` = 1 + the leading zeros of the
other ``64 - p`` bits (at most ``65 - p``). A sparse entry is the same at precision 25,
packed as ``index25 << 6 | rho25`` in a uint32; :func:`entry_registers` turns entries
into registers at any precision up to 25 exactly, because the ``25 - p`` index bits
below the register index are the first bits that rho counts.

Example:
    >>> import numpy as np
    >>> h = np.array([2**63 + 5], dtype=np.uint64)
    >>> [x.tolist() for x in split(h, 4)] == [x.tolist() for x in entry_registers(entries_of(h), 4)]
    True
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "SPARSE_PRECISION",
    "SPARSE_Q",
    "RHO_BITS",
    "COMPACT_KEYS",
    "sparse_limit",
    "entries_of",
    "dedupe",
    "entry_registers",
    "split",
    "GroupedBuild",
]

SPARSE_PRECISION = 25
SPARSE_Q = 64 - SPARSE_PRECISION  # hash bits below the sparse index
RHO_BITS = 6  # rho at the sparse precision is at most 40
COMPACT_KEYS = 1 << 22  # grouped build: deduplicate pending keys beyond this many


def sparse_limit(precision: int) -> int:
    """Most sparse entries a sketch holds: ``m / 4`` (4 bytes each against ``m`` bytes).

    Example:
        >>> sparse_limit(14)
        4096
    """
    return (1 << precision) // 4


def entries_of(hashes: np.ndarray) -> np.ndarray:
    """Sparse entries ``index25 << 6 | rho25`` (uint32) of uint64 hashes, unsorted."""
    index = (hashes >> np.uint64(SPARSE_Q)).astype(np.uint32)
    low = hashes & np.uint64((1 << SPARSE_Q) - 1)
    bit_length = np.frexp(low.astype(np.float64))[1]  # exact: low < 2**39; 0 for 0
    rho = (SPARSE_Q + 1 - bit_length).astype(np.uint32)
    index <<= np.uint32(RHO_BITS)
    index |= rho
    return index


def dedupe(keys: np.ndarray) -> np.ndarray:
    """Sorted keys, one per ``key >> 6`` (index, or group and index), keeping the largest."""
    s = np.sort(keys)
    if s.size < 2:
        return s
    slot = s >> s.dtype.type(RHO_BITS)
    keep = np.empty(s.size, dtype=bool)
    keep[-1] = True
    np.not_equal(slot[1:], slot[:-1], out=keep[:-1])
    return s[keep]


def entry_registers(entries: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """Register index (intp) and rho (uint8) at ``precision`` of sparse entries; exact.

    The ``25 - p`` index bits below the register index come first in the hash bits
    that rho counts: when any is set rho ends there, otherwise it continues into the
    sparse rho.
    """
    shift = SPARSE_PRECISION - precision
    full = (entries >> np.uint32(RHO_BITS)).astype(np.intp)
    low = full & ((1 << shift) - 1)
    bit_length = np.frexp(low.astype(np.float64))[1]
    rho25 = (entries & np.uint32((1 << RHO_BITS) - 1)).astype(np.intp)
    rho = np.where(low != 0, shift + 1 - bit_length, shift + rho25).astype(np.uint8)
    return full >> shift, rho


@functools.cache
def _rho_table() -> np.ndarray:
    """``table[t]`` = 1 + leading zeros of the 16-bit value ``t`` (``table[0] = 0``)."""
    bit_length = np.frexp(np.arange(1 << 16, dtype=np.float64))[1]  # exact for integers
    table = (17 - bit_length).astype(np.uint8)
    table[0] = 0
    return table


def split(hashes: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
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


class GroupedBuild:
    """State of a grouped build: sorted ``group << 32 | entry`` keys and register rows."""

    def __init__(self, precision: int, n_groups: int) -> None:
        self.precision = precision
        self.keys = np.empty(0, dtype=np.uint64)  # deduplicated keys of sparse groups
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.slot = np.full(n_groups, -1, dtype=np.int64)  # register row of dense groups
        self.dense = np.zeros((0, 1 << precision), dtype=np.uint8)

    def add(self, group: np.ndarray, hashes: np.ndarray) -> None:
        if self.dense.shape[0]:
            rows = np.flatnonzero(self.slot[group] >= 0)
            if rows.size:
                index, rho = split(hashes[rows], self.precision)
                index += self.slot[group[rows]] << self.precision
                np.maximum.at(self.dense.reshape(-1), index, rho)
                keep = np.ones(group.size, dtype=bool)
                keep[rows] = False
                group, hashes = group[keep], hashes[keep]
        keys = entries_of(hashes).astype(np.uint64)
        keys |= group.astype(np.uint64) << np.uint64(32)
        self.pending.append(dedupe(keys))
        self.n_pending += self.pending[-1].size
        if self.n_pending > max(COMPACT_KEYS, self.keys.size):
            self.compact()

    def compact(self) -> None:
        """Deduplicate the pending keys; groups past the limit move to registers."""
        keys = dedupe(np.concatenate([self.keys, *self.pending]))
        self.pending, self.n_pending = [], 0
        group_of = (keys >> np.uint64(32)).astype(np.int64)
        sizes = np.bincount(group_of, minlength=self.slot.size)
        over = np.flatnonzero(sizes > sparse_limit(self.precision))
        if over.size:
            first = self.dense.shape[0]
            self.slot[over] = np.arange(first, first + over.size)
            grown = np.zeros((over.size, 1 << self.precision), dtype=np.uint8)
            self.dense = np.concatenate((self.dense, grown))
            move = self.slot[group_of] >= 0
            index, rho = entry_registers(keys[move].astype(np.uint32), self.precision)
            index += self.slot[group_of[move]] << self.precision
            np.maximum.at(self.dense.reshape(-1), index, rho)
            keys = keys[~move]
        self.keys = keys
