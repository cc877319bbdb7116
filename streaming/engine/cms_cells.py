"""Many small Count-Min cells at once: merged, serialised and described in NumPy passes.

A Count-Min sketch with top-k that has counted few distinct items keeps an exact
table (``sketches.cms``' exact mode): the items in hash order, each with its count.
Nearly every cell of a windowed group-by is such a table. Here the tables of every
cell's blobs are read in place (the items' tagged bytes walked for all blobs at once,
one item position per step), merged per cell in one sort (counts of equal hashes
added, as ``CountMinSketch.merge`` adds them), sealed back into the same canonical
bytes (the items' bytes copied as they were), and described as the sketch describes
itself: its total, the error bound, and the top-k ranked by the Count-Min estimate
the table's own counters give (collisions included), ties by hash.

A cell is left to the caller (see :mod:`streaming.engine.bulk_cells`) when one of its
blobs is not an exact table of string items with the spec's parameters (counters,
another item type, another version), fails a check ``from_bytes`` makes (CRC, order,
counts, total), or when its union is past the exact limit (it becomes counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sketches.cms import counter_indices, exact_tables_bytes
from sketches.hashing import hash64
from streaming.engine.blobs import crc_holds, runs, segments

_AT_TOTAL = 13 + 10  # header (13), then width, depth, top_k: the spec's, in every blob
_AT_VW = _AT_TOTAL + 9  # after the total (8) and the encoding byte
_AT_COUNTS = _AT_TOTAL + 14  # after the width byte and the uint32 item count
_EXACT = 2  # the encoding byte of an exact table
_TAG_STR = 4  # an item's type tag: uint32 length + UTF-8


@dataclass
class CmsCells:
    """Per cell: merged bytes (null: left to the caller), total and top-k."""

    array: Any
    total: np.ndarray
    epsilon: float
    #: the top-k of every cell: items and estimates, cell ``i``'s at
    #: ``top_bounds[i]:top_bounds[i + 1]``
    top_items: Any
    top_counts: np.ndarray
    top_bounds: np.ndarray

    @property
    def data(self) -> list[bytes | None]:
        return self.array.to_pylist()

    def top(self, i: int) -> list[tuple[str, int]]:
        a, b = int(self.top_bounds[i]), int(self.top_bounds[i + 1])
        return list(zip(self.top_items[a:b].to_pylist(), self.top_counts[a:b].tolist(),
                        strict=True))

    def described(self, final: np.ndarray, schema: Any) -> dict[str, Any]:
        """The columns a final row describes its sketch with (null in open rows)."""
        import pyarrow as pa

        total = self.total.astype(np.float64)
        bound = self.epsilon * total
        stats = [[("total", t), ("error_bound", e)] if f else None
                 for t, e, f in zip(total.tolist(), bound.tolist(), final.tolist(),
                                    strict=True)]
        entries = pa.StructArray.from_arrays(
            [self.top_items.cast(pa.string()), pa.array(self.top_counts, pa.int64())],
            fields=list(schema.field("top_k").type.value_type))
        top = pa.ListArray.from_arrays(pa.array(self.top_bounds, pa.int32()), entries,
                                       type=schema.field("top_k").type,
                                       mask=pa.array(~final))
        return {"estimate": pa.array(total, pa.float64(), mask=~final),
                "top_k": top, "stats": pa.array(stats, schema.field("stats").type)}


def cms_cells(blobs: Any, owner: np.ndarray, n_cells: int, sk: Any) -> CmsCells | None:
    """Merge the Count-Min ``blobs`` (``owner[i]``: the cell of blob ``i``) of the spec
    ``sk`` into ``n_cells`` cells and describe each. None: no cell is left to build
    here (or the spec keeps no top-k, whose tables hold hashes, not items)."""
    import pyarrow as pa

    template = sk.new()
    if not template.top_k:
        return None
    arr = blobs if isinstance(blobs, pa.Array) else pa.array(blobs, pa.large_binary())
    found = segments(arr)
    if len(found) != 1:
        return None
    b = found[0]
    tables = _tables(b, template)
    if tables is None:
        return None
    ok, count, vw, total = tables
    items = _walk_items(b, ok, count, vw)
    if items is None:
        return None
    blob, src, length = items
    ok, counts = _checked(b, ok, count, vw, total, blob, template)
    bad_cell = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(bad_cell, owner, ~ok)
    if bad_cell.all():
        return None
    keep = ~bad_cell[owner[blob]]
    blob, src, length, counts = blob[keep], src[keep], length[keep], counts[keep]
    strings = _strings(b, src + 5, length)
    if strings is None:
        return None
    hashes = hash64(strings, template.params()["seed"])
    # a table's items are in increasing hash order, or from_bytes refuses it
    unordered = (blob[1:] == blob[:-1]) & (hashes[1:] <= hashes[:-1])
    bad_cell[owner[blob[1:][unordered]]] = True
    cell = owner[blob].astype(np.int64)
    order = np.lexsort((hashes, cell))
    cell, hashes, counts, src, length = (a[order] for a in (cell, hashes, counts, src, length))
    first = np.ones(cell.size, dtype=bool)
    first[1:] = (cell[1:] != cell[:-1]) | (hashes[1:] != hashes[:-1])
    at = np.flatnonzero(first)
    summed = np.add.reduceat(counts, at) if at.size else counts[:0]
    cell, hashes, src, length = cell[at], hashes[at], src[at], length[at]
    sizes = np.bincount(cell, minlength=n_cells)
    built = (sizes <= template.exact_limit) & ~bad_cell
    mine = built[cell]
    cell, hashes, summed, src, length = (a[mine] for a in (cell, hashes, summed, src, length))
    sizes = np.where(built, sizes, 0)
    cell_total = np.bincount(cell, weights=summed, minlength=n_cells).astype(np.int64)
    array = _seal(b, template.to_bytes()[:_AT_TOTAL], built, sizes, cell_total, summed,
                  src, length)
    top_at, top_est = _top(cell, hashes, summed, n_cells, template)
    top_items = _strings(b, src[top_at] + 5, length[top_at])
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell[top_at], minlength=n_cells))])
    return CmsCells(array, cell_total, template.epsilon, top_items, top_est, bounds)


def _tables(b: Any, template: Any) -> tuple[np.ndarray, ...] | None:
    """Per blob: whether it is an exact table with the template's parameters whose CRC
    holds; its item count, count width and total."""
    prefix = np.frombuffer(template.to_bytes()[:_AT_TOTAL], dtype=np.uint8)
    n = len(b)
    length = b.end - b.start
    ok = length >= _AT_COUNTS + 4
    where = np.flatnonzero(ok)
    ok[where] = np.all(b._windows(prefix.size)[b.start[where]] == prefix, axis=1)
    ok[ok] = b.data[b.start[ok] + _AT_VW - 1] == _EXACT
    vw = np.zeros(n, dtype=np.int64)
    vw[ok] = b.data[b.start[ok] + _AT_VW]
    ok &= np.isin(vw, (1, 2, 4, 8))
    count = np.zeros(n, dtype=np.int64)
    count[ok] = b.uint(b.start[ok] + _AT_VW + 1, 4)
    ok &= b.start + _AT_COUNTS + count * vw + 4 <= b.end
    where = np.flatnonzero(ok)
    ok[where] = crc_holds(b, where)
    if not ok.any():
        return None
    total = np.zeros(n, dtype=np.uint64)
    total[ok] = b.uint(b.start[ok] + _AT_TOTAL, 8)
    return ok, count, vw, total


def _walk_items(b: Any, ok: np.ndarray, count: np.ndarray, vw: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The string items of the blobs ``ok``, walked one position at a time for all of
    them: (blob, where the item's tag is, its UTF-8 length), in blob then item order. A
    blob holding another item type, or bytes that do not end with its last item, is
    marked not ``ok``."""
    pos = b.start + _AT_COUNTS + count * vw
    stop = b.end - 4
    act = np.flatnonzero(ok & (count > 0))
    blobs, srcs, lengths = [], [], []
    j = 0
    while act.size:
        p = pos[act]
        good = (p + 5 <= stop[act]) & (b.data[np.minimum(p, b.data.size - 1)] == _TAG_STR)
        size = np.zeros(act.size, dtype=np.int64)
        size[good] = b.uint(p[good] + 1, 4)
        good &= p + 5 + size <= stop[act]
        ok[act[~good]] = False
        act, p, size = act[good], p[good], size[good]
        blobs.append(act)
        srcs.append(p)
        lengths.append(size)
        pos[act] = p + 5 + size
        j += 1
        act = act[count[act] > j]
    ok &= (pos == stop) | (count == 0)
    if not blobs:
        return None
    blob = np.concatenate(blobs)
    order = np.argsort(blob, kind="stable")  # blob order, items in order within each
    return blob[order], np.concatenate(srcs)[order], np.concatenate(lengths)[order]


