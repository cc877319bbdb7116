"""The engine's merge stage: a batch's partials merged and written where they meet.

After the one pass (:mod:`streaming.engine.onepass`), Spark shuffles its rows by
(window, window start, group), so that every partial of a cell meets in one task,
together with the rows of the cells the batch compacts, read back from the tables'
``final=false`` files. :func:`make_reduce` is what each task runs (``mapInArrow``;
a backfill calls :func:`reduce_rows` in-process). Per cell it:

1. merges this batch's partials (:func:`streaming.engine.sketch_state.merge_cell` for
   sketches: panes first, then windows), then the stored rows read back;
2. makes the row: ``final`` when the window ends by the batch's watermark (no later
   event can reach it), else a partial row of the open window, one per batch that
   touched it, which readers merge (docs/architecture.md);
3. writes the rows of its slice as Parquet files into the tables' folders
   (:mod:`streaming.engine.table_files`), and the quarantined records it received
   into ``quarantine``.

It returns one small row per file written, the passes' bookkeeping rows, and per
(window, sketch) the union of this batch's sketches of the newest window (what the
metrics show). The driver only commits the files: no cell passes through it.

Input rows: the pass's (``m``, ``s``, ``q``, ``p``; see :data:`PASS_SCHEMA`) and the
stored rows turned into partials by :func:`streaming.engine.stored_cells.stored_partials`
(``A``: an ``aggregates`` row, its metrics packed in ``b``; ``S``: a ``sketches`` row,
its bytes in ``b``; ``reason`` = ``"final"`` when it came from a ``final=true`` file).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streaming.engine.aggregates import AggregateCells
from streaming.engine.bulk_cells import builder, cell_rows
from streaming.engine.hll_cells import compact_cells
from streaming.engine.memory import allocate_returnably, release_freed_memory
from streaming.engine.simple_cells import cell_ids, metric_table, single_open, sketch_table
from streaming.engine.sketch_merge import merge_blobs
from streaming.engine.sketch_state import merge_cell, partial_record, sketch_record
from streaming.engine.stored_cells import (
    merge_metric_rows,
    stored_metric_rows,
    stored_partials,
    task_rows,
)
from streaming.engine.table_files import PARTITION, WrittenFile, write_file
from streaming.engine.tables import QUARANTINE_SCHEMA, SKETCHES_SCHEMA, aggregates_schema
from streaming.spec.model import Spec
from streaming.units import US

REDUCE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("table", pa.string()), ("path", pa.string()),
    ("size", pa.int64()), ("rows", pa.int64()), ("final", pa.bool_()), ("stats", pa.string()),
    ("w", pa.int32()), ("ws", pa.int64()), ("s", pa.int32()), ("b", pa.binary()),
])
REDUCE_DDL = ("kind STRING, table STRING, path STRING, size BIGINT, rows BIGINT, "
              "final BOOLEAN, stats STRING, w INT, ws BIGINT, s INT, b BINARY")


@dataclass(frozen=True)
class ReduceContext:
    """What the merge stage of one batch (or one compaction) needs, fixed on the driver."""

    spec: Spec
    batch_id: int  #: -1 for a compaction outside a batch
    now_ms: int  #: the batch time (``updated_at``, the newest window)
    watermark_ms: int  #: windows ending by then are written final
    #: per table: windows ending by then may hold a final row already (see select_files)
    final_before_ms: dict[str, int]
    #: table name -> folder, for the tables this run writes (a re-run skips the done ones)
    paths: dict[str, str] = field(default_factory=dict)
    #: the merge tasks of the Spark job (0: one call in-process, files not bucketed)
    buckets: int = 0
    #: per table, per merge task: the stored files (relative paths) that task reads itself
    stored: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    #: per table: the columns read from a stored file
    stored_columns: dict[str, list[str]] = field(default_factory=dict)



def _without_final(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name != PARTITION])


class _Cells:
    """A task's cells, by key, with the partials and stored rows seen for each."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[int, int, str], list[Any]] = {}
        self.sketches: dict[tuple[int, int, str, int], list[Any]] = {}


