"""The versioned binary envelope shared by every sketch.

Layout (little-endian, no padding)::

    offset  size  field
    0       3     magic b"SSK"
    3       1     format version (uint8: 2, or 3 for a QuantileSketch with a bucket
                  mapping field; version 1 is still read)
    4       1     kind code (uint8: 1 HyperLogLog, 2 CountMinSketch, 3 BloomFilter,
                  4 MinHashSketch, 5 QuantileSketch)
    5       8     hash seed (uint64)
    13      ...   kind-specific parameters, then payload (see each sketch's ``to_bytes``)
    end-4   4     CRC-32 (zlib polynomial, uint32) of every byte before it

Version 2 added the compact encodings of small sketches (HyperLogLog sparse entries,
Count-Min exact counts, Bloom filter hashes); version 1 bytes load as the register,
counter or bit form they hold, and are written back as version 2. Version 3 exists for
QuantileSketch only: it adds the bucket mapping of the sketches that do not use the
original logarithmic one (whose bytes stay version 2, unchanged); other kinds refuse it.

Readers are strict: a wrong magic, an unknown version, another kind, a checksum
mismatch (any corruption of up to 32 consecutive bits is caught), a length that does
not match, trailing bytes or a non-canonical encoding all raise
:class:`~sketches.errors.SketchFormatError`. Sizes read from the bytes are checked
against the bytes actually present before anything is allocated. Every accepted input
of the current version is canonical: ``from_bytes(b).to_bytes() == b``.

Example:
    >>> blob = seal(KIND_HLL, 7, b"\\x0e")
    >>> reader, seed = Reader.open(blob, KIND_HLL)
    >>> seed, reader.unpack("<B")
    (7, (14,))
    >>> reader.finish()
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any, Self

import numpy as np

from sketches.errors import SketchFormatError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "KIND_HLL",
    "KIND_CMS",
    "KIND_BLOOM",
    "KIND_MINHASH",
    "KIND_QUANTILES",
    "KIND_NAMES",
    "NEWEST_VERSION",
    "write_header",
    "seal",
    "peek_kind",
    "Reader",
    "uint_width",
    "encode_items",
    "encoded_items",
    "runs",
    "seal_counted",
    "seal_in_place",
]

MAGIC = b"SSK"
FORMAT_VERSION = 2  # written by every kind (QuantileSketch: unless it needs version 3)
READ_VERSIONS = (1, 2, 3)
KIND_HLL = 1
KIND_CMS = 2
KIND_BLOOM = 3
KIND_MINHASH = 4
KIND_QUANTILES = 5
KIND_NAMES = {
    KIND_HLL: "HyperLogLog",
    KIND_CMS: "CountMinSketch",
    KIND_BLOOM: "BloomFilter",
    KIND_MINHASH: "MinHashSketch",
    KIND_QUANTILES: "QuantileSketch",
}
#: the newest version each kind reads, when above FORMAT_VERSION
NEWEST_VERSION = {KIND_QUANTILES: 3}
_HEADER = struct.Struct("<3sBBQ")
_CRC = struct.Struct("<I")

# Type tags of serialised items (Count-Min heavy-hitter candidates).
_TAG_INT = 1  # int64
_TAG_UINT = 2  # uint64 >= 2**63
_TAG_FLOAT = 3  # float64 (never integral: integral floats are stored as ints)
_TAG_STR = 4  # uint32 length + UTF-8
_TAG_BYTES = 5  # uint32 length + bytes


def write_header(kind: int, seed: int, version: int = FORMAT_VERSION) -> bytes:
    """The 13-byte envelope header.

    Example:
        >>> write_header(KIND_CMS, 0)[:5]
        b'SSK\\x02\\x02'
    """
    return _HEADER.pack(MAGIC, version, kind, seed)


def seal(kind: int, seed: int, *parts: bytes, version: int = FORMAT_VERSION) -> bytes:
    """Header + parts + CRC-32 trailer: a complete serialised sketch.

    Example:
        >>> len(seal(KIND_MINHASH, 1, b"abc"))
        20
    """
    body = write_header(kind, seed, version) + b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _as_view(data: Any) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SketchFormatError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view


def peek_kind(data: Any) -> int:
    """Validate magic and version and return the kind code, without consuming anything.

    Example:
        >>> peek_kind(write_header(KIND_BLOOM, 1))
        3
    """
    view = _as_view(data)
    if len(view) < _HEADER.size:
        raise SketchFormatError(
            f"truncated sketch: {len(view)} bytes, a header alone needs {_HEADER.size}"
        )
    magic, version, kind, _ = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise SketchFormatError(f"not a sketch: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version not in READ_VERSIONS:
        raise SketchFormatError(
            f"unsupported sketch format version {version} (this library reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}); upgrade the sketches package to read it"
        )
    if kind not in KIND_NAMES:
        raise SketchFormatError(f"unknown sketch kind code {kind}")
    if version > NEWEST_VERSION.get(kind, FORMAT_VERSION):
        raise SketchFormatError(
            f"unsupported sketch format version {version} for a {KIND_NAMES[kind]} (this "
            f"library reads it up to version {NEWEST_VERSION.get(kind, FORMAT_VERSION)})"
        )
    return int(kind)


class Reader:
    """Sequential, bounds-checked reader over bytes."""

    def __init__(self, data: Any) -> None:
        self._view = _as_view(data)
        self._pos = 0
        self.version = FORMAT_VERSION  # the format version of the bytes being read

    @classmethod
    def open(cls, data: Any, expected_kind: int) -> tuple[Self, int]:
        """Check envelope, kind and checksum; return a reader of the parameters and payload.

        Returns:
            The reader (positioned after the header, ending before the checksum) and
            the seed.
        """
        view = _as_view(data)
        kind = peek_kind(view)
        if kind != expected_kind:
            raise SketchFormatError(
                f"bytes hold a {KIND_NAMES[kind]}, not a {KIND_NAMES[expected_kind]}"
            )
        if len(view) < _HEADER.size + _CRC.size:
            raise SketchFormatError("truncated sketch: no room for the checksum")
        body = view[: len(view) - _CRC.size]
        (stored,) = _CRC.unpack_from(view, len(body))
        if zlib.crc32(body) != stored:
            raise SketchFormatError("corrupt or truncated sketch: checksum mismatch")
        reader = cls(body)
        reader._pos = _HEADER.size
        reader.version = int(_HEADER.unpack_from(view, 0)[1])
        return reader, int(_HEADER.unpack_from(view, 0)[3])

    @property
    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self._view) - self._pos

    def take(self, n: int, what: str = "payload") -> memoryview:
        """Consume ``n`` bytes (raising if fewer remain)."""
        if n < 0 or n > self.remaining:
            raise SketchFormatError(
                f"truncated sketch: {what} needs {n} bytes, {self.remaining} remain"
            )
        out = self._view[self._pos : self._pos + n]
        self._pos += n
        return out

    def unpack(self, fmt: str, what: str = "parameters") -> tuple[Any, ...]:
        """Consume and unpack a :mod:`struct` format."""
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size, what))

    def array(self, dtype: str, count: int, what: str = "payload") -> np.ndarray:
        """Consume ``count`` items of a little-endian dtype into a new native array."""
        dt = np.dtype(dtype)
        if count < 0 or count * dt.itemsize > self.remaining:
            raise SketchFormatError(
                f"truncated sketch: {what} needs {count} x {dt.itemsize} bytes, "
                f"{self.remaining} remain"
            )
        raw = self.take(count * dt.itemsize, what)
        return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="))

    def finish(self) -> None:
        """Require that every byte was consumed."""
        if self.remaining:
            raise SketchFormatError(f"{self.remaining} unexpected trailing bytes after sketch")

    def items(self, count: int) -> list[Any]:
        """Decode ``count`` type-tagged items written by :func:`encode_items`."""
        view, pos, end = self._view, self._pos, len(self._view)
        unpack_from = struct.unpack_from
        out: list[Any] = []
        append = out.append

        def need(n: int, what: str) -> None:
            if n > end - pos:
                self._pos = pos
                raise SketchFormatError(
                    f"truncated sketch: {what} needs {n} bytes, {end - pos} remain")

        for _ in range(count):
            need(1, "item tag")
            tag = view[pos]
            pos += 1
            if tag == _TAG_STR or tag == _TAG_BYTES:
                need(4, "item length")
                (length,) = unpack_from("<I", view, pos)
                pos += 4
                need(length, "item")
                raw = bytes(view[pos:pos + length])
                pos += length
                if tag == _TAG_STR:
                    try:
                        append(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        raise SketchFormatError("string item is not valid UTF-8") from None
                else:
                    append(raw)
            elif tag == _TAG_INT:
                need(8, "int item")
                append(unpack_from("<q", view, pos)[0])
                pos += 8
            elif tag == _TAG_UINT:
                need(8, "uint item")
                value = unpack_from("<Q", view, pos)[0]
                pos += 8
                if value < 1 << 63:
                    raise SketchFormatError("non-canonical uint item below 2**63")
                append(value)
            elif tag == _TAG_FLOAT:
                need(8, "float item")
                value = unpack_from("<d", view, pos)[0]
                pos += 8
                if math.isnan(value) or (
                    math.isfinite(value)
                    and value == math.trunc(value)
                    and -(2.0**63) <= value < 2.0**64
                ):
                    raise SketchFormatError(f"non-canonical float item {value!r}")
                append(value)
            else:
                raise SketchFormatError(f"unknown item type tag {tag}")
        self._pos = pos
        return out


def uint_width(max_value: int) -> int:
    """Smallest of 1, 2, 4, 8 bytes holding ``max_value`` (a non-negative int).

    Example:
        >>> uint_width(0), uint_width(255), uint_width(256), uint_width(2**40)
        (1, 1, 2, 8)
    """
    for width in (1, 2, 4):
        if max_value < 1 << (8 * width):
            return width
    return 8


def encode_items(items: list[Any]) -> bytes:
    """Serialise int / float / str / bytes items with type tags (canonical forms only).

    Example:
        >>> Reader(encode_items([1, "a", b"b", 0.5])).items(4)
        [1, 'a', b'b', 0.5]
    """
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, int):
            if item >= 1 << 63:
                parts.append(struct.pack("<BQ", _TAG_UINT, item))
            else:
                parts.append(struct.pack("<Bq", _TAG_INT, item))
        elif isinstance(item, float):
            parts.append(struct.pack("<Bd", _TAG_FLOAT, item))
        elif isinstance(item, str):
            raw = item.encode("utf-8")
            parts.append(struct.pack("<BI", _TAG_STR, len(raw)) + raw)
        elif isinstance(item, bytes):
            parts.append(struct.pack("<BI", _TAG_BYTES, len(item)) + item)
        else:  # pragma: no cover - items come from column_items, which never yields others
            raise TypeError(f"cannot serialise item of type {type(item).__name__}")
    return b"".join(parts)


def encoded_items(items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The items as :func:`encode_items` writes them, one after another in one byte
    array, and each one's encoded length.

    Example:
        >>> data, lengths = encoded_items(["ab", 7])
        >>> bytes(data) == encode_items(["ab", 7]), lengths.tolist()
        (True, [7, 9])
    """
    parts = [encode_items([item]) for item in items]
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return np.frombuffer(b"".join(parts), dtype=np.uint8), lengths