def _counts(b: Any, ok: np.ndarray, count: np.ndarray, vw: np.ndarray,
            blob: np.ndarray) -> np.ndarray:
    """The counts of the items of ``blob`` (every item of each blob ``ok``, in order)."""
    out = np.zeros(blob.size, dtype=np.int64)
    for width in (1, 2, 4, 8):
        rows = np.flatnonzero(ok & (vw == width))
        if rows.size:
            got = b.gather(b.start[rows] + _AT_COUNTS, count[rows], width)
            out[np.isin(blob, rows)] = got.astype(np.int64)
    return out


def _checked(b: Any, ok: np.ndarray, count: np.ndarray, vw: np.ndarray, total: np.ndarray,
             blob: np.ndarray, template: Any) -> tuple[np.ndarray, np.ndarray]:
    """``ok``, less the blobs ``CountMinSketch.from_bytes`` would refuse (too many items,
    a zero count, a count width that is not the smallest, counts not adding up to the
    total; hash order is checked once the items are hashed), and the count of each item
    of ``blob`` (those of blobs still ``ok``)."""
    ok = ok & (count <= template.exact_limit)
    values = _counts(b, ok, count, vw, blob)
    if not ok.any():
        return ok, values
    where = np.isin(blob, np.flatnonzero(ok))
    sums = np.bincount(blob[where], weights=values[where], minlength=len(b))
    top = np.zeros(len(b), dtype=np.int64)
    np.maximum.at(top, blob[where], values[where])
    zero = np.zeros(len(b), dtype=bool)
    np.logical_or.at(zero, blob[where], values[where] == 0)
    widths = np.select([top < 1 << 8, top < 1 << 16, top < 1 << 32], [1, 2, 4], 8)
    small = total < np.uint64(1 << 52)  # sums above this are checked one by one
    return ok & ~zero & (widths == vw) & small & (sums == total.astype(np.float64)), values


