"""What every sketch shares: vectorised update, merge checks, grouped build, equality.

Subclasses implement the sketch itself (``_update_hashes``, ``merge``, ``to_bytes``,
``from_bytes``, ``_state_equal``, ``params``, ``from_groups``); :func:`iter_grouped`
gives ``from_groups`` the validated group codes and hashes chunk by chunk.

Example:
    >>> from sketches import HyperLogLog
    >>> parts = HyperLogLog.from_groups([0, 1, 0], ["a", "b", "c"], 2, precision=10)
    >>> [round(p.estimate()) for p in parts]
    [2, 1]
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Self

import numpy as np

from sketches._columns import Column, input_length, iter_columns, prepare
from sketches.errors import IncompatibleSketchError, InvalidParameterError
from sketches.hashing import hash_column

__all__ = ["Sketch", "check_int", "check_codes", "iter_grouped", "read_only"]


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """Validate an integer parameter in ``[low, high]``.

    Example:
        >>> check_int("precision", 14, 4, 18)
        14
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidParameterError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written through.

    Example:
        >>> read_only(np.zeros(2)).flags.writeable
        False
    """
    view = array.view()
    view.flags.writeable = False
    return view


class Sketch(ABC):
    """Base class of the mergeable sketches (not instantiated directly)."""

    KIND: ClassVar[int]
    _seed: int

    # ------------------------------------------------------------ to implement

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameter set: two sketches merge only if these are equal."""

    @abstractmethod
    def _update_hashes(self, hashes: np.ndarray) -> None:
        """Add already-hashed, non-null values."""

    @abstractmethod
    def _state_equal(self, other: Self) -> bool:
        """Whether the state (not the parameters) equals ``other``'s."""

    @abstractmethod
    def merge(self, other: Self) -> Self:
        """Merge ``other`` into this sketch in place and return ``self``."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether nothing (non-null) was ever added."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Deterministic self-describing serialisation."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Inverse of :meth:`to_bytes`."""

    @abstractmethod
    def _summary(self) -> str:
        """Short estimate text for ``repr``."""

    @classmethod
    @abstractmethod
    def from_groups(cls, codes: Any, values: Any, n_groups: int, **params: Any) -> list[Self]:
        """Build one sketch per group in a single vectorised pass.

        Args:
            codes: Integer group id of each value (same length as ``values``), each in
                ``[0, n_groups)``.
            values: The values, in any form :meth:`update` accepts (nulls skipped).
            n_groups: Number of sketches to return.
            **params: Constructor parameters shared by every group's sketch.

        Returns:
            ``n_groups`` sketches; sketch ``i`` equals (byte for byte) a fresh sketch
            updated with ``values[codes == i]``.
        """

    # ------------------------------------------------------------ shared surface

    @property
    def seed(self) -> int:
        """The hash seed."""
        return self._seed

    def _hashed(self, values: Any) -> Iterator[tuple[int, Column, np.ndarray]]:
        """Yield ``(row offset, column, hashes of every row)`` chunk by chunk."""
        for offset, column in iter_columns(values):
            yield offset, column, hash_column(column, self._seed)

    def update(self, values: Any) -> Self:
        """Add values (array, Arrow array, Series, list or scalar); nulls and NaN are skipped.

        Returns:
            ``self``, so calls chain.
        """
        for _, column, hashes in self._hashed(values):
            if column.valid is not None:
                hashes = hashes[column.valid]
            self._update_hashes(hashes)
        return self

    def _check_mergeable(self, other: Any) -> None:
        if type(other) is not type(self) or other.params() != self.params():
            other_params = other.params() if isinstance(other, Sketch) else {}
            raise IncompatibleSketchError(
                type(self).__name__, self.params(), type(other).__name__, other_params
            )

    def copy(self) -> Self:
        """An independent deep copy."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, type(self))
        return self.params() == other.params() and self._state_equal(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner}; {self._summary()})"

    @classmethod
    def _union_many(cls, sketches: list[Self]) -> Self:
        out = sketches[0].copy()
        for other in sketches[1:]:
            out.merge(other)
        return out


def iter_grouped(
    template: Sketch, codes: Any, values: Any, n_groups: Any
) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray, Column, np.ndarray]]]:
    """Validate the grouped-build arguments, then iterate over non-null values.

    Returns:
        ``n_groups`` as an int, and an iterator of ``(codes, hashes, column, rows)``
        chunks where ``rows`` are the positions of the values inside ``column``.

    Example:
        >>> from sketches import HyperLogLog
        >>> n, chunks = iter_grouped(HyperLogLog(4), [1, 0], [None, 7], 2)
        >>> n, [(c.tolist(), r.tolist()) for c, _, _, r in chunks]
        (2, [([0], [1])])
    """
    values = prepare(values)
    codes_arr, n = check_codes(codes, input_length(values), n_groups)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, Column, np.ndarray]]:
        for offset, column, hashes in template._hashed(values):
            chunk_codes = codes_arr[offset : offset + len(column)]
            if column.valid is None:
                yield chunk_codes, hashes, column, np.arange(len(column))
            else:
                rows = np.flatnonzero(column.valid)
                yield chunk_codes[rows], hashes[rows], column, rows

    return n, chunks()


def check_codes(codes: Any, length: int, n_groups: Any) -> tuple[np.ndarray, int]:
    """Validate group codes: 1-D integers in ``[0, n_groups)``, one per value.

    Example:
        >>> check_codes([0, 2], 2, 3)[0].dtype
        dtype('int64')
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 0:
        raise InvalidParameterError(f"n_groups must be a non-negative integer, got {n_groups!r}")
    codes_arr = np.asarray(codes)
    if codes_arr.ndim != 1 or (codes_arr.size and codes_arr.dtype.kind not in "iu"):
        raise InvalidParameterError("codes must be a 1-D integer array")
    codes_arr = codes_arr.astype(np.int64, copy=False)
    if codes_arr.size != length:
        raise InvalidParameterError(f"codes has {codes_arr.size} entries but values has {length}")
    if codes_arr.size and (int(codes_arr.min()) < 0 or int(codes_arr.max()) >= n_groups):
        raise InvalidParameterError(f"codes must lie in [0, {int(n_groups)})")
    return codes_arr, int(n_groups)
