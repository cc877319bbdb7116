"""Normalise the many accepted input containers into a few flat column types.

Sketches accept NumPy arrays, pyarrow arrays, pandas Series, lists and scalars. This
module turns each of those, chunk by chunk, into one of five plain containers that
:mod:`sketches.hashing` knows how to hash without a Python loop per value:

* :class:`IntColumn` (integers, bools, temporal storage),
* :class:`FloatColumn` (floats; ``NaN`` is a null),
* :class:`BytesColumn` (str or bytes as one byte buffer plus starts and lengths),
* :class:`DictColumn` (Arrow dictionary arrays: indices into a dictionary column),
* :class:`MixedColumn` (object arrays mixing types: one sub-column per type).

pyarrow is optional and imported only when an Arrow object (or a list of strings that
Arrow can pack quickly) is met. :mod:`sketches._column_items` reads rows back as
Python values.

Example:
    >>> import numpy as np
    >>> [(offset, type(col).__name__, len(col)) for offset, col in iter_columns([1, "a", None])]
    [(0, 'MixedColumn', 3)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sketches.errors import UnsupportedInputError

__all__ = [
    "Column",
    "IntColumn",
    "FloatColumn",
    "BytesColumn",
    "DictColumn",
    "MixedColumn",
    "iter_columns",
    "input_length",
    "prepare",
    "Pieces",
]

CHUNK_ROWS = 1 << 20
_INT64_MIN = -(1 << 63)
_UINT64_END = 1 << 64
_str_len = getattr(np, "strings", np.char).str_len


@dataclass(eq=False)
class IntColumn:
    """Integers as uint64 bit patterns; ``unsigned`` says how to read the top bit."""

    bits: np.ndarray
    unsigned: bool
    valid: np.ndarray | None

    def __len__(self) -> int:
        return int(self.bits.size)


@dataclass(eq=False)
class FloatColumn:
    """float64 values; ``valid`` is False for nulls and NaN."""

    values: np.ndarray
    valid: np.ndarray | None

    def __len__(self) -> int:
        return int(self.values.size)


@dataclass(eq=False)
class BytesColumn:
    """Byte strings ``data[starts[i] : starts[i] + lengths[i]]``; ``is_str`` marks UTF-8 text."""

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    is_str: bool
    valid: np.ndarray | None

    def __len__(self) -> int:
        return int(self.starts.size)


@dataclass(eq=False)
class DictColumn:
    """Row ``i`` is ``dictionary[indices[i]]`` (null rows point at a valid index)."""

    indices: np.ndarray
    dictionary: Column
    valid: np.ndarray | None

    def __len__(self) -> int:
        return int(self.indices.size)


@dataclass(eq=False)
class MixedColumn:
    """Rows of several types: ``parts`` lists (row positions, column of those rows)."""

    n: int
    parts: list[tuple[np.ndarray, Column]]
    valid: np.ndarray | None
    part_of: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    index_in_part: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return self.n


Column = IntColumn | FloatColumn | BytesColumn | DictColumn | MixedColumn


def _is_arrow(values: Any) -> bool:
    return type(values).__module__.split(".")[0] == "pyarrow"


def _is_pandas(values: Any) -> bool:
    return type(values).__module__.split(".")[0] == "pandas"


class Pieces(list[Any]):
    """An input already split into 1-D NumPy arrays / pyarrow Arrays (see :func:`prepare`)."""


def prepare(values: Any) -> Pieces:
    """Normalise an input once, so iterators and generators can be read twice.

    Example:
        >>> pieces = prepare(v for v in "ab")
        >>> input_length(pieces), input_length(pieces)
        (2, 2)
    """
    return values if isinstance(values, Pieces) else Pieces(_pieces(values))


def _pieces(values: Any) -> list[Any]:
    """Split an input into 1-D NumPy arrays or pyarrow Arrays."""
    if isinstance(values, Pieces):
        return values
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            return [values.reshape(1)]
        if values.ndim != 1:
            raise UnsupportedInputError(f"expected a 1-D array, got shape {values.shape}")
        return [values]
    if _is_arrow(values):
        import pyarrow as pa

        if isinstance(values, pa.ChunkedArray):
            return list(values.chunks)
        if isinstance(values, pa.Array):
            return [values]
        raise UnsupportedInputError(f"unsupported pyarrow object {type(values).__name__}")
    if _is_pandas(values):
        return _pandas_pieces(values)
    if values is None or isinstance(values, str | bytes | bytearray | int | float | np.generic):
        return [_object_array([values])]
    if isinstance(values, Sequence):
        return [_object_array(values)]
    try:
        items = list(values)
    except TypeError:
        raise UnsupportedInputError(f"cannot read values from {type(values).__name__}") from None
    return [_object_array(items)]


def _pandas_pieces(series: Any) -> list[Any]:
    if getattr(series, "ndim", None) != 1:
        raise UnsupportedInputError(f"expected a Series or Index, got {type(series).__name__}")
    if isinstance(series.dtype, np.dtype):
        return _pieces(series.to_numpy())
    try:  # nullable / categorical / arrow-backed dtypes
        import pyarrow as pa
    except ImportError:
        return [series.to_numpy(dtype=object, na_value=None)]
    try:
        return _pieces(pa.array(series, from_pandas=True))
    except (pa.ArrowException, TypeError, ValueError):
        return [series.to_numpy(dtype=object, na_value=None)]


def _object_array(items: Sequence[Any]) -> np.ndarray:
    return np.fromiter(items, dtype=object, count=len(items))


def input_length(values: Any) -> int:
    """Number of rows (nulls included) that :func:`iter_columns` will yield.

    Example:
        >>> input_length([1, None, 3])
        3
    """
    return sum(len(piece) for piece in _pieces(values))


def iter_columns(values: Any, max_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, Column]]:
    """Yield ``(row offset, column)`` chunks of at most ``max_rows`` rows each.

    Example:
        >>> [(o, len(c)) for o, c in iter_columns(np.arange(5), max_rows=2)]
        [(0, 2), (2, 2), (4, 1)]
    """
    offset = 0
    for piece in _pieces(values):
        n = len(piece)
        for a in range(0, n, max_rows):
            chunk = piece[a : a + max_rows]
            if isinstance(chunk, np.ndarray):
                yield offset + a, _from_numpy(chunk)
            else:
                yield offset + a, _from_arrow(chunk)
        offset += n


# ---------------------------------------------------------------- NumPy


def _from_numpy(arr: np.ndarray) -> Column:
    if not arr.dtype.isnative:  # e.g. big-endian data read from a file
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = arr.dtype.kind
    if kind == "b":
        return IntColumn(arr.astype(np.uint64), unsigned=False, valid=None)
    if kind == "i":
        return IntColumn(
            arr.astype(np.int64, copy=False).view(np.uint64), unsigned=False, valid=None
        )
    if kind == "u":
        return IntColumn(arr.astype(np.uint64, copy=False), unsigned=True, valid=None)
    if kind == "f":
        values = arr.astype(np.float64, copy=False)
        nan = np.isnan(values)
        return FloatColumn(values, valid=~nan if nan.any() else None)
    if kind in "mM":
        bits = arr.view(np.int64)
        nat = bits == np.iinfo(np.int64).min
        return IntColumn(bits.view(np.uint64), unsigned=False, valid=~nat if nat.any() else None)
    if kind == "U":
        return _from_numpy_unicode(arr)
    if kind == "S":
        return _fixed_width_bytes(np.ascontiguousarray(arr), is_str=False)
    if kind == "O":
        return _from_objects(arr)
    raise UnsupportedInputError(f"unsupported NumPy dtype {arr.dtype}")


def _fixed_width_bytes(arr: np.ndarray, is_str: bool) -> BytesColumn:
    """'S' arrays (or ASCII text packed one byte per char): fixed stride, NUL-padded."""
    n = arr.size
    width = arr.dtype.itemsize
    data = arr.view(np.uint8).reshape(-1) if width else np.zeros(0, dtype=np.uint8)
    lengths = _str_len(arr).astype(np.int64)
    starts = np.arange(n, dtype=np.int64) * width
    return BytesColumn(data, starts, lengths, is_str=is_str, valid=None)


def _from_numpy_unicode(arr: np.ndarray) -> Column:
    arr = np.ascontiguousarray(arr)
    chars = arr.dtype.itemsize // 4
    codes = arr.view(np.uint32).reshape(arr.size, chars)
    if codes.size == 0 or int(codes.max()) < 128:  # ASCII: UTF-8 is one byte per char
        packed = codes.astype(np.uint8).reshape(-1)
        lengths = _str_len(arr).astype(np.int64)
        starts = np.arange(arr.size, dtype=np.int64) * chars
        return BytesColumn(packed, starts, lengths, is_str=True, valid=None)
    try:
        import pyarrow as pa
    except ImportError:
        return _fixed_width_bytes(np.char.encode(arr, "utf-8"), is_str=True)
    # via Python str: Arrow's direct NumPy-unicode conversion stops at NUL characters
    return _from_arrow(pa.array(arr.tolist(), type=pa.string()))


# ---------------------------------------------------------------- Python objects

_INT, _FLOAT, _STR, _BYTES, _NULL = range(5)


def _type_code(value: Any) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool | int | np.integer | np.bool_):
        return _INT
    if isinstance(value, float | np.floating):
        return _NULL if math.isnan(value) else _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTES
    raise UnsupportedInputError(f"cannot hash a value of type {type(value).__name__}: {value!r}")


def _from_objects(arr: np.ndarray) -> Column:
    """Object arrays: Arrow's C-speed type inference when unambiguous, else per type."""
    if arr.size:
        try:
            import pyarrow as pa
        except ImportError:
            pa = None
        if pa is not None:
            try:
                inferred = pa.array(arr, from_pandas=True)
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                inferred = None
            # binary and double are ambiguous (Arrow coerces str into binary and large
            # ints into double), so those fall through to the exact per-type path.
            if inferred is not None and (
                pa.types.is_string(inferred.type)
                or pa.types.is_int64(inferred.type)
                or pa.types.is_boolean(inferred.type)
                or pa.types.is_null(inferred.type)
            ):
                return _from_arrow(inferred)
    return _split_by_type(arr)


