"""Many small HyperLogLog cells at once: merged, serialised and described in NumPy passes.

A batch over many groups gives the merge stage hundreds of thousands of HyperLogLog
cells, nearly all in the compact encoding (a few sorted sparse entries at precision
25). Building a ``sketches.HyperLogLog`` per cell costs ~100 µs; here every cell's
entries are read in place (:mod:`streaming.engine.blobs`), merged per cell in one sort
(the largest entry per (cell, index), as ``HyperLogLog.merge`` keeps), sealed back into
the same canonical bytes, and described with the same arithmetic as
``HyperLogLog.estimate_with_bounds``, vectorised over cells. Cells this cannot take
(another encoding, a union past the compact limit) are left to the caller, which
merges them one by one; ``tests/streaming/test_hll_cells.py`` checks both agree byte
for byte and value for value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from streaming.engine.blobs import counted_blobs, seal_cells, segments

_HEADER = 13  # magic, version, kind, seed
_COMPACT = 2  # the encoding byte of sorted sparse entries at precision 25
_SPARSE_PRECISION = 25
_RHO_BITS = 6
_ALPHA_INF = 1.0 / (2.0 * math.log(2.0))


@dataclass
class Described:
    """Per cell: merged bytes (null: left to the caller), estimate, bounds, error."""

    #: the cells' bytes, a binary Arrow array, null where the cell is left
    array: Any
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    relative_error: float

    @property
    def data(self) -> list[bytes | None]:
        return self.array.to_pylist()

    def described(self, final: np.ndarray, schema: Any) -> dict[str, Any]:
        """The columns a final row describes its sketch with (null in open rows)."""
        import pyarrow as pa

        stats = [[("relative_error", self.relative_error)] if f else None
                 for f in final.tolist()]
        return {"estimate": pa.array(self.estimate, pa.float64(), mask=~final),
                "lower_bound": pa.array(self.lower, pa.float64(), mask=~final),
                "upper_bound": pa.array(self.upper, pa.float64(), mask=~final),
                "stats": pa.array(stats, schema.field("stats").type)}


def _sigma(x: np.ndarray) -> np.ndarray:
    """``sketches.hll._sigma``, elementwise: iterations past an element's convergence
    leave it unchanged (its terms only shrink), so every value is the scalar one."""
    x = x.astype(np.float64).copy()
    inf = x == 1.0
    x[inf] = 0.0  # its value is inf, set below; 0 converges at once
    y = np.ones_like(x)
    z = x.copy()
    for _ in range(2000):
        x *= x
        z_old = z.copy()
        z += x * y
        y += y
        if np.array_equal(z, z_old):
            break
    return np.where(inf, np.inf, z)


def _tau(x: np.ndarray) -> np.ndarray:
    """``sketches.hll._tau``, elementwise (see :func:`_sigma`)."""
    x = x.astype(np.float64).copy()
    zero = (x == 0.0) | (x == 1.0)
    y = np.ones_like(x)
    z = 1.0 - x
    for _ in range(2000):
        x = np.sqrt(x)
        z_old = z.copy()
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if np.array_equal(z, z_old):
            break
    return np.where(zero, 0.0, z / 3.0)


def estimates(counts: np.ndarray, precision: int) -> np.ndarray:
    """Ertl's estimate per row of ``counts[cell, k]`` (registers equal to ``k``)."""
    m = float(1 << precision)
    q = 64 - precision
    z = m * _tau(1.0 - counts[:, q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[:, k])
    z = z + m * _sigma(counts[:, 0] / m)
    return _ALPHA_INF * m * m / z


def compact_cells(blobs: Any, cell: np.ndarray, n_cells: int, template: bytes,
                  precision: int, limit: int) -> Described | None:
    """Merge the compact HyperLogLog ``blobs`` into ``n_cells`` cells (``cell[i]``: the
    cell of blob ``i``) and describe each. A cell holding a blob that is not a compact
    sketch with the template's header and precision (or whose CRC is wrong), or whose
    union is past the compact limit, is left (``data`` None). None: no cell is left to
    build here."""
    import pyarrow as pa

    arr = blobs if isinstance(blobs, pa.Array) else pa.array(blobs, pa.large_binary())
    found = segments(arr)
    if len(found) != 1:
        return None
    b = found[0]
    usable = counted_blobs(b, template[:_HEADER + 1] + bytes([_COMPACT]), 4)
    bad_cell = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(bad_cell, cell, ~usable)
    if bad_cell.all():
        return None
    take = ~bad_cell[cell]  # the blobs of cells built here
    first = b.start[take] + _HEADER + 2 + 4
    count = b.uint(b.start[take] + _HEADER + 2, 4).astype(np.int64)
    cell = cell[take]
    entries = b.gather(first, count, 4).astype(np.uint64)
    owner = np.repeat(cell.astype(np.uint64), count)
    keys = np.sort((owner << np.uint64(32)) | entries)
    if keys.size > 1:  # one entry per (cell, index): the largest (max rho)
        slot = keys >> np.uint64(_RHO_BITS)
        keep = np.empty(keys.size, dtype=bool)
        keep[-1] = True
        np.not_equal(slot[1:], slot[:-1], out=keep[:-1])
        keys = keys[keep]
    owners = (keys >> np.uint64(32)).astype(np.int64)
    merged = (keys & np.uint64(0xFFFFFFFF)).astype("<u4")
    sizes = np.bincount(owners, minlength=n_cells)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    built = (sizes <= limit) & ~bad_cell  # past the compact limit: the caller densifies
    array = seal_cells(template[:_HEADER] + bytes([precision, _COMPACT]), merged,
                       sizes, bounds, built)
    width = 64 - _SPARSE_PRECISION + 2
    rho = (merged & np.uint32((1 << _RHO_BITS) - 1)).astype(np.int64)
    counts = np.bincount(owners * width + rho, minlength=n_cells * width)
    counts = counts.reshape(n_cells, width).astype(np.float64)
    counts[:, 0] = float(1 << _SPARSE_PRECISION) - sizes
    est = estimates(counts, _SPARSE_PRECISION)
    sigma = 1.04 / math.sqrt(1 << _SPARSE_PRECISION)
    lower = np.minimum(est, np.maximum(np.maximum(est * (1.0 - 2.0 * sigma),
                                                  sizes.astype(np.float64)), 0.0))
    return Described(array, est, lower, est * (1.0 + 2.0 * sigma),
                     1.04 / math.sqrt(1 << precision))


def hll_cells(blobs: Any, owner: np.ndarray, n_cells: int, sk: Any) -> Described | None:
    """:func:`compact_cells` for the cells of a native HyperLogLog spec ``sk``."""
    from sketches.hll import sparse_limit

    precision = int(sk.param_dict.get("precision", sk.new().precision))
    return compact_cells(blobs, owner, n_cells, sk.new().to_bytes(), precision,
                         sparse_limit(precision))
