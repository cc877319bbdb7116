"""Event times: epoch numbers and ISO 8601 texts as epoch microseconds, and back.

Python's ``datetime.fromisoformat`` is the rule for ISO 8601; Arrow parses, much faster,
the strings of the one common shape on which both agree (:data:`COMMON_ISO`), a block at
a time, so the answer for a string never depends on the block it came in.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COMMON_ISO", "epoch_us", "iso_us", "iso_block", "timestamp_text"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
#: the usual ISO 8601 shape (seconds within 00-59; a fraction of at most 6 digits; an
#: offset): where Arrow's parser and ``datetime.fromisoformat`` give the same instant
COMMON_ISO = (r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
              r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")


def epoch_us(raw: Any, scale: int) -> int | None:
    """An epoch number (or numeric string) in seconds or milliseconds, as microseconds."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    us = raw * scale if isinstance(raw, int) else int(raw * scale)
    return us if -(1 << 62) < us < (1 << 62) else None


def iso_us(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // _ONE_US


def iso_block(texts: Any) -> pa.Array:
    """Event times (int64 epoch microseconds, null where none) of one block of
    time-field values.

    Python's ``datetime.fromisoformat`` is the rule; Arrow parses, much faster, the
    strings of one common shape on which both agree, so the answer for a string
    never depends on the block it came in.
    """
    if isinstance(texts, pa.Array):  # a string column as a column-wise reader gives it
        strings = texts
    else:
        try:
            strings = pa.array(texts, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a number among them: not a string
            strings = pa.array([t if type(t) is str else None for t in texts], pa.string())
    common = pc.fill_null(pc.match_substring_regex(strings, COMMON_ISO), False)
    mask = common.to_numpy(zero_copy_only=False)
    n_common = int(mask.sum())
    if isinstance(texts, pa.Array) and n_common < len(texts):
        texts = texts.to_pylist()  # strings of other shapes: those one by one
    if not n_common:
        return pa.array([iso_us(t) for t in texts], pa.int64())
    try:
        parsed = pc.cast(strings.filter(common), pa.timestamp("us", tz="UTC")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = texts.to_pylist() if isinstance(texts, pa.Array) else texts
        return pa.array([iso_us(t) for t in texts], pa.int64())
    if n_common == len(texts):
        return parsed
    out = np.zeros(len(texts), dtype=np.int64)
    out[mask] = parsed.to_numpy()
    valid = mask.copy()
    for i in np.flatnonzero(~mask).tolist():  # the other shapes, one by one
        us = iso_us(texts[i])
        if us is not None:
            out[i] = us
            valid[i] = True
    return pa.array(out, mask=~valid)


def timestamp_text(us: int) -> str:
    """A timestamp as Spark SQL prints it: ``2026-11-23 10:03:00`` (fraction if any)."""
    moment = _EPOCH + dt.timedelta(microseconds=us)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text