def _int_parts(values: list[Any]) -> list[tuple[np.ndarray, IntColumn]]:
    """Python ints split into a signed part and an unsigned (>= 2**63) part."""
    ints = [int(v) for v in values]
    big = [i for i, v in enumerate(ints) if v >= 1 << 63]
    for v in ints:
        if not _INT64_MIN <= v < _UINT64_END:
            raise UnsupportedInputError(f"integer {v} is outside [-2**63, 2**64)")
    if not big:
        return [
            (np.arange(len(ints)), IntColumn(np.array(ints, np.int64).view(np.uint64), False, None))
        ]
    small = [i for i, v in enumerate(ints) if v < 1 << 63]
    parts = [(np.array(big), IntColumn(np.array([ints[i] for i in big], np.uint64), True, None))]
    if small:
        signed = np.array([ints[i] for i in small], np.int64).view(np.uint64)
        parts.append((np.array(small), IntColumn(signed, False, None)))
    return parts


def _bytes_column(blobs: list[bytes], is_str: bool) -> BytesColumn:
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    starts = np.zeros(len(blobs), dtype=np.int64)
    if len(blobs) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return BytesColumn(data, starts, lengths, is_str=is_str, valid=None)


def _split_by_type(arr: np.ndarray) -> Column:
    n = arr.size
    codes = np.fromiter(map(_type_code, arr), dtype=np.int8, count=n)
    valid = codes != _NULL
    parts: list[tuple[np.ndarray, Column]] = []
    for code in (_INT, _FLOAT, _STR, _BYTES):
        rows = np.flatnonzero(codes == code)
        if rows.size == 0:
            continue
        values = arr[rows].tolist()
        if code == _INT:
            parts.extend((rows[sub], col) for sub, col in _int_parts(values))
        elif code == _FLOAT:
            parts.append((rows, FloatColumn(np.array(values, dtype=np.float64), None)))
        elif code == _STR:
            parts.append((rows, _bytes_column([s.encode("utf-8") for s in values], True)))
        else:
            parts.append((rows, _bytes_column([bytes(b) for b in values], False)))
    part_of = np.full(n, -1, dtype=np.int64)
    index_in_part = np.zeros(n, dtype=np.int64)
    for i, (rows, _) in enumerate(parts):
        part_of[rows] = i
        index_in_part[rows] = np.arange(rows.size)
    return MixedColumn(n, parts, None if valid.all() else valid, part_of, index_in_part)