def _strings(b: Any, start: np.ndarray, length: np.ndarray) -> Any:
    """The UTF-8 bytes at ``start`` (``length`` each) as an Arrow large string array, or
    None if one of them is not valid UTF-8."""
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    data = b.data[runs(start, length, 1)]
    raw = pa.Array.from_buffers(pa.large_binary(), length.size,
                                [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        return raw.cast(pa.large_string())
    except pa.ArrowInvalid:
        return None


def _seal(b: Any, prefix: bytes, built: np.ndarray, sizes: np.ndarray, total: np.ndarray,
          counts: np.ndarray, src: np.ndarray, length: np.ndarray) -> Any:
    """The exact tables of the ``built`` cells as one binary Arrow array (null for the
    others), as ``CountMinSketch.to_bytes`` lays them out (:func:`exact_tables_bytes`),
    the items' bytes copied from where they were read."""
    import pyarrow as pa

    enc = length + 5  # each item's bytes: tag, length, UTF-8
    buf, offsets = exact_tables_bytes(prefix, sizes, total, counts, b.data[runs(src, enc, 1)],
                                      enc, built)
    validity = pa.array(built, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), built.size,
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(buf)]
                                 ).cast(pa.binary())


def _top(cell: np.ndarray, hashes: np.ndarray, counts: np.ndarray, n_cells: int,
         template: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (``cell`` sorted, then ``hashes``), its top-k as ``CountMinSketch.top``
    ranks an exact table: every item's estimate is the least of the counters its own
    table fills (collisions included), best estimate first, ties by hash. Returns the
    chosen items' indices (cell by cell, in rank order) and their estimates."""
    width, depth = template.width, template.depth
    if cell.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n_cells * width * depth >= 1 << 62:  # pragma: no cover - beyond any batch
        raise OverflowError("too many Count-Min cells to rank at once")
    idx = counter_indices(hashes, width, depth) + cell * (width * depth)
    keys = idx.reshape(-1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    values = np.add.reduceat(np.tile(counts, depth)[order], starts)
    est = values[np.searchsorted(sorted_keys[starts], idx)].min(axis=0)
    rank = np.lexsort((hashes, -est, cell))
    ranked_cell = cell[rank]
    first = np.searchsorted(ranked_cell, np.arange(n_cells))
    place = np.arange(rank.size) - first[ranked_cell]
    chosen = rank[place < template.top_k]
    return chosen, est[chosen]
