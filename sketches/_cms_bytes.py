"""The Count-Min sketch's byte layout (see :mod:`sketches.cms` for the payload fields).

:func:`write` and :func:`read` are the bodies of ``CountMinSketch.to_bytes`` and
``CountMinSketch.from_bytes``; they live here to keep the sketch's module about the
sketch. Every invariant is checked on reading, so accepted bytes are canonical.

Example:
    >>> from sketches import CountMinSketch
    >>> cms = CountMinSketch(width=32, depth=2).update(["a", "a"])
    >>> read(CountMinSketch, write(cms)) == cms
    True
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from sketches import _topk
from sketches._format import KIND_CMS, Reader, encode_items, runs, seal, seal_in_place, uint_width
from sketches.errors import InvalidParameterError, SketchFormatError
from sketches.hashing import hash64

if TYPE_CHECKING:
    from sketches.cms import CountMinSketch

__all__ = ["write", "read", "write_exact_many"]

_NO_HASHES = np.empty(0, dtype=np.uint64)
_NO_HASHES.flags.writeable = False


def write(cms: CountMinSketch) -> bytes:
    """Serialise: the exact table, or the counters (sparse when smaller) and candidates."""
    params = (cms._width, cms._depth, cms._top_k, cms._total)
    if cms._counters is None:
        hashes, counts, items = cms._table()
        vw = uint_width(int(counts.max()) if counts.size else 0)
        parts = [struct.pack("<IHIQBBI", *params, 2, vw, hashes.size)]
        if items is not None:
            parts += [counts.astype(f"<u{vw}").tobytes(), encode_items(items)]
        else:
            parts += [hashes.astype("<u8").tobytes(), counts.astype(f"<u{vw}").tobytes()]
        return seal(KIND_CMS, cms._seed, *parts)
    flat = cms._counters.reshape(-1)
    vw = uint_width(int(flat.max()))
    nonzero = np.flatnonzero(flat)
    sparse = nonzero.size * (4 + vw) + 4 < flat.size * vw
    parts = [struct.pack("<IHIQBB", *params, int(sparse), vw)]
    if sparse:
        parts.append(struct.pack("<I", nonzero.size))
        parts.append(nonzero.astype("<u4").tobytes())
        parts.append(flat[nonzero].astype(f"<u{vw}").tobytes())
    else:
        parts.append(flat.astype(f"<u{vw}").tobytes())
    parts.append(struct.pack("<I", len(cms._cand_items)))
    parts.append(encode_items(cms._cand_items))
    return seal(KIND_CMS, cms._seed, *parts)


def read(cls: type[CountMinSketch], data: Any) -> Any:
    """Read bytes of format version 1 or 2, checking every invariant.

    Raises:
        SketchFormatError: for anything but a valid, canonical Count-Min encoding.
    """
    reader, seed = Reader.open(data, KIND_CMS)
    width, depth, top_k, total, encoding, vw = reader.unpack("<IHIQBB")
    try:
        out = cls(width, depth, seed=seed, top_k=top_k)
    except InvalidParameterError as exc:
        raise SketchFormatError(f"bad Count-Min parameters: {exc}") from None
    if vw not in (1, 2, 4, 8) or encoding not in (0, 1, 2) or (2, 1) == (encoding, reader.version):
        raise SketchFormatError(f"unknown Count-Min encoding {encoding}/{vw}")
    if total >= 1 << 63:
        raise SketchFormatError("Count-Min total out of int64 range")
    if encoding == 2:
        _read_exact(out, reader, vw, total)
        return out
    size = width * depth
    flat = np.zeros(size, dtype=np.uint64)
    if encoding == 1:
        (count,) = reader.unpack("<I", "sparse count")
        index = reader.array("<u4", count, "sparse indices").astype(np.intp)
        values = reader.array(f"<u{vw}", count, "sparse counters").astype(np.uint64)
        if count and (int(index[-1]) >= size or np.any(np.diff(index) <= 0) or not values.all()):
            raise SketchFormatError("corrupt sparse Count-Min counters")
        flat[index] = values
    else:
        flat = reader.array(f"<u{vw}", size, "counters").astype(np.uint64)
    nonzero = int(np.count_nonzero(flat))
    top = int(flat.max()) if size else 0
    if uint_width(top) != vw or bool(encoding) != (nonzero * (4 + vw) + 4 < size * vw):
        raise SketchFormatError("non-canonical Count-Min counter encoding")
    if top >= 1 << 63:
        raise SketchFormatError("Count-Min counter out of int64 range")
    counters = flat.astype(np.int64).reshape(depth, width)
    if any(int(s) != total for s in counters.sum(axis=1, dtype=np.uint64).tolist()):
        raise SketchFormatError("Count-Min rows do not add up to the stored total")
    (n_cand,) = reader.unpack("<I", "candidate count")
    if n_cand > out.capacity or (n_cand and total == 0):
        raise SketchFormatError(f"{n_cand} heavy-hitter candidates do not fit this sketch")
    items = reader.items(n_cand)
    reader.finish()
    if total == 0:  # version 1 wrote the empty sketch as counters; version 2 never does
        if reader.version >= 2:
            raise SketchFormatError("non-canonical Count-Min bytes: empty counters")
        return out
    out._to_counters()
    out._counters = counters
    out._total = int(total)
    out._cand_items = items
    out._cand_hashes = hash64(items, seed) if items else out._cand_hashes
    if out._cand_hashes.size != n_cand or _topk.sorted_unique(out._cand_hashes).size != n_cand:
        raise SketchFormatError("duplicate heavy-hitter candidates")
    est = out._estimate_hashes(out._cand_hashes)
    if not np.array_equal(_topk.rank_top(out._cand_hashes, est, n_cand), np.arange(n_cand)):
        raise SketchFormatError("heavy-hitter candidates are not in rank order")
    if np.any(est == 0):
        raise SketchFormatError("heavy-hitter candidate with a zero count")
    return out


def _read_exact(cms: CountMinSketch, reader: Reader, vw: int, total: int) -> None:
    (count,) = reader.unpack("<I", "exact count")
    if count > cms.exact_limit:
        raise SketchFormatError("non-canonical Count-Min bytes: too many exact counts")
    items = None
    if cms._top_k:
        counts = reader.array(f"<u{vw}", count, "exact counts").astype(np.uint64)
        items = reader.items(count)
        hashes = hash64(items, cms._seed) if items else _NO_HASHES
    else:
        hashes = reader.array("<u8", count, "exact hashes")
        counts = reader.array(f"<u{vw}", count, "exact counts").astype(np.uint64)
    reader.finish()
    if hashes.size != count or np.any(hashes[1:] <= hashes[:-1]):
        raise SketchFormatError("exact Count-Min items out of hash order or repeated")
    top = int(counts.max()) if count else 0
    if (count and int(counts.min()) == 0) or uint_width(top) != vw or top >= 1 << 63:
        raise SketchFormatError("non-canonical Count-Min exact counts")
    high = int((counts >> np.uint64(32)).sum())  # no uint64 overflow: counts < 2**63
    if (high << 32) + int((counts & np.uint64(0xFFFFFFFF)).sum()) != total:
        raise SketchFormatError("Count-Min exact counts do not add up to the stored total")
    cms._ex_hashes, cms._ex_counts, cms._ex_items = hashes, counts.astype(np.int64), items
    cms._total = int(total)


def write_exact_many(prefix: bytes, sizes: np.ndarray, totals: np.ndarray, counts: np.ndarray,
                     items: np.ndarray, item_bytes: np.ndarray, built: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Many exact tables with items, each laid out as :func:`write` lays it out, in one
    byte array: ``(buffer, offsets)``, table ``i`` at ``offsets[i]:offsets[i + 1]``
    (empty where ``built[i]`` is false).

    Args:
        prefix: the bytes every table starts with: the header, width, depth and top_k
            (the first 23 bytes of any of this sketch's ``to_bytes()``).
        sizes, totals: per table, its number of items and its total.
        counts: the counts of every item, table after table, each table's in hash order.
        items: the encoded items (:func:`encoded_items`) in the same order, and
            ``item_bytes`` the length of each.
    """
    n = sizes.size
    ends = np.cumsum(sizes)
    first = ends - sizes
    top = np.zeros(n, dtype=np.int64)
    nonempty = sizes > 0
    top[nonempty] = np.maximum.reduceat(counts, first[nonempty]) if counts.size else 0
    vw = np.select([top < 1 << 8, top < 1 << 16, top < 1 << 32], [1, 2, 4], 8)
    table_bytes = np.zeros(n, dtype=np.int64)
    table_bytes[nonempty] = np.add.reduceat(item_bytes, first[nonempty]) if counts.size else 0
    middle = len(prefix) + 14
    lengths = np.where(built, middle + sizes * vw + table_bytes + 4, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    at = offsets[:-1][built]
    buf[(at[:, None] + np.arange(len(prefix))).ravel()] = np.tile(
        np.frombuffer(prefix, np.uint8), at.size)
    head = np.zeros(at.size, dtype=[("t", "<u8"), ("e", "u1"), ("v", "u1"), ("c", "<u4")])
    head["t"], head["e"], head["v"], head["c"] = totals[built], 2, vw[built], sizes[built]
    buf[(at[:, None] + len(prefix) + np.arange(14)).ravel()] = head.view(np.uint8)
    for width in (1, 2, 4, 8):
        rows = np.flatnonzero(built & (vw == width))
        if rows.size:
            values = counts[runs(first[rows], sizes[rows], 1)].astype(f"<u{width}")
            buf[runs(offsets[rows] + middle, sizes[rows] * width, 1)] = values.view(np.uint8)
    item_start = np.concatenate([[0], np.cumsum(item_bytes)])[first]
    source = runs(item_start[built], table_bytes[built], 1)
    buf[runs(offsets[:-1][built] + middle + sizes[built] * vw[built], table_bytes[built],
             1)] = items[source]
    seal_in_place(buf, at, offsets[1:][built] - 4)
    return buf, offsets