def reduce_rows(table: pa.Table, rctx: ReduceContext, bucket: int | None = None) -> pa.Table:
    """Merge one slice of a batch's keys, write its files, return the rows for the driver.

    ``bucket``: the merge task this is, of ``rctx.buckets``: its files are tagged so."""
    out: dict[str, list[Any]] = {f.name: [] for f in REDUCE_SCHEMA}
    tag = None if bucket is None else (bucket, rctx.buckets)

    def emit(**values: Any) -> None:
        for name, col in out.items():
            col.append(values.get(name))

    kind = table.column("kind")
    for b in table.filter(pc.equal(kind, "p")).column("b").to_pylist():
        emit(kind="p", b=b)
    quarantined = table.filter(pc.equal(kind, "q"))
    if quarantined.num_rows and "quarantine" in rctx.paths:
        _write(emit, write_file("quarantine", rctx.paths["quarantine"],
                                _quarantine_rows(quarantined, rctx.batch_id),
                                batch_id=rctx.batch_id, final=None, bucket=tag))
    del quarantined
    if "aggregates" in rctx.paths:
        for final, data in aggregate_rows(table, rctx).items():
            if data.num_rows:
                _write(emit, write_file("aggregates", rctx.paths["aggregates"], data,
                                        batch_id=rctx.batch_id, final=final, bucket=tag))
    if "sketches" in rctx.paths:
        rows, views, open_state = sketch_rows(table, rctx)
        for final, data in rows.items():
            if data.num_rows:
                _write(emit, write_file("sketches", rctx.paths["sketches"], data,
                                        batch_id=rctx.batch_id, final=final, bucket=tag))
        for (wi, si), (start, sketch) in views.items():
            emit(kind="v", w=wi, ws=start, s=si, b=sketch.to_bytes())
        for (wi, start), (n, nbytes) in open_state.items():
            emit(kind="o", w=wi, ws=start, rows=n, size=nbytes)
    return pa.Table.from_pydict(out, schema=REDUCE_SCHEMA)


def _write(emit: Any, f: WrittenFile) -> None:
    emit(kind="f", table=f.table, path=f.path, size=f.size, rows=f.rows, final=f.final,
         stats=f.stats)


def _is_final(rctx: ReduceContext, table: str, end_us: int, stored: bool) -> bool:
    """Whether a cell's row is written final (see :func:`select_files`)."""
    if end_us > rctx.watermark_ms * 1000:
        return False
    if end_us > rctx.final_before_ms.get(table, -(1 << 62)) * 1000:
        return True
    # a window that may already hold a final row: final only if it was read back
    return stored


def aggregate_rows(table: pa.Table, rctx: ReduceContext) -> dict[bool, pa.Table]:
    """The ``aggregates`` rows of the cells in ``table``, by ``final``: one per cell.

    A cell with one partial and nothing to merge is built as it came
    (:func:`metric_table`); the others (several partitions, stored rows of a window being
    compacted) are merged by one Arrow group-by (:func:`merge_metric_rows`).
    """
    import numpy as np

    spec = rctx.spec
    cells = AggregateCells(spec)
    schema = _without_final(aggregates_schema(spec))
    now_us = rctx.now_ms * 1000
    sub = table.filter(pc.is_in(table.column("kind"), pa.array(["m", "A"])))
    simple = single_open(sub, "m", spec, rctx.watermark_ms, with_sketch=False)
    out = {True: schema.empty_table(), False: schema.empty_table()}
    if simple.any():
        out[False] = metric_table(sub.filter(pa.array(simple)), spec, schema,
                                  cells.metric_names, rctx.batch_id, now_us)
        sub = sub.filter(pa.array(~simple))
    if sub.num_rows == 0:
        return out
    kind = sub.column("kind")
    parts = []
    fresh = sub.filter(pc.equal(kind, "m"))
    if fresh.num_rows:
        rows = metric_table(fresh, spec, schema, cells.metric_names, rctx.batch_id, now_us)
        parts.append(rows.append_column("stored", pa.array(np.zeros(rows.num_rows, np.int8))))
    stored = sub.filter(pc.equal(kind, "A"))
    if stored.num_rows:
        parts.append(stored_metric_rows(stored, spec, schema, now_us))
    merged, end, was_stored = merge_metric_rows(parts, spec, schema, now_us)
    final = _final_mask(rctx, "aggregates", end, was_stored)
    out[True] = merged.filter(pa.array(final))
    out[False] = pa.concat_tables([out[False], merged.filter(pa.array(~final))])
    return out


