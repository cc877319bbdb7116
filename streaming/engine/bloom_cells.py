"""Many small Bloom filter cells at once: merged, serialised and described in NumPy passes.

A filter holding few values keeps their sorted hashes (``sketches.bloom``'s hash
mode), and nearly every cell of a windowed group-by holds few. Here the hashes of
every cell's blobs are read in place, merged per cell in one sort (the union of the
distinct hashes, as ``BloomFilter.merge`` keeps while small), sealed back into the
same canonical bytes, and described as ``BloomFilter`` describes itself: the set bits
are the distinct bit positions of a cell's hashes, counted for all cells in one sort.
A cell holding a blob in another encoding, or whose union is past the hash limit (it
becomes bits), is left to the caller (see :mod:`streaming.engine.bulk_cells`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sketches.bloom import bit_positions, hash_limit
from streaming.engine.blobs import counted_blobs, seal_cells, segments

#: header (13) + capacity, error rate, bits (8 each) + probes (2) + the encoding byte
_HEAD = 13 + 26 + 1
#: hashes whose bit positions are counted in one sort
_CHUNK = 1 << 20


@dataclass
class BloomCells:
    """Per cell: merged bytes (null: left to the caller) and the number of bits set."""

    array: Any
    bits: np.ndarray
    num_bits: int
    num_hashes: int

    @property
    def data(self) -> list[bytes | None]:
        return self.array.to_pylist()

    def values(self, i: int) -> tuple[float, float, float]:
        """Cell ``i``'s (estimate, fill ratio, expected false-positive rate), computed as
        ``BloomFilter.estimate``, ``fill_ratio`` and ``expected_fpr`` compute them."""
        x, m, k = int(self.bits[i]), self.num_bits, self.num_hashes
        fill = x / m
        est = math.inf if x >= m else -m / k * math.log1p(-x / m)
        return est, fill, fill ** k

    def described(self, final: np.ndarray, schema: Any) -> dict[str, Any]:
        """The columns a final row describes its filter with (null in open rows)."""
        import pyarrow as pa

        est: list[float | None] = []
        stats: list[Any] = []
        for i in range(final.size):
            if not final[i]:
                est.append(None)
                stats.append(None)
                continue
            e, fill, fpr = self.values(i)
            est.append(e)
            stats.append([("fill_ratio", fill), ("expected_fpr", fpr)])
        return {"estimate": pa.array(est, pa.float64()),
                "stats": pa.array(stats, schema.field("stats").type)}


def bloom_cells(blobs: Any, owner: np.ndarray, n_cells: int, sk: Any) -> BloomCells | None:
    """Merge the Bloom filter ``blobs`` (``owner[i]``: the cell of blob ``i``) of the spec
    ``sk`` into ``n_cells`` cells and count each one's set bits. None: no cell is left
    to build here."""
    import pyarrow as pa

    template = sk.new()
    arr = blobs if isinstance(blobs, pa.Array) else pa.array(blobs, pa.large_binary())
    found = segments(arr)
    if len(found) != 1:
        return None
    b = found[0]
    head = template.to_bytes()[:_HEAD]
    usable = counted_blobs(b, head, 8)
    bad_cell = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(bad_cell, owner, ~usable)
    if bad_cell.all():
        return None
    take = ~bad_cell[owner]
    start = b.start[take]
    count = b.uint(start + _HEAD, 4).astype(np.int64)
    hashes = b.gather(start + _HEAD + 4, count, 8).astype(np.uint64)
    cell = np.repeat(owner[take].astype(np.int64), count)
    order = np.lexsort((hashes, cell))
    hashes, cell = hashes[order], cell[order]
    if hashes.size > 1:  # the distinct hashes of each cell
        keep = np.empty(hashes.size, dtype=bool)
        keep[0] = True
        np.not_equal(hashes[1:], hashes[:-1], out=keep[1:])
        keep[1:] |= cell[1:] != cell[:-1]
        hashes, cell = hashes[keep], cell[keep]
    sizes = np.bincount(cell, minlength=n_cells)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    m, k = template.num_bits, template.num_hashes
    built = (sizes <= hash_limit(m)) & ~bad_cell
    array = seal_cells(head, hashes, sizes, bounds, built)
    mine = built[cell]
    return BloomCells(array, _bits_set(hashes[mine], cell[mine], n_cells, m, k), m, k)


def _bits_set(hashes: np.ndarray, cell: np.ndarray, n_cells: int, m: int, k: int
              ) -> np.ndarray:
    """Per cell, the distinct bit positions its hashes set (``cell`` sorted)."""
    bits = np.zeros(n_cells, dtype=np.int64)
    a = 0
    while a < hashes.size:
        b = min(a + _CHUNK, hashes.size)
        if b < hashes.size:  # end the chunk at a cell's end
            b = int(np.searchsorted(cell, cell[b - 1], side="right"))
        owner = cell[a:b].astype(np.uint64)
        keys = bit_positions(hashes[a:b], m, k)
        keys += owner * np.uint64(m)
        keys = np.sort(keys.ravel())
        first = np.empty(keys.size, dtype=bool)
        first[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        bits += np.bincount((keys[first] // np.uint64(m)).astype(np.int64),
                            minlength=n_cells)
        a = b
    return bits