def runs(pos: np.ndarray, count: np.ndarray, width: int) -> np.ndarray:
    """Positions ``pos[i] + width * j`` for ``j < count[i]``, for every ``i``, in order.

    A cumulative sum of steps (``width`` inside a run, a jump between runs): several
    times faster than ``np.repeat`` with per-run counts.

    Example:
        >>> runs(np.array([10, 50, 70]), np.array([3, 0, 2]), 4).tolist()
        [10, 14, 18, 70, 74]
    """
    keep = count > 0
    pos, count = pos[keep].astype(np.int64), count[keep].astype(np.int64)
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    step = np.full(total, width, dtype=np.int64)
    last = pos + width * (count - 1)  # where each run ends
    step[np.concatenate(([0], np.cumsum(count)[:-1]))] = pos - np.concatenate(([0], last[:-1]))
    return np.cumsum(step, out=step)


def seal_in_place(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Write, for many sketches laid out in one byte buffer, the CRC-32 trailer of each:
    that of ``buf[starts[i]:ends[i]]``, at ``ends[i]`` (what :func:`seal` appends).

    Example:
        >>> buf = np.zeros(7, dtype=np.uint8)
        >>> buf[:3] = np.frombuffer(b"abc", np.uint8)
        >>> seal_in_place(buf, np.array([0]), np.array([3]))
        >>> bytes(buf[3:]) == struct.pack("<I", zlib.crc32(b"abc"))
        True
    """
    view = memoryview(buf)
    crc = np.fromiter((zlib.crc32(view[a:e]) for a, e in
                       zip(starts.tolist(), ends.tolist(), strict=True)),
                      dtype=np.uint32, count=starts.size).astype("<u4")
    at = (np.asarray(ends, dtype=np.int64)[:, None] + np.arange(4)).ravel()
    buf[at] = crc.view(np.uint8)


def seal_counted(head: bytes, entries: np.ndarray, sizes: np.ndarray, bounds: np.ndarray,
                 built: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Many sketches of the shape the compact encodings share, laid out in one byte
    array: ``(buffer, offsets)``, sketch ``i`` at ``offsets[i]:offsets[i + 1]`` (empty
    where ``built[i]`` is false): ``head`` (header, parameters, encoding byte), the
    uint32 entry count ``sizes[i]``, the entries ``entries[bounds[i]:bounds[i] +
    sizes[i]]`` (little-endian, of ``entries``' width), the CRC-32.

    Example:
        >>> buf, offsets = seal_counted(write_header(KIND_BLOOM, 0), np.array([7], np.uint64),
        ...                             np.array([1]), np.array([0, 1]), np.array([True]))
        >>> bytes(buf) == seal(KIND_BLOOM, 0, struct.pack("<IQ", 1, 7))
        True
    """
    hl, width = len(head), entries.dtype.itemsize
    lengths = np.where(built, hl + 4 + width * sizes + 4, 0).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    at = offsets[:-1][built]
    buf[(at[:, None] + np.arange(hl)).ravel()] = np.tile(np.frombuffer(head, np.uint8), at.size)
    counts = sizes[built].astype("<u4")
    buf[(at[:, None] + hl + np.arange(4)).ravel()] = counts.view(np.uint8)
    little = entries.astype(entries.dtype.newbyteorder("<"), copy=False)
    data = little[runs(bounds[:-1][built], counts.astype(np.int64), 1)].view(np.uint8)
    buf[runs(at + hl + 4, width * counts.astype(np.int64), 1)] = data
    seal_in_place(buf, at, at + hl + 4 + width * counts.astype(np.int64))
    return buf, offsets
