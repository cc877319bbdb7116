"""Group keys and distinct items of a pass's rows, vectorised with Arrow.

A group key is the canonical JSON of a window's group-by values (``["US","mobile"]``;
``null`` for a missing value, ``true``/``false`` for booleans): the same text whichever
input partition or batch computes it, so that partials of one group meet under one key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streaming.spec.windows import WindowSpec


def group_keys(window: WindowSpec, columns: dict[str, pa.Array], n_rows: int
                ) -> tuple[np.ndarray, list[str]]:
    """Per row, a code of its group, and the canonical JSON key of each code."""
    if not window.group_by:
        return np.zeros(n_rows, dtype=np.int64), ["[]"]
    codes = np.zeros(n_rows, dtype=np.int64)
    levels: list[list[Any]] = []
    for g in window.group_by:
        c, u = _factorize(columns[g])
        codes = codes * max(len(u), 1) + c
        levels.append(u)
    codes, uniq = factorize(codes)
    keys = []
    for combined in uniq.tolist():
        parts = []
        for lv in reversed(levels):
            n = max(len(lv), 1)
            parts.append(lv[combined % n])
            combined //= n
        parts.reverse()
        keys.append(orjson.dumps([None if _is_null(v) else _group_text(v)
                                  for v in parts]).decode())
    return codes.astype(np.int64), keys


def factorize(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``values`` (an array of integers or strings) in order of first sight, and
    the distinct values in that order (as ``pandas.factorize``)."""
    encoded = pc.dictionary_encode(pa.array(values))
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_numpy(zero_copy_only=False))


def _factorize(col: Any) -> tuple[np.ndarray, list[Any]]:
    """A group-by column's codes in order of first sight and its distinct values, by
    value as the column holds them: an integer stays an integer whether or not the
    batch holds a null (so its key is the same in every partition), a null and a NaN
    are one missing value, and -0.0 is 0.0."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):  # encoded again below, nulls included
        col = col.dictionary_decode()
    if pa.types.is_floating(col.type):
        col = pc.add(pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col),
                     pa.scalar(0.0, col.type))  # -0.0 + 0.0 is 0.0
    encoded = pc.dictionary_encode(col, null_encoding="encode")
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_pylist())


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _group_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def distinct_items(codes: np.ndarray, values: pa.Array, n: int) -> list[list[Any]]:
    """Per group code, the distinct non-null values seen with it, in order of first sight."""
    encoded = pc.dictionary_encode(values)  # nulls stay null
    index = encoded.indices.to_numpy(zero_copy_only=False)
    valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    levels = encoded.dictionary.to_pylist()
    width = max(len(levels), 1)
    pairs = pc.unique(pa.array(codes[valid] * width + index[valid].astype(np.int64))
                      ).to_numpy(zero_copy_only=False)
    out: list[list[Any]] = [[] for _ in range(n)]
    for c, v in zip((pairs // width).tolist(), (pairs % width).tolist(), strict=True):
        out[c].append(levels[v])
    return out
