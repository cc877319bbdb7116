"""Python values of column rows: what heavy-hitter candidates and exact tables hold."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sketches._columns import BytesColumn, Column, DictColumn, FloatColumn, IntColumn


def _int_item(bits: int, unsigned: bool) -> int:
    return bits if unsigned or bits < 1 << 63 else bits - (1 << 64)


def _float_item(x: float) -> int | float:
    """Canonical item for a float: an integral value in range becomes an int."""
    if math.isfinite(x) and x == math.trunc(x) and -(2.0**63) <= x < 2.0**64:
        return int(x)
    return x


def column_items(column: Column, rows: np.ndarray) -> list[Any]:
    """Python values (int, float, str or bytes) of the given non-null rows.

    Numbers come back canonical (``True`` -> ``1``, ``2.0`` -> ``2``) because they hash
    by value.

    Example:
        >>> from sketches._columns import iter_columns
        >>> [column_items(col, np.array([0, 1])) for _, col in iter_columns([2.0, 2.5])]
        [[2, 2.5]]
    """
    if isinstance(column, IntColumn):
        return [_int_item(v, column.unsigned) for v in column.bits[rows].tolist()]
    if isinstance(column, FloatColumn):
        return [_float_item(v) for v in column.values[rows].tolist()]
    if isinstance(column, BytesColumn):
        data = np.ascontiguousarray(column.data).data
        starts = column.starts[rows].tolist()
        ends = (column.starts[rows] + column.lengths[rows]).tolist()
        blobs = [bytes(data[a:b]) for a, b in zip(starts, ends, strict=True)]
        return [b.decode("utf-8") for b in blobs] if column.is_str else blobs
    if isinstance(column, DictColumn):
        return column_items(column.dictionary, column.indices[rows])
    out: list[Any] = [None] * rows.size
    for i, (_, part) in enumerate(column.parts):
        sel = np.flatnonzero(column.part_of[rows] == i)
        if sel.size:
            values = column_items(part, column.index_in_part[rows[sel]])
            for j, v in zip(sel.tolist(), values, strict=True):
                out[j] = v
    return out
