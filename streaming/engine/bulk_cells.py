"""The ``sketches`` rows of many cells of one (window, sketch), built column-wise.

A batch over many groups, or a year of windows compacted at once, gives the merge
stage hundreds of thousands of cells, nearly all small: a sketch in its compact
encoding (sorted sparse entries or value hashes). Building a sketch object per cell
costs ~100 µs of Python each; a builder here reads every cell's blobs in place,
merges them per cell in one sort, seals the merged bytes back into the same canonical
encoding and describes each cell with the arithmetic of the sketch's own methods,
vectorised over cells. A builder is a function ``(blobs, owner, n_cells, sketch spec)
-> built | None``, where ``built`` has ``array`` (the cells' bytes, null where a cell
is left to the one-by-one path) and ``described(final, schema)`` (the estimate, bounds
and stats columns); :data:`BUILDERS` names the one of each kind that has one.
Each builder's tests check it against the ``sketches`` objects byte for byte and value
for value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from streaming.engine.bloom_cells import bloom_cells
from streaming.engine.cms_cells import cms_cells
from streaming.engine.hll_cells import hll_cells


def builder(sk: Any) -> Callable[..., Any] | None:
    """The bulk builder of a sketch spec's cells, or None (built one by one)."""
    if sk.kind == "hll" and sk.native:
        return hll_cells
    if sk.kind == "bloom":
        return bloom_cells
    if sk.kind == "cms":
        return cms_cells
    return None


def cell_rows(part: Any, spec: Any, wi: int, si: int, schema: Any, batch_id: int,
              now_us: int, final_of: Any, build: Callable[..., Any]
              ) -> tuple[Any, Any, np.ndarray] | None:
    """The rows of the cells of one (window ``wi``, sketch ``si``) in ``part`` (merge-stage
    rows of kind ``s`` and ``S``), built column-wise by ``build``: (final rows, open rows,
    mask of the rows of ``part`` whose cells are left to the caller). ``final_of(end_us,
    stored)`` says which cells are final. None: no cell can be built in bulk here."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from streaming.engine.simple_cells import cell_ids, key_columns

    window = spec.windows[wi]
    sk = window.sketches[si]
    codes = pc.dictionary_encode(part.column("g").combine_chunks()).indices.to_numpy(
        zero_copy_only=False)
    ws = np.asarray(part.column("ws").to_numpy(zero_copy_only=False), dtype=np.int64)
    owner, first = cell_ids(ws, np.asarray(codes, dtype=np.int64))
    n_cells = first.size
    blobs = part.column("b").combine_chunks().cast(pa.large_binary())
    done = build(blobs, owner, n_cells, sk)
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
    cols.update(done.described(final & built, schema))
    cols["last_batch"] = pa.array(last, pa.int64())
    cols["updated_at"] = pa.array(np.full(n_cells, now_us, dtype=np.int64)).cast(
        schema.field("updated_at").type)
    table = pa.Table.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n_cells, f.type)
                                  for f in schema], schema=schema)
    return (table.filter(pa.array(built & final)), table.filter(pa.array(built & ~final)),
            ~built[owner])
