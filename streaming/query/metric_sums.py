"""Exact metrics over many stored windows, from Arrow columns, without a JVM.

The same reductions Spark's ``sum``/``min``/``max`` make over the ``aggregates``
table: nulls are skipped and a group with no value gets ``None``; ``DECIMAL``
sums are exact (128-bit values split into 64/32-bit parts and summed as
integers); ``BIGINT`` sums are Python ints.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np


def combine_of(column: str) -> str:
    """How a stored metric column combines over windows: ``min``, ``max`` or ``sum``."""
    return "min" if column.startswith("min_") else "max" if column.startswith("max_") else "sum"


def group_codes(rows: Any) -> tuple[Any, Any, int]:
    """(code per row, first row of each code, number of codes) by ``group_key``."""
    from streaming.query.read import numpy_of

    enc = rows["group_key"].combine_chunks().dictionary_encode()
    codes = numpy_of(enc.indices)[0].astype(np.int64)
    n = len(enc.dictionary)
    first = np.full(n, codes.size, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(codes.size))
    return codes, first, n


def combine(rows: Any, columns: list[str], *, by_group: bool) -> list[dict[str, Any]]:
    """One dict per group (or one for all rows): ``_windows``, ``_group`` and each column.

    ``rows`` is a ``pyarrow.Table`` with ``group_key`` (and ``group`` when
    ``by_group``) and the ``columns``. Without groups and without rows, one row of
    zero windows and ``None`` values comes back, as from SQL.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"group_key": ["[]", "[]"], "count": [2, 3],
        ...               "max_x": [1.5, None]})
        >>> combine(t, ["count", "max_x"], by_group=False)
        [{'_windows': 2, '_group': None, 'count': 5, 'max_x': 1.5}]
    """
    from streaming.query.read import arrow_of

    if by_group:
        if rows.num_rows == 0:
            return []
        codes, first, n = group_codes(rows)
        maps = rows["group"].take(arrow_of(first)).to_pylist()
        groups: list[dict[str, str] | None] = [dict(m or []) for m in maps]
    else:
        codes, n, groups = np.zeros(rows.num_rows, dtype=np.int64), 1, [None]
    windows = np.bincount(codes, minlength=n)
    out = [{"_windows": int(windows[g]), "_group": groups[g]} for g in range(n)]
    for col in columns:
        values = _reduce(rows[col].combine_chunks(), codes, n, combine_of(col))
        for g in range(n):
            out[g][col] = values[g]
    return out


def _reduce(arr: Any, codes: np.ndarray, n: int, how: str) -> list[Any]:
    import pyarrow as pa

    from streaming.query.read import numpy_of

    typ = arr.type
    if pa.types.is_decimal(typ):
        if how != "sum":
            raise ValueError(f"{how} of a decimal column is not a stored metric")
        valid = np.ones(len(arr), dtype=bool)
        if arr.null_count:
            valid = numpy_of(arr.is_valid())[0]
        present = np.bincount(codes[valid], minlength=n) > 0
        return _decimal_sums(arr, codes[valid], valid, n, present)
    raw, valid = numpy_of(arr)
    present = np.bincount(codes[valid], minlength=n) > 0
    if pa.types.is_integer(typ):
        vals = raw.astype(np.int64)[valid]
        if how == "sum":
            totals = np.zeros(n, dtype=np.int64)
            np.add.at(totals, codes[valid], vals)
            return [int(t) if p else None for t, p in zip(totals, present, strict=True)]
        vals = vals.astype(np.float64)
    else:
        vals = raw.astype(np.float64)[valid]
    if how == "sum":
        res = np.zeros(n)
        np.add.at(res, codes[valid], vals)
    elif how == "min":
        res = np.full(n, np.inf)
        np.minimum.at(res, codes[valid], vals)
    else:
        res = np.full(n, -np.inf)
        np.maximum.at(res, codes[valid], vals)
    if pa.types.is_integer(typ):
        return [int(r) if p else None for r, p in zip(res, present, strict=True)]
    return [float(r) if p else None for r, p in zip(res, present, strict=True)]


def _decimal_sums(arr: Any, codes: np.ndarray, valid: np.ndarray, n: int,
                  present: np.ndarray) -> list[Decimal | None]:
    """Exact sums of a decimal128 column: each value is hi * 2**64 + lo."""
    if arr.type.bit_width != 128:
        return _slow_decimal_sums(arr, codes, valid, n, present)
    words = np.frombuffer(arr.buffers()[1], dtype="<u8").reshape(-1, 2)
    words = words[arr.offset:arr.offset + len(arr)][valid]
    lo, hi = words[:, 0], words[:, 1].view(np.int64)
    parts = []
    for part, dtype in ((lo & np.uint64(0xFFFFFFFF), np.uint64), (lo >> np.uint64(32), np.uint64),
                        (hi, np.int64)):
        acc = np.zeros(n, dtype=dtype)
        np.add.at(acc, codes, part.astype(dtype))
        parts.append(acc)
    scale = arr.type.scale
    out: list[Decimal | None] = []
    for g in range(n):
        if not present[g]:
            out.append(None)
            continue
        total = int(parts[0][g]) + (int(parts[1][g]) << 32) + (int(parts[2][g]) << 64)
        out.append(Decimal(f"{total}E-{scale}"))
    return out


def _slow_decimal_sums(arr: Any, codes: np.ndarray, valid: np.ndarray, n: int,
                       present: np.ndarray) -> list[Decimal | None]:
    totals = [Decimal(0)] * n
    values = [v for v, ok in zip(arr.to_pylist(), valid.tolist(), strict=True) if ok]
    for g, v in zip(codes.tolist(), values, strict=True):
        totals[g] += v
    return [t if p else None for t, p in zip(totals, present, strict=True)]
