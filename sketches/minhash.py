"""MinHash for Jaccard similarity, compatible with datasketch's ``affine64`` scheme.

Each value's 64-bit :func:`~sketches.hashing.hash64` (with this sketch's seed) is
pre-mixed by the MurmurHash3 64-bit finalizer and permuted by ``num_perm`` affine maps
``a_i * x + b_i mod 2**64`` (``a_i`` odd, so each is a bijection); the sketch keeps the
minimum per map. The parameters ``a, b`` are drawn exactly as datasketch (>= 2.0) draws
them for ``MinHash(num_perm, seed, scheme="affine64")`` (``numpy.random.RandomState``,
whose stream NumPy keeps frozen), so :meth:`MinHashSketch.to_datasketch` gives a
datasketch MinHash with the same hash values. Merge is the elementwise minimum.

Small sketches keep their values' hashes instead: while at most ``num_perm`` distinct
hashes were added (8 bytes each, the size of the signature) the sketch holds them
sorted and computes the signature from them when asked, so every answer equals the
signature form's; past that it keeps the signature. The mode depends on the set of
hashes alone, so any order, split and mix of merges gives the one-pass bytes.

Serialised payload (after the common header, whose seed is this sketch's seed):
num_perm uint32, then in format version 2 an encoding uint8: 0, ``num_perm`` uint64
hash values; 1, a uint32 count and that many uint64 value hashes in increasing order.
Version 1 wrote the hash values alone; it loads as a signature (the empty one as the
empty sketch).

Example:
    >>> a = MinHashSketch(num_perm=256).update([f"w{i}" for i in range(100)])
    >>> b = MinHashSketch(num_perm=256).update([f"w{i}" for i in range(50, 150)])
    >>> abs(a.jaccard(b) - 50 / 150) < 0.15
    True
    >>> MinHashSketch.from_bytes(a.to_bytes()) == a
    True
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any, Self

import numpy as np

from sketches import _topk
from sketches._base import check_int, iter_grouped, read_only
from sketches._format import KIND_MINHASH, Reader, seal
from sketches._twomode import TwoModeSketch, read_sorted_hashes, sorted_group_hashes
from sketches.errors import InvalidParameterError, SketchFormatError

__all__ = ["MinHashSketch"]

MAX_PERM = 1 << 16
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_CELLS = 1 << 20  # values x permutations per block
_NO_HASHES = np.empty(0, dtype=np.uint64)
_NO_HASHES.flags.writeable = False


@functools.lru_cache(maxsize=32)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine64 parameters ``(a, b)`` for ``(num_perm, seed)``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h *= _FMIX1
    h ^= h >> np.uint64(33)
    h *= _FMIX2
    h ^= h >> np.uint64(33)
    return h


class MinHashSketch(TwoModeSketch):
    """MinHash signature with ``num_perm`` permutations.

    Args:
        num_perm: Number of permutations in ``[1, 65536]``; the Jaccard estimate has
            standard error ``sqrt(J (1 - J) / num_perm)``.
        seed: Seed of both the value hash and the permutations, in ``[0, 2**32)``
            (datasketch's default is 1, and so is ours).

    Example:
        >>> round(MinHashSketch(num_perm=512).update(range(1000)).estimate(), -2)
        1000.0
    """

    KIND = KIND_MINHASH
    _SMALL, _DENSE, _COMBINE = "_hashes", "_hashvalues", np.minimum

    def __init__(self, num_perm: int = 128, *, seed: int = 1) -> None:
        self._num_perm = check_int("num_perm", num_perm, 1, MAX_PERM)
        self._seed = check_int("seed", seed, 0, (1 << 32) - 1)
        self._hashes: np.ndarray | None = _NO_HASHES  # sorted distinct hashes while few
        self._hashvalues: np.ndarray | None = None  # the signature, once past num_perm

    @property
    def num_perm(self) -> int:
        """Number of permutations."""
        return self._num_perm

    @property
    def is_hashes(self) -> bool:
        """Whether the sketch holds its values' hashes rather than the signature."""
        return self._hashvalues is None

    @property
    def hashvalues(self) -> np.ndarray:
        """A read-only view of the signature (``2**64 - 1`` where nothing was seen)."""
        return read_only(self._signature())

    def _signature(self) -> np.ndarray:
        if self._hashvalues is not None:
            return self._hashvalues
        out = np.full(self._num_perm, _EMPTY, dtype=np.uint64)
        assert self._hashes is not None
        step = max(1, _CELLS // self._num_perm)
        for start in range(0, self._hashes.size, step):
            block = self._signatures(self._hashes[start : start + step])
            np.minimum(out, block.min(axis=0), out=out)
        return out

    def _add_items(self, hashes: np.ndarray) -> None:
        """Add hashes in either mode (hash mode: ``hashes`` need not be distinct)."""
        if self._hashvalues is None:
            assert self._hashes is not None
            self._hashes = _topk.sorted_unique(np.concatenate((self._hashes, hashes)))
            if self._hashes.size > self._num_perm:
                self._hashvalues, self._hashes = self._signature(), None
            return
        step = max(1, _CELLS // self._num_perm)
        for start in range(0, hashes.size, step):
            block = self._signatures(hashes[start : start + step])
            np.minimum(self._hashvalues, block.min(axis=0), out=self._hashvalues)

    def params(self) -> dict[str, Any]:
        """``{"num_perm", "seed"}``."""
        return {"num_perm": self._num_perm, "seed": self._seed}

    def _dense_is_empty(self, dense: np.ndarray) -> bool:
        return bool(np.all(dense == _EMPTY))

    def _summary(self) -> str:
        return f"estimate={self.estimate():.1f}"

    def _signatures(self, hashes: np.ndarray) -> np.ndarray:
        """``[n, num_perm]`` permuted values of a block of hashes."""
        a, b = _permutations(self._num_perm, self._seed)
        phv = _fmix64(hashes)[:, None] * a[None, :]
        phv += b[None, :]
        return phv

    def _update_hashes(self, hashes: np.ndarray) -> None:
        start, step = 0, self._num_perm + 1
        while self._hashvalues is None and start < hashes.size:
            self._add_items(hashes[start : start + step])
            start += step
        if start < hashes.size:
            self._add_items(hashes[start:])

    def merge(self, other: Self) -> Self:
        """Union: hashes merge while few, signatures take the elementwise minimum.

        Raises:
            IncompatibleSketchError: if ``other`` is not a MinHashSketch with equal
                ``num_perm`` and seed.
        """
        return self._merge_modes(other)

    # ------------------------------------------------------------ estimates

    def jaccard(self, other: Self) -> float:
        """Estimated Jaccard similarity: the fraction of equal signature entries."""
        self._check_mergeable(other)
        equal = np.count_nonzero(self._signature() == other._signature())
        return float(equal) / self._num_perm

    def jaccard_bounds(self, other: Self, k: float = 2.0) -> tuple[float, float]:
        """``jaccard -/+ k * sqrt(J (1 - J) / num_perm)``, clipped to ``[0, 1]``."""
        j = self.jaccard(other)
        sigma = math.sqrt(j * (1.0 - j) / self._num_perm)
        return max(0.0, j - k * sigma), min(1.0, j + k * sigma)

    def estimate(self) -> float:
        """Estimated number of distinct values: ``num_perm / sum(h / (2**64 - 1)) - 1``."""
        total = float(np.sum(self._signature() / float(_EMPTY)))
        return self._num_perm / total - 1.0

    def relative_error(self) -> float:
        """Relative standard error of :meth:`estimate`: ``1 / sqrt(num_perm - 2)``."""
        return 1.0 / math.sqrt(self._num_perm - 2) if self._num_perm > 2 else math.inf

    def lower_bound(self, k: float = 2.0) -> float:
        """``estimate * (1 - k * relative_error())``, not below 0."""
        return max(0.0, self.estimate() * (1.0 - k * self.relative_error()))

    def upper_bound(self, k: float = 2.0) -> float:
        """``estimate * (1 + k * relative_error())``."""
        return self.estimate() * (1.0 + k * self.relative_error())

    def to_datasketch(self) -> Any:
        """The equivalent ``datasketch.MinHash`` (scheme ``affine64``; needs datasketch >= 2.0)."""
        from datasketch import MinHash

        return MinHash(seed=self._seed, hashvalues=self._signature().copy(), scheme="affine64")

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise; equal states give equal bytes."""
        if self._hashvalues is None:
            assert self._hashes is not None
            return seal(
                KIND_MINHASH,
                self._seed,
                struct.pack("<IBI", self._num_perm, 1, self._hashes.size),
                self._hashes.astype("<u8").tobytes(),
            )
        return seal(
            KIND_MINHASH,
            self._seed,
            struct.pack("<IB", self._num_perm, 0),
            self._hashvalues.astype("<u8").tobytes(),
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes` (format version 1 or 2).

        Raises:
            SketchFormatError: for anything but a valid, canonical MinHashSketch encoding.
        """
        reader, seed = Reader.open(data, KIND_MINHASH)
        (num_perm,) = reader.unpack("<I")
        try:
            out = cls(num_perm, seed=seed)
        except InvalidParameterError as exc:
            raise SketchFormatError(f"bad MinHashSketch parameters: {exc}") from None
        encoding = 0 if reader.version < 2 else reader.unpack("<B", "encoding")[0]
        if encoding == 1:
            out._hashes = read_sorted_hashes(reader, num_perm, "MinHashSketch")
            return out
        if encoding != 0:
            raise SketchFormatError(f"unknown MinHashSketch encoding {encoding}")
        signature = reader.array("<u8", num_perm, "hash values")
        reader.finish()
        if np.any(signature != _EMPTY):
            out._hashvalues, out._hashes = signature, None
        elif reader.version >= 2:  # version 1 wrote the empty sketch as a signature
            raise SketchFormatError("non-canonical MinHashSketch bytes: empty signature")
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group from one sort of (group, hash) pairs: O(rows + groups).

        Groups past ``num_perm`` distinct hashes get signatures (``np.minimum.at`` of
        signature rows into their rows); the others keep their slice of the pairs.

        Example:
            >>> parts = MinHashSketch.from_groups([0, 0, 1], ["a", "b", "a"], 2, num_perm=16)
            >>> parts[1] == MinHashSketch(num_perm=16).update(["a"])
            True
        """
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        group, hashes, bounds, slot, big = sorted_group_hashes(chunks, n_groups, template._num_perm)
        state = np.full((big.size, template._num_perm), _EMPTY, dtype=np.uint64)
        rows = np.flatnonzero(slot[group] >= 0)
        step = max(1, _CELLS // template._num_perm)
        for start in range(0, rows.size, step):
            sel = rows[start : start + step]
            np.minimum.at(state, slot[group[sel]], template._signatures(hashes[sel]))
        return cls._from_parts(template, slot.tolist(), state, bounds, hashes)
