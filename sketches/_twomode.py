"""Sketches held as a sorted array of distinct items while few, a dense state beyond.

The Bloom filter (value hashes, then bits), MinHash (value hashes, then the signature)
and HyperLogLog (sparse entries, then registers) share this shape: the mode depends
on the set of items alone, two dense states combine elementwise, and a dense sketch
takes items by setting them into its state. :class:`TwoModeSketch` holds what they
share: equality, emptiness, merge, many-way union and the end of the grouped build.

Example:
    >>> from sketches import BloomFilter
    >>> a = BloomFilter(capacity=100).update(["x"])
    >>> a.merge(BloomFilter(capacity=100).update(["y"])).is_hashes
    True
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, Self

import numpy as np

from sketches._base import Sketch
from sketches._format import Reader, seal_counted
from sketches.errors import SketchFormatError

__all__ = ["TwoModeSketch", "read_sorted_hashes", "sorted_group_hashes"]


class TwoModeSketch(Sketch):
    """Base of the two-mode sketches (not instantiated directly).

    A subclass names its two attributes in ``_SMALL`` (the sorted distinct items, or
    ``None`` once dense) and ``_DENSE`` (the dense state, or ``None`` while small),
    gives the elementwise ufunc that merges two dense states in ``_COMBINE``, and
    implements :meth:`_add_items`.
    """

    _SMALL: ClassVar[str]
    _DENSE: ClassVar[str]
    _COMBINE: ClassVar[np.ufunc]

    @abstractmethod
    def _add_items(self, items: np.ndarray) -> None:
        """Add small-mode items in either mode (they need not be distinct)."""

    def _small(self) -> np.ndarray | None:
        return getattr(self, self._SMALL)

    def _dense(self) -> np.ndarray | None:
        return getattr(self, self._DENSE)

    def _set_dense(self, dense: np.ndarray) -> None:
        setattr(self, self._DENSE, dense)
        setattr(self, self._SMALL, None)

    def _dense_is_empty(self, dense: np.ndarray) -> bool:
        return not dense.any()

    def _state_equal(self, other: Self) -> bool:
        mine, theirs = self._dense(), other._dense()
        if mine is None or theirs is None:
            small, other_small = self._small(), other._small()
            return (
                small is not None
                and other_small is not None
                and bool(np.array_equal(small, other_small))
            )
        return bool(np.array_equal(mine, theirs))

    def is_empty(self) -> bool:
        """Whether nothing (non-null) was added."""
        dense = self._dense()
        if dense is None:
            small = self._small()
            assert small is not None
            return small.size == 0
        return self._dense_is_empty(dense)

    def _merge_modes(self, other: Self) -> Self:
        """Merge ``other`` in place: items while small, ``_COMBINE`` of dense states."""
        self._check_mergeable(other)
        mine, theirs = self._dense(), other._dense()
        if theirs is None:
            items = other._small()
            assert items is not None
            if items.size:
                self._add_items(items)
        elif mine is None:
            small = self._small()
            self._set_dense(theirs.copy())
            assert small is not None
            self._add_items(small)
        else:
            self._COMBINE(mine, theirs, out=mine)
        return self

    @classmethod
    def _union_many(cls, sketches: list[Self]) -> Self:
        first = sketches[0]
        for other in sketches[1:]:
            first._check_mergeable(other)
        out = cls(**first.params())
        items = [s._small() for s in sketches]
        for s in sketches:
            dense = s._dense()
            if dense is None:
                continue
            mine = out._dense()
            if mine is None:
                out._set_dense(dense.copy())
            else:
                cls._COMBINE(mine, dense, out=mine)
        held = [s for s in items if s is not None and s.size]
        if held:
            out._add_items(np.concatenate(held))
        return out

    @classmethod
    def _from_parts(
        cls,
        template: Self,
        slots: list[int],
        dense: Any,
        bounds: list[int],
        items: np.ndarray,
    ) -> list[Self]:
        """Group ``i``'s sketch: row ``dense[slots[i]]`` if ``slots[i] >= 0``, else
        ``items[bounds[i]:bounds[i + 1]]`` (the end of a grouped build)."""
        params = template.params()
        out = []
        for i, slot in enumerate(slots):
            sketch = cls(**params)
            if slot >= 0:
                sketch._set_dense(dense[slot].copy())
            elif bounds[i + 1] > bounds[i]:
                setattr(sketch, cls._SMALL, items[bounds[i] : bounds[i + 1]].copy())
            out.append(sketch)
        return out

    @classmethod
    def _group_bytes(cls, template: Self, head: int, items: np.ndarray, slot: np.ndarray,
                     dense: Any, bounds: Any) -> list[bytes]:
        """The end of a grouped build as bytes (``group_bytes``): group ``i``'s small form
        (``items[bounds[i]:bounds[i + 1]]``, after the first ``head`` bytes of the
        template's own and a count) written with the others in one buffer, or its dense
        row ``dense[slot[i]]``."""
        small = slot < 0
        bounds = np.asarray(bounds)
        buf, offsets = seal_counted(template.to_bytes()[:head], items,
                                    np.where(small, np.diff(bounds), 0), bounds, small)
        params = template.params()
        out = []
        for i, row in enumerate(slot.tolist()):
            if row < 0:
                out.append(buf[offsets[i] : offsets[i + 1]].tobytes())
            else:
                sketch = cls(**params)
                sketch._set_dense(dense[row].copy())
                out.append(sketch.to_bytes())
        return out


def sorted_group_hashes(
    chunks: Iterable[tuple[np.ndarray, np.ndarray, Any, Any]], n_groups: int, limit: int
) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray, np.ndarray]:
    """Sort and deduplicate the ``(group, hash)`` pairs of a grouped build.

    Returns:
        ``group, hashes`` (sorted by group, then hash, distinct), ``bounds`` (group
        ``i``'s pairs are ``bounds[i]:bounds[i + 1]``), ``slot`` (the dense row of
        each group holding more than ``limit`` hashes, -1 for the others) and ``big``
        (those groups, increasing).

    Example:
        >>> chunks = [(np.array([1, 0, 1]), np.array([5, 3, 5], dtype=np.uint64), None, None)]
        >>> group, hashes, bounds, slot, big = sorted_group_hashes(chunks, 2, 0)
        >>> hashes.tolist(), bounds, slot.tolist()
        ([3, 5], [0, 1, 2], [0, 1])
    """
    group_parts, hash_parts = [], []
    for group, hashes, _, _ in chunks:
        group_parts.append(group)
        hash_parts.append(hashes)
    group = np.concatenate(group_parts) if group_parts else np.empty(0, np.int64)
    hashes = np.concatenate(hash_parts) if hash_parts else np.empty(0, np.uint64)
    order = np.lexsort((hashes, group))
    group, hashes = group[order], hashes[order]
    if group.size:
        keep = np.concatenate(([True], (group[1:] != group[:-1]) | (hashes[1:] != hashes[:-1])))
        group, hashes = group[keep], hashes[keep]
    bounds = np.searchsorted(group, np.arange(n_groups + 1)).tolist()
    slot = np.full(n_groups, -1, dtype=np.int64)
    big = np.flatnonzero(np.diff(bounds) > limit)
    slot[big] = np.arange(big.size)
    return group, hashes, bounds, slot, big


def read_sorted_hashes(reader: Reader, limit: int, name: str) -> np.ndarray:
    """Read a small-mode payload: uint32 count (at most ``limit``), increasing uint64s.

    Raises:
        SketchFormatError: (naming ``name``) for too many, unordered or repeated hashes,
            or bytes after them.
    """
    (count,) = reader.unpack("<I", "hash count")
    if count > limit:
        raise SketchFormatError(f"non-canonical {name} bytes: too many hashes")
    hashes = reader.array("<u8", count, "hashes")
    reader.finish()
    if np.any(hashes[1:] <= hashes[:-1]):
        raise SketchFormatError(f"{name} hashes out of order or repeated")
    return hashes