def _final_mask(rctx: ReduceContext, table: str, end_us: Any, stored: Any) -> Any:
    """:func:`_is_final` over arrays of window ends (µs) and stored flags."""
    import numpy as np

    before = rctx.final_before_ms.get(table, -(1 << 62) // 1000) * 1000
    closed = end_us <= rctx.watermark_ms * 1000
    return closed & ((end_us > before) | np.asarray(stored, dtype=bool))


def sketch_rows(table: pa.Table, rctx: ReduceContext) -> tuple[
        dict[bool, pa.Table], dict[tuple[int, int], tuple[int, Any]],
        dict[tuple[int, int], list[int]]]:
    """The ``sketches`` rows of the cells in ``table``, by ``final``: one per cell; per
    (window, sketch) the newest window's start and this batch's union of it; per open
    (window, start) the partial rows made and their bytes."""
    import numpy as np

    spec = rctx.spec
    updated_us = rctx.now_ms * 1000
    schema = _without_final(SKETCHES_SCHEMA)
    sub = table.filter(pc.is_in(table.column("kind"), pa.array(["s", "S"])))
    views = _views(sub.filter(pc.equal(sub.column("kind"), "s")), spec, updated_us)
    simple = single_open(sub, "s", spec, rctx.watermark_ms, with_sketch=True)
    open_state: dict[tuple[int, int], list[int]] = {}
    tables: dict[bool, list[pa.Table]] = {True: [], False: []}
    if simple.any():
        quick = sub.filter(pa.array(simple))
        tables[False].append(sketch_table(quick, spec, schema, rctx.batch_id, updated_us))
        qw = np.asarray(quick.column("w").to_numpy(zero_copy_only=False), dtype=np.int64)
        qws = np.asarray(quick.column("ws").to_numpy(zero_copy_only=False), dtype=np.int64)
        sizes = np.asarray(pc.binary_length(quick.column("b")).to_numpy(
            zero_copy_only=False), dtype=np.int64)
        inverse, first = cell_ids(qw, qws)
        counts = np.bincount(inverse, minlength=first.size)
        nbytes = np.bincount(inverse, weights=sizes, minlength=first.size)
        for wi, start, n, nb in zip(qw[first].tolist(), qws[first].tolist(), counts.tolist(),
                                    nbytes.tolist(), strict=True):
            open_state[(wi, start)] = [n, int(nb)]
        sub = sub.filter(pa.array(~simple))
    sub = _in_bulk(sub, rctx, schema, tables, open_state)
    rows: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    partials: dict[tuple[int, int, str, int], list[tuple[int, bytes, bytes | None]]] = {}
    stored: dict[tuple[int, int, str, int], list[tuple[bytes, int]]] = {}
    k, w, ws, g, s, pane, b, items, off = (
        sub.column(n).to_pylist() for n in
        ("kind", "w", "ws", "g", "s", "pane", "b", "items", "off"))
    for kind, wi, start, group, si, p, blob, it, last_batch in zip(
            k, w, ws, g, s, pane, b, items, off, strict=True):
        key = (wi, start, group, si)
        if kind == "S":
            stored.setdefault(key, []).append((blob, int(last_batch)))
        else:
            partials.setdefault(key, []).append((p, blob, it))
    del k, w, ws, g, s, pane, b, items, off
    #: HyperLogLog cells to merge or describe in bulk, per (window, sketch)
    bulk: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for key in sorted(set(partials) | set(stored)):
        wi, start, group, si = key
        window = spec.windows[wi]
        sk = window.sketches[si]
        parts = partials.get(key)
        old = sorted(stored[key]) if key in stored else ()
        final = _is_final(rctx, "sketches", start + window.size_s * US, bool(old))
        last_batch = rctx.batch_id if parts else max(lb for _, lb in old)
        if sk.kind == "hll" and sk.native:
            blobs = [p[1] for p in parts or ()] + [data for data, _ in old]
            bulk.setdefault((wi, si), []).append((start, group, blobs, final, last_batch))
        else:
            _add(rows, open_state, (wi, start), final, _merged_record(
                window, sk, start, group, parts, old, final, last_batch, updated_us))
    for (wi, si), cells in bulk.items():
        _hll_records(wi, spec.windows[wi], spec.windows[wi].sketches[si], cells, rows,
                     open_state, updated_us)
    for final, records in rows.items():
        if records:
            tables[final].append(pa.Table.from_pylist(records, schema=schema))
    out = {final: pa.concat_tables(ts) if ts else schema.empty_table()
           for final, ts in tables.items()}
    return out, views, open_state


def _in_bulk(sub: pa.Table, rctx: ReduceContext, schema: pa.Schema,
             tables: dict[bool, list[pa.Table]],
             open_state: dict[tuple[int, int], list[int]]) -> pa.Table:
    """Build the rows of the cells of ``sub`` whose sketch kind has a bulk builder
    column-wise (:mod:`bulk_cells`); returns the rows whose cells are left for the
    one-by-one path."""
    import numpy as np

    spec = rctx.spec
    if sub.num_rows == 0:
        return sub
    w = np.asarray(sub.column("w").to_numpy(zero_copy_only=False), dtype=np.int64)
    s = np.asarray(sub.column("s").to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = np.ones(sub.num_rows, dtype=bool)
    for wi, si in sorted(set(zip(w.tolist(), s.tolist(), strict=True))):
        build = builder(spec.windows[wi].sketches[si])
        if build is None:
            continue
        mine = (w == wi) & (s == si)
        got = cell_rows(sub.filter(pa.array(mine)), spec, wi, si, schema, rctx.batch_id,
                        rctx.now_ms * 1000,
                        lambda end, stored: _final_mask(rctx, "sketches", end, stored), build)
        if got is None:
            continue
        final, partial, left = got
        tables[True].append(final)
        tables[False].append(partial)
        starts = partial.column("window_start").cast(pa.int64()).to_pylist()
        for start, size in zip(starts, pc.binary_length(partial.column("bytes")).to_pylist(),
                               strict=True):
            entry = open_state.setdefault((wi, start), [0, 0])
            entry[0] += 1
            entry[1] += size
        where = np.flatnonzero(mine)
        keep[where[~left]] = False
    return sub.filter(pa.array(keep))


def _views(rows: pa.Table, spec: Spec, now_us: int) -> dict[tuple[int, int], tuple[int, Any]]:
    """Per (window, sketch): the newest window this batch touched (starting by ``now_us``)
    and the union of its partials, every group merged."""
    import numpy as np

    if rows.num_rows == 0:
        return {}
    w = np.asarray(rows.column("w").to_numpy(zero_copy_only=False), dtype=np.int64)
    s = np.asarray(rows.column("s").to_numpy(zero_copy_only=False), dtype=np.int64)
    ws = np.asarray(rows.column("ws").to_numpy(zero_copy_only=False), dtype=np.int64)
    out = {}
    for wi, si in set(zip(w.tolist(), s.tolist(), strict=True)):
        mine = (w == wi) & (s == si) & (ws <= now_us)
        if not mine.any():
            continue
        start = int(ws[mine].max())
        blobs = rows.column("b").filter(pa.array(mine & (ws == start)))
        out[(wi, si)] = (start, merge_blobs(blobs, spec.windows[wi].sketches[si]))
    return out


def _add(rows: dict[bool, list[dict[str, Any]]], open_state: dict[tuple[int, int], list[int]],
         slot: tuple[int, int], final: bool, record: dict[str, Any]) -> None:
    """Keep a row; an open window's counts its partial rows and their bytes (``slot``:
    (window index, start))."""
    if not final:
        entry = open_state.setdefault(slot, [0, 0])
        entry[0] += 1
        entry[1] += len(record["bytes"])
    rows[final].append(record)


def _merged_record(window: Any, sk: Any, start: int, group: str, parts: list | None,
                   old: list[tuple[bytes, int]], final: bool, last_batch: int,
                   updated_us: int) -> dict[str, Any]:
    """A cell's row, its sketch built: this batch's partials, then the stored rows."""
    sketch = merge_cell(parts, sk.read) if parts else None
    for data, _ in old:
        if sketch is None:
            sketch = sk.read(data)
        else:
            sketch.merge(sk.read(data))
    if final:
        return sketch_record(window, sk, start, group, sketch, last_batch, updated_us)
    return partial_record(window, sk, start, group, sketch.to_bytes(), last_batch, updated_us)


def _hll_records(wi: int, window: Any, sk: Any, cells: list[tuple[Any, ...]],
                 rows: dict[bool, list[dict[str, Any]]],
                 open_state: dict[tuple[int, int], list[int]], updated_us: int) -> None:
    """Rows of HyperLogLog cells, merged and described in bulk (:mod:`hll_cells`);
    a cell the bulk path leaves is built one by one."""
    import numpy as np

    from sketches.hll import sparse_limit

    blobs = [b for _, _, bs, _, _ in cells for b in bs]
    owner = np.repeat(np.arange(len(cells)), [len(bs) for _, _, bs, _, _ in cells])
    precision = int(sk.param_dict.get("precision", sk.new().precision))
    done = compact_cells(blobs, owner, len(cells), sk.new().to_bytes(), precision,
                         sparse_limit(precision))
    for i, (start, group, bs, final, last_batch) in enumerate(cells):
        data = None if done is None else done.data[i]
        if data is None:
            _add(rows, open_state, (wi, start), final, _merged_record(
                window, sk, start, group, None, [(b, last_batch) for b in bs], final,
                last_batch, updated_us))
            continue
        record = partial_record(window, sk, start, group, data, last_batch, updated_us)
        if final:
            assert done is not None
            record.update(estimate=float(done.estimate[i]), lower_bound=float(done.lower[i]),
                          upper_bound=float(done.upper[i]),
                          stats=[("relative_error", float(done.relative_error))])
        _add(rows, open_state, (wi, start), final, record)


def _quarantine_rows(q: pa.Table, batch_id: int) -> pa.Table:
    """The quarantined records of a batch as rows of the ``quarantine`` table."""
    n = q.num_rows
    reason = q.column("reason")
    code = pc.list_element(pc.split_pattern(reason, ":", max_splits=1), 0)
    now_us = int(time.time() * 1_000_000)
    return pa.table({
        "key": q.column("key"), "value": q.column("b"), "topic": q.column("topic"),
        "partition": q.column("part"), "offset": q.column("off"),
        "source_timestamp": q.column("src_ts"), "reason_code": code, "reason": reason,
        "event_time": q.column("et").cast(pa.timestamp("us", tz="UTC")),
        "batch_id": pa.array([batch_id] * n, pa.int64()),
        "quarantined_at": pa.array([now_us] * n, pa.timestamp("us", tz="UTC")),
    }, schema=QUARANTINE_SCHEMA)


def make_reduce(rctx: ReduceContext):
    """The function Spark's ``mapInArrow`` runs on each slice of a batch's keys."""

    def reduce(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        allocate_returnably()  # once per worker (the daemon's workers start with it)
        collected = [b for b in batches if b.num_rows]
        if not collected:
            return
        table = pa.Table.from_batches(collected)
        del collected
        bucket = None
        if rctx.buckets:
            table, bucket = task_rows(table, rctx)
        out = reduce_rows(table, rctx, bucket)
        del table
        release_freed_memory()  # this slice is written: the worker's peak goes back
        yield from out.to_batches()

    return reduce


def merged_table(spec: Spec, table: str, rows: pa.Table) -> pa.Table:
    """Stored rows of ``aggregates`` or ``sketches`` as a reader sees them: one row per
    cell, its partial rows merged; ``final`` when any of them is."""
    if rows.num_rows == 0:
        return rows
    finals = {(w, ws, g, s) for w, ws, g, s, f in zip(
        rows.column("window_name").to_pylist(),
        rows.column("window_start").cast(pa.int64()).to_pylist(),
        rows.column("group_key").to_pylist(),
        (rows.column("sketch_name").to_pylist() if table == "sketches"
         else [None] * rows.num_rows),
        rows.column(PARTITION).to_pylist(), strict=True) if f}
    rctx = ReduceContext(spec, -1, 0, -(1 << 62), {}, {})
    partials = stored_partials(spec, table, rows)
    if table == "aggregates":
        records = [r for t in aggregate_rows(partials, rctx).values() for r in t.to_pylist()]
        schema = aggregates_schema(spec)
    else:
        records = [r for t in sketch_rows(partials, rctx)[0].values() for r in t.to_pylist()]
        schema = SKETCHES_SCHEMA
    for r in records:
        r[PARTITION] = (r["window_name"], r["window_start"], r["group_key"],
                        r.get("sketch_name")) in finals
    return pa.Table.from_pylist(records, schema=schema)


# -- what the driver reads of the merge stage's output --------------------------------
def empty_output() -> pa.Table:
    return REDUCE_SCHEMA.empty_table()


def output_files(out: pa.Table) -> dict[str, list[WrittenFile]]:
    rows = out.filter(pc.equal(out.column("kind"), "f")).to_pylist()
    files: dict[str, list[WrittenFile]] = {}
    for r in rows:
        files.setdefault(r["table"], []).append(
            WrittenFile(r["table"], r["path"], int(r["size"]), int(r["rows"]), r["final"],
                        r["stats"]))
    return files


def output_views(rows: pa.Table, spec: Spec) -> dict[tuple[str, str], tuple[int, str, Any]]:
    """Per (window, sketch): the newest window this batch touched and its union (the
    tasks' unions of that window merged; O(tasks) rows)."""
    out: dict[tuple[str, str], tuple[int, str, Any]] = {}
    for r in rows.to_pylist():
        w = spec.windows[r["w"]]
        sk = w.sketches[r["s"]]
        key = (w.name, sk.name)
        cur = out.get(key)
        sketch = sk.read(r["b"])
        if cur is None or r["ws"] > cur[0]:
            out[key] = (r["ws"], sk.kind, sketch)
        elif r["ws"] == cur[0]:
            cur[2].merge(sketch)
    return out


def output_open_windows(rows: pa.Table, spec: Spec) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Per (window, start) still open: its end, the partial sketch rows written, their bytes."""
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    for r in rows.to_pylist():
        w = spec.windows[r["w"]]
        key = (w.name, r["ws"])
        _, n, b = out.get(key, (0, 0, 0))
        out[key] = (r["ws"] + w.size_s * 1_000_000, n + int(r["rows"]), b + int(r["size"]))
    return out
