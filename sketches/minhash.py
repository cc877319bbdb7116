"""MinHash for Jaccard similarity, compatible with datasketch's ``affine64`` scheme.

Each value's 64-bit :func:`~sketches.hashing.hash64` (with this sketch's seed) is
pre-mixed by the MurmurHash3 64-bit finalizer and permuted by ``num_perm`` affine maps
``a_i * x + b_i mod 2**64`` (``a_i`` odd, so each is a bijection); the sketch keeps the
minimum per map. The parameters ``a, b`` are drawn exactly as datasketch (>= 2.0) draws
them for ``MinHash(num_perm, seed, scheme="affine64")`` (``numpy.random.RandomState``,
whose stream NumPy keeps frozen), so :meth:`MinHashSketch.to_datasketch` gives a
datasketch MinHash with the same hash values. Merge is the elementwise minimum.

Serialised payload (after the common header, whose seed is this sketch's seed):
num_perm uint32, then ``num_perm`` uint64 hash values.

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

from sketches._base import Sketch, check_int, iter_grouped
from sketches._format import KIND_MINHASH, Reader, seal
from sketches.errors import InvalidParameterError, SketchFormatError

__all__ = ["MinHashSketch"]

MAX_PERM = 1 << 16
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_CELLS = 1 << 20  # values x permutations per block


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


class MinHashSketch(Sketch):
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

    def __init__(self, num_perm: int = 128, *, seed: int = 1) -> None:
        self._num_perm = check_int("num_perm", num_perm, 1, MAX_PERM)
        self._seed = check_int("seed", seed, 0, (1 << 32) - 1)
        self._hashvalues = np.full(self._num_perm, _EMPTY, dtype=np.uint64)

    @property
    def num_perm(self) -> int:
        """Number of permutations."""
        return self._num_perm

    @property
    def hashvalues(self) -> np.ndarray:
        """A read-only view of the signature (``2**64 - 1`` where nothing was seen)."""
        view = self._hashvalues.view()
        view.flags.writeable = False
        return view

    def params(self) -> dict[str, Any]:
        """``{"num_perm", "seed"}``."""
        return {"num_perm": self._num_perm, "seed": self._seed}

    def _state_equal(self, other: Self) -> bool:
        return bool(np.array_equal(self._hashvalues, other._hashvalues))

    def is_empty(self) -> bool:
        """Whether no value was added."""
        return bool(np.all(self._hashvalues == _EMPTY))

    def _summary(self) -> str:
        return f"estimate={self.estimate():.1f}"

    def _signatures(self, hashes: np.ndarray) -> np.ndarray:
        """``[n, num_perm]`` permuted values of a block of hashes."""
        a, b = _permutations(self._num_perm, self._seed)
        phv = _fmix64(hashes)[:, None] * a[None, :]
        phv += b[None, :]
        return phv

    def _update_hashes(self, hashes: np.ndarray) -> None:
        step = max(1, _CELLS // self._num_perm)
        for start in range(0, hashes.size, step):
            block = self._signatures(hashes[start : start + step])
            np.minimum(self._hashvalues, block.min(axis=0), out=self._hashvalues)

    def merge(self, other: Self) -> Self:
        """Elementwise minimum (in place).

        Raises:
            IncompatibleSketchError: if ``other`` is not a MinHashSketch with equal
                ``num_perm`` and seed.
        """
        self._check_mergeable(other)
        np.minimum(self._hashvalues, other._hashvalues, out=self._hashvalues)
        return self

    # ------------------------------------------------------------ estimates

    def jaccard(self, other: Self) -> float:
        """Estimated Jaccard similarity: the fraction of equal signature entries."""
        self._check_mergeable(other)
        return float(np.count_nonzero(self._hashvalues == other._hashvalues)) / self._num_perm

    def jaccard_bounds(self, other: Self, k: float = 2.0) -> tuple[float, float]:
        """``jaccard -/+ k * sqrt(J (1 - J) / num_perm)``, clipped to ``[0, 1]``."""
        j = self.jaccard(other)
        sigma = math.sqrt(j * (1.0 - j) / self._num_perm)
        return max(0.0, j - k * sigma), min(1.0, j + k * sigma)

    def estimate(self) -> float:
        """Estimated number of distinct values: ``num_perm / sum(h / (2**64 - 1)) - 1``."""
        total = float(np.sum(self._hashvalues / float(_EMPTY)))
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

        return MinHash(seed=self._seed, hashvalues=self._hashvalues.copy(), scheme="affine64")

    # ------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """Serialise; equal states give equal bytes."""
        return seal(
            KIND_MINHASH,
            self._seed,
            struct.pack("<I", self._num_perm),
            self._hashvalues.astype("<u8").tobytes(),
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read bytes written by :meth:`to_bytes`.

        Raises:
            SketchFormatError: for anything but a valid MinHashSketch encoding.
        """
        reader, seed = Reader.open(data, KIND_MINHASH)
        (num_perm,) = reader.unpack("<I")
        try:
            out = cls(num_perm, seed=seed)
        except InvalidParameterError as exc:
            raise SketchFormatError(f"bad MinHashSketch parameters: {exc}") from None
        out._hashvalues = reader.array("<u8", num_perm, "hash values")
        reader.finish()
        return out

    # ------------------------------------------------------------ grouped build

    @classmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """One sketch per group: ``np.minimum.at`` of signature rows into group rows.

        Example:
            >>> parts = MinHashSketch.from_groups([0, 0, 1], ["a", "b", "a"], 2, num_perm=16)
            >>> parts[1] == MinHashSketch(num_perm=16).update(["a"])
            True
        """
        template = cls(**params)
        n_groups, chunks = iter_grouped(template, codes, values, n_groups)
        state = np.full((n_groups, template._num_perm), _EMPTY, dtype=np.uint64)
        step = max(1, _CELLS // template._num_perm)
        for group, hashes, _, _ in chunks:
            for start in range(0, hashes.size, step):
                block = template._signatures(hashes[start : start + step])
                np.minimum.at(state, group[start : start + step], block)
        out = []
        for i in range(n_groups):
            sketch = cls(template._num_perm, seed=template._seed)
            sketch._hashvalues = state[i].copy()
            out.append(sketch)
        return out