# ---------------------------------------------------------------- pyarrow


def _arrow_valid(arr: Any) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    bitmap = arr.buffers()[0]
    if bitmap is None:  # null type or a type without validity bitmap
        return np.zeros(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + len(arr)].astype(bool)


def _arrow_fixed(arr: Any, dtype: str) -> np.ndarray:
    """The values buffer of a fixed-width Arrow array as a NumPy view (no copy)."""
    buf = arr.buffers()[1]
    if buf is None or len(arr) == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + len(arr))[arr.offset :]


def _from_arrow(arr: Any) -> Column:
    import pyarrow as pa

    t = arr.type
    n = len(arr)
    valid = _arrow_valid(arr)
    if isinstance(arr, pa.ExtensionArray):
        return _from_arrow(arr.storage)
    if pa.types.is_null(t):
        return IntColumn(np.zeros(n, dtype=np.uint64), False, np.zeros(n, dtype=bool))
    if pa.types.is_boolean(t):
        packed = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[arr.offset : arr.offset + n]
        return IntColumn(bits.astype(np.uint64), False, valid)
    if pa.types.is_integer(t):
        width = t.bit_width // 8
        if pa.types.is_signed_integer(t):
            ints = _arrow_fixed(arr, f"<i{width}")
            return IntColumn(ints.astype(np.int64, copy=False).view(np.uint64), False, valid)
        return IntColumn(_arrow_fixed(arr, f"<u{width}").astype(np.uint64, copy=False), True, valid)
    if pa.types.is_floating(t):
        values = _arrow_fixed(arr, f"<f{t.bit_width // 8}").astype(np.float64, copy=False)
        nan = np.isnan(values)
        if nan.any():
            valid = ~nan if valid is None else valid & ~nan
        return FloatColumn(values, valid)
    if pa.types.is_temporal(t) and t.bit_width in (32, 64):
        ints = _arrow_fixed(arr, f"<i{t.bit_width // 8}")
        return IntColumn(ints.astype(np.int64, copy=False).view(np.uint64), False, valid)
    is_string_view = getattr(pa.types, "is_string_view", lambda _t: False)
    is_binary_view = getattr(pa.types, "is_binary_view", lambda _t: False)
    if is_string_view(t) or is_binary_view(t):
        large = pa.large_string() if is_string_view(t) else pa.large_binary()
        return _from_arrow(arr.cast(large))
    is_str = pa.types.is_string(t) or pa.types.is_large_string(t)
    if is_str or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        offsets_dtype = "<i8" if large else "<i4"
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=offsets_dtype, count=arr.offset + n + 1)
        offsets = offsets[arr.offset :].astype(np.int64)
        data = (
            np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        )
        return BytesColumn(data, offsets[:-1], np.diff(offsets), is_str, valid)
    if pa.types.is_fixed_size_binary(t):
        width = t.byte_width
        buf = arr.buffers()[1]
        data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
        starts = (np.arange(n, dtype=np.int64) + arr.offset) * width
        return BytesColumn(data, starts, np.full(n, width, dtype=np.int64), False, valid)
    if pa.types.is_dictionary(t):
        dictionary = _from_arrow(arr.dictionary)
        indices_col = _from_arrow(arr.indices)
        assert isinstance(indices_col, IntColumn)
        indices = indices_col.bits.view(np.int64).copy()
        if valid is not None:
            indices[~valid] = 0
        if dictionary.valid is not None and len(dictionary):
            dict_valid = dictionary.valid[indices]
            valid = dict_valid if valid is None else valid & dict_valid
        if len(dictionary) == 0:
            return IntColumn(np.zeros(n, dtype=np.uint64), False, np.zeros(n, dtype=bool))
        return DictColumn(indices, dictionary, valid)
    raise UnsupportedInputError(f"unsupported Arrow type {t}")
