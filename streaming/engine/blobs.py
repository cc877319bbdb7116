"""Many serialised sketches in Arrow binary columns, read in place with NumPy.

:func:`segments` finds the blobs of a binary, large-binary or binary-view array
without copying them; :class:`Blobs` reads integers at per-blob offsets in one
vectorised pass (what :mod:`streaming.engine.sketch_merge` merges from).
:func:`counted_blobs` and :func:`seal_cells` read and write the shape the compact
encodings share (a fixed head, a uint32 count, that many fixed-width entries, the
CRC-32): what the bulk cell builders (:mod:`streaming.engine.bulk_cells`) use.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from sketches._format import runs, seal_counted


def segments(arr: Any) -> list[Blobs]:
    """The blobs of one Arrow array, grouped by the data buffer holding them (no copy)."""
    import pyarrow as pa

    n, typ = len(arr), arr.type
    if n == 0:
        return []
    if typ in (pa.binary(), pa.large_binary()):
        width = np.int64 if typ == pa.large_binary() else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset:arr.offset + n + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        return [Blobs(data, offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64))]
    if typ != pa.binary_view():
        return segments(arr.cast(pa.large_binary()))
    # 16-byte views: length, 4-byte prefix, data buffer index, offset (inline if <= 12)
    views = np.frombuffer(arr.buffers()[1], dtype="<i4").reshape(-1, 4)[arr.offset:arr.offset + n]
    length, buffer, offset = (views[:, 0].astype(np.int64), views[:, 2],
                              views[:, 3].astype(np.int64))
    if np.any(length <= 12):  # too short for a sketch: let the slow path say why
        return segments(arr.cast(pa.large_binary()))
    out = []
    for index in np.unique(buffer).tolist():
        sel = buffer == index
        data = np.frombuffer(arr.buffers()[2 + index], dtype=np.uint8)
        out.append(Blobs(data, offset[sel], offset[sel] + length[sel]))
    return out


class Blobs:
    """Many blobs in one byte buffer: vectorised reads at per-blob offsets."""

    def __init__(self, data: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self.data, self.start, self.end = data, start, end
        self._views: dict[int, np.ndarray] = {}

    def _windows(self, width: int) -> np.ndarray:
        """A read-only (len - width + 1, width) view: row ``p`` is ``data[p:p + width]``."""
        if width not in self._views:
            self._views[width] = np.lib.stride_tricks.as_strided(
                self.data, shape=(self.data.size - width + 1, width), strides=(1, 1),
                writeable=False)
        return self._views[width]

    def __len__(self) -> int:
        return int(self.start.size)

    def same_prefix(self, prefix: np.ndarray) -> bool:
        if np.any(self.end - self.start < prefix.size + 4):
            return False
        return bool(np.all(self._windows(prefix.size)[self.start] == prefix))

    def crc_ok(self) -> bool:
        view = memoryview(self.data.data)
        spans = map(slice, self.start.tolist(), (self.end - 4).tolist())
        got = np.fromiter(map(zlib.crc32, map(view.__getitem__, spans)), dtype=np.uint64,
                          count=len(self))
        return bool(np.array_equal(got, self.uint(self.end - 4, 4)))

    def uint(self, pos: np.ndarray, width: int) -> np.ndarray:
        """Little-endian unsigned integers of ``width`` bytes at each ``pos`` (that dtype)."""
        key = -width
        if key not in self._views:  # every byte offset as the start of one (unaligned) int
            self._views[key] = np.ndarray(shape=(self.data.size - width + 1,),
                                          dtype=f"<u{width}", buffer=self.data, strides=(1,))
        return self._views[key][pos]

    def counted(self, rows: np.ndarray, at: int, entry_bytes: int
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """For the blobs ``rows`` (a mask) whose payload is a uint32 count at ``at`` then
        ``count`` entries of ``entry_bytes``, up to the CRC: (where the entries start,
        counts); None if a blob's length says otherwise."""
        start = self.start[rows]
        count = self.uint(start + at, 4).astype(np.int64)
        if not np.array_equal(self.end[rows] - start, at + 4 + entry_bytes * count + 4):
            return None
        return start + at + 4, count

    def gather(self, pos: np.ndarray, count: np.ndarray, width: int) -> np.ndarray:
        """``count[i]`` little-endian ``width``-byte unsigned ints from each ``pos[i]``."""
        return self.uint(runs(pos, count, width), width)


def counted_blobs(b: Blobs, prefix: bytes, entry_bytes: int) -> np.ndarray:
    """Per blob: whether it starts with ``prefix`` (a sketch's header, parameters and
    encoding byte), then holds a uint32 count and that many ``entry_bytes`` entries up
    to its CRC-32, and the CRC holds."""
    want = np.frombuffer(prefix, dtype=np.uint8)
    length = b.end - b.start
    ok = length >= want.size + 8
    good = np.zeros(len(b), dtype=bool)
    good[np.flatnonzero(ok)] = np.all(b._windows(want.size)[b.start[ok]] == want, axis=1)
    if not good.any():
        return good
    where = np.flatnonzero(good)
    count = b.uint(b.start[where] + want.size, 4).astype(np.int64)
    good[where] = length[where] == want.size + 4 + entry_bytes * count + 4
    where = np.flatnonzero(good)
    good[where] = crc_holds(b, where)
    return good


def crc_holds(b: Blobs, where: np.ndarray) -> np.ndarray:
    """Whether the CRC-32 trailer of each blob ``where`` (indices) holds."""
    view = memoryview(b.data.data)
    crc = np.fromiter((zlib.crc32(view[s:e]) for s, e in
                       zip(b.start[where].tolist(), (b.end[where] - 4).tolist(), strict=True)),
                      dtype=np.uint64, count=where.size)
    return crc == b.uint(b.end[where] - 4, 4)


def seal_cells(head: bytes, entries: np.ndarray, sizes: np.ndarray, bounds: np.ndarray,
               built: np.ndarray) -> Any:
    """:func:`sketches._format.seal_counted`'s sketches as one binary Arrow array (null
    for the cells not ``built``)."""
    import pyarrow as pa

    buf, offsets = seal_counted(head, entries, sizes, bounds, built)
    validity = pa.array(built, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), built.size,
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(buf)]
                                 ).cast(pa.binary())
