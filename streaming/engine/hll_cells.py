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
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from streaming.engine.blobs import segments

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


def _usable(b: Any, template: bytes) -> np.ndarray:
    """Per blob: a compact HyperLogLog with the template's header and precision, whose
    length matches its count and whose CRC holds."""
    import zlib as _zlib

    prefix = np.frombuffer(template[:_HEADER + 1] + bytes([_COMPACT]), dtype=np.uint8)
    length = b.end - b.start
    ok = length >= prefix.size + 8
    at = b.start[ok]
    rows = b._windows(prefix.size)[at]
    good = np.zeros(len(b), dtype=bool)
    good[np.flatnonzero(ok)] = np.all(rows == prefix, axis=1)
    if not good.any():
        return good
    where = np.flatnonzero(good)
    count = b.uint(b.start[where] + _HEADER + 2, 4).astype(np.int64)
    good[where] = length[where] == _HEADER + 2 + 4 + 4 * count + 4
    where = np.flatnonzero(good)
    view = memoryview(b.data.data)
    crc = np.fromiter((_zlib.crc32(view[s:e]) for s, e in
                       zip(b.start[where].tolist(), (b.end[where] - 4).tolist(), strict=True)),
                      dtype=np.uint64, count=where.size)
    good[where] = crc == b.uint(b.end[where] - 4, 4)
    return good


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
    usable = _usable(b, template)
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
    array = _compact_blobs(template[:_HEADER] + bytes([precision, _COMPACT]), merged,
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


def _compact_blobs(head: bytes, merged: np.ndarray, sizes: np.ndarray, bounds: np.ndarray,
                   built: np.ndarray) -> Any:
    """The compact sketches of the ``built`` cells as one binary Arrow array (null for the
    others): per cell ``head``, its entry count, its entries (``merged[bounds[i]:
    bounds[i + 1]]``) and the CRC-32 of all that, laid out in one buffer."""
    import pyarrow as pa

    from streaming.engine.blobs import runs

    hl = len(head)
    lengths = np.where(built, hl + 4 + 4 * sizes + 4, 0).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    at = offsets[:-1][built]
    n = at.size
    buf[(at[:, None] + np.arange(hl)).ravel()] = np.tile(np.frombuffer(head, np.uint8), n)
    counts = sizes[built].astype("<u4")
    buf[(at[:, None] + hl + np.arange(4)).ravel()] = counts.view(np.uint8)
    starts = bounds[:-1][built]
    entries = merged[runs(starts, counts.astype(np.int64), 1)].view(np.uint8)
    buf[runs(at + hl + 4, 4 * counts.astype(np.int64), 1)] = entries
    view = memoryview(buf)
    ends = (at + hl + 4 + 4 * counts.astype(np.int64)).tolist()
    crc = np.fromiter((zlib.crc32(view[a:e]) for a, e in zip(at.tolist(), ends, strict=True)),
                      dtype=np.uint32, count=n).astype("<u4")
    buf[(np.asarray(ends, dtype=np.int64)[:, None] + np.arange(4)).ravel()] = crc.view(np.uint8)
    validity = pa.array(built, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), built.size,
                                 [validity, pa.py_buffer(offsets.astype(np.int64)),
                                  pa.py_buffer(buf)]).cast(pa.binary())


def cell_rows(part: Any, spec: Any, wi: int, si: int, schema: Any, batch_id: int,
              now_us: int, final_of: Any) -> tuple[Any, Any, np.ndarray] | None:
    """The rows of the HyperLogLog cells of one (window ``wi``, sketch ``si``) in ``part``
    (merge-stage rows of kind ``s`` and ``S``), built column-wise: (final rows, open rows,
    mask of the rows of ``part`` whose cells are left to the caller). ``final_of(end_us,
    stored)`` says which cells are final. None: no cell can be built in bulk here."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sketches.hll import sparse_limit
    from streaming.engine.simple_cells import cell_ids, key_columns

    window = spec.windows[wi]
    sk = window.sketches[si]
    codes = pc.dictionary_encode(part.column("g").combine_chunks()).indices.to_numpy(
        zero_copy_only=False)
    ws = np.asarray(part.column("ws").to_numpy(zero_copy_only=False), dtype=np.int64)
    owner, first = cell_ids(ws, np.asarray(codes, dtype=np.int64))
    n_cells = first.size
    precision = int(sk.param_dict.get("precision", sk.new().precision))
    blobs = part.column("b").combine_chunks().cast(pa.large_binary())
    done = compact_cells(blobs, owner, n_cells, sk.new().to_bytes(), precision,
                         sparse_limit(precision))
    if done is None:
        return None
    fresh = np.asarray(pc.equal(part.column("kind"), "s").to_numpy(zero_copy_only=False),
                       dtype=bool)
    touched = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(touched, owner, fresh)
    stored = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(stored, owner, ~fresh)
    last = np.full(n_cells, -1, dtype=np.int64)
    off = np.asarray(part.column("off").fill_null(-1).to_numpy(zero_copy_only=False),
                     dtype=np.int64)
    np.maximum.at(last, owner, np.where(fresh, -1, off))
    last = np.where(touched, batch_id, last)
    built = np.asarray(done.array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    end = ws[first] + window.size_s * 1_000_000
    final = np.asarray(final_of(end, stored), dtype=bool)
    heads = part.take(pa.array(first))
    cols = key_columns(heads, spec, schema)
    cols["sketch_name"] = pa.array([sk.name] * n_cells, pa.string())
    cols["kind"] = pa.array([sk.kind] * n_cells, pa.string())
    cols["field"] = pa.array([sk.field] * n_cells, pa.string())
    cols["bytes"] = done.array.fill_null(b"")
    cols["estimate"] = pa.array(done.estimate, pa.float64(), mask=~final)
    cols["lower_bound"] = pa.array(done.lower, pa.float64(), mask=~final)
    cols["upper_bound"] = pa.array(done.upper, pa.float64(), mask=~final)
    stats = pa.array([[("relative_error", done.relative_error)] if f else None
                      for f in final.tolist()], schema.field("stats").type)
    cols["stats"] = stats
    cols["last_batch"] = pa.array(last, pa.int64())
    cols["updated_at"] = pa.array(np.full(n_cells, now_us, dtype=np.int64)).cast(
        schema.field("updated_at").type)
    table = pa.Table.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n_cells, f.type)
                                  for f in schema], schema=schema)
    return (table.filter(pa.array(built & final)), table.filter(pa.array(built & ~final)),
            ~built[owner])
