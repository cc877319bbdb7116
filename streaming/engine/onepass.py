"""The engine's one pass: raw records of one input partition -> small partial rows.

Spark runs :func:`make_pass` once per input partition of a micro-batch
(``mapInArrow`` over the raw Kafka records); a backfill calls :func:`run_pass` on
its batches directly. Either way the same function, for every record:

1. decodes and validates it (:mod:`streaming.engine.decode`);
2. tests its event time against the batch's watermark (fixed before the batch ran): a
   late row is quarantined, or under ``late = "update"`` kept and counted;
3. adds it to the exact metrics and the sketches of its pane and group, per window.

and emits, instead of the records, partial rows (schema :data:`PASS_SCHEMA`):

``kind = "m"``  metric partials per (window, pane, group): count, exact sums (as
                integers of 1e-9), non-null counts, min and max, as JSON in ``b``;
``kind = "s"``  sketch partials per (window, pane, group, sketch): the sketch bytes
                in ``b``, and for a Count-Min with top-k every distinct item the
                partition saw for it, as JSON in ``items`` (so the merged candidates
                do not depend on how the batch was split);
``kind = "q"``  one row per quarantined record: raw key and value, provenance, reason;
``kind = "p"``  one row of bookkeeping: records per reason code, per input partition
                the latest event time (the watermark's input), the process that ran it.

A pane is the tumbling window of size ``slide`` (the window itself when it does not
slide); the driver combines panes into windows.
"""

from __future__ import annotations

import contextlib
import decimal
import gc
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streaming.engine import faults
from streaming.engine.avro_decode import decoder_for
from streaming.engine.decode import Decoded, Decoder
from streaming.engine.event_times import timestamp_text
from streaming.engine.group_keys import distinct_items, factorize, group_keys
from streaming.engine.memory import allocate_returnably, release_freed_memory
from streaming.engine.source import from_kafka
from streaming.spec.model import Spec
from streaming.spec.windows import WindowSpec, column_part
from streaming.units import US

#: optional column of a backfill's raw records: a reason found while reading the log
READER_REASON = "_reader_reason"
#: the raw-record columns the pass reads
RAW_COLUMNS = ("_key", "_value", "_topic", "_partition", "_offset", "_source_ts")

PASS_SCHEMA = pa.schema([
    ("kind", pa.string()), ("w", pa.int32()), ("pane", pa.int64()), ("ws", pa.int64()),
    ("g", pa.string()),
    ("s", pa.int32()), ("b", pa.binary()), ("items", pa.binary()),
    ("key", pa.binary()), ("topic", pa.string()), ("part", pa.int32()), ("off", pa.int64()),
    ("src_ts", pa.timestamp("us", tz="UTC")), ("reason", pa.string()), ("et", pa.int64()),
])
PASS_DDL = ("kind STRING, w INT, pane BIGINT, ws BIGINT, g STRING, s INT, b BINARY, items BINARY, "
            "key BINARY, topic STRING, part INT, off BIGINT, src_ts TIMESTAMP, "
            "reason STRING, et BIGINT")



class MetricPartial(NamedTuple):
    """A ``kind = "m"`` row: the exact metrics of one pane of one group, as JSON."""

    window: int  #: index of the window in the spec
    pane: int  #: pane start, epoch microseconds
    group: str
    values: bytes


class SketchPartial(NamedTuple):
    """A ``kind = "s"`` row: one sketch of one pane of one group."""

    window: int
    pane: int
    group: str
    sketch: int  #: index of the sketch in its window
    data: bytes  #: the sketch's bytes
    items: bytes | None  #: a Count-Min with top-k: the distinct items seen, as JSON


@dataclass
class PassRows:
    """The pass's small rows by kind; quarantined records stay in the Arrow table."""

    metrics: list[MetricPartial] = field(default_factory=list)
    sketches: list[SketchPartial] = field(default_factory=list)
    stats: list[bytes] = field(default_factory=list)


def pass_rows(table: pa.Table) -> PassRows:
    """Split the partial rows of a batch by kind (tuples: a batch can hold 100,000s)."""
    kind = table.column("kind")

    def columns(k: str, names: list[str]) -> list[list[Any]]:
        sub = table.filter(pc.equal(kind, k)).select(names)
        return [sub.column(n).to_pylist() for n in names]

    out = PassRows()
    out.metrics = list(map(MetricPartial._make,
                           zip(*columns("m", ["w", "pane", "g", "b"]), strict=True)))
    out.sketches = list(map(SketchPartial._make,
                            zip(*columns("s", ["w", "pane", "g", "s", "b", "items"]),
                                strict=True)))
    out.stats = columns("p", ["b"])[0]
    return out


_SCALE = 10 ** 9
_DEC = decimal.Context(prec=60)
_HALF_UP = decimal.ROUND_HALF_UP


@dataclass(frozen=True)
class PassContext:
    """What one batch's pass needs, fixed before the batch runs."""

    spec: Spec
    watermark_ms: int
    now_ms: int
    track_latency: bool = False


def used_fields(spec: Spec) -> set[str]:
    """The declared fields some window groups by, measures or sketches."""
    out: set[str] = set()
    for w in spec.windows:
        out.update(w.group_by)
        out.update(m.field for m in w.metrics if m.field)
        out.update(s.field for s in w.sketches)
    return out


def partition_key(topic: Any, partition: Any) -> str:
    """The name of an input partition in bookkeeping: ``topic:partition``."""
    return f"{topic}:{partition}"


def scaled_decimal(x: float) -> int:
    """``x`` as an integer count of 1e-9, rounded half up from its shortest decimal form.

    The same value as casting the double to DECIMAL(38, 9), so sums are exact.

    Example:
        >>> scaled_decimal(12.34), scaled_decimal(-0.0000000005)
        (12340000000, -1)
    """
    d = decimal.Decimal(repr(float(x)))
    return int(d.scaleb(9, _DEC).quantize(decimal.Decimal(1), rounding=_HALF_UP, context=_DEC))


def _exact_sums(values: np.ndarray, codes: np.ndarray, n: int, is_int: bool) -> list[int]:
    """Per group, the exact sum of ``values`` in units of 1e-9 (Python ints)."""
    uniq, inverse = np.unique(values, return_inverse=True)
    if is_int:
        scaled = [int(u) * _SCALE for u in uniq.tolist()]
    else:
        scaled = [scaled_decimal(u) for u in uniq.tolist()]
    biggest = max((abs(s) for s in scaled), default=0)
    if biggest * max(values.size, 1) < (1 << 62):
        per_row = np.asarray(scaled, dtype=np.int64)[inverse]
        out = np.zeros(n, dtype=np.int64)
        np.add.at(out, codes, per_row)
        return [int(v) for v in out.tolist()]
    obj = np.asarray(scaled, dtype=object)[inverse]
    sums: list[int] = [0] * n
    for c, v in zip(codes.tolist(), obj.tolist(), strict=True):
        sums[c] += v
    return sums


def _json(value: Any) -> bytes:
    """``value`` as compact JSON bytes, in a buffer of its own size.

    ``orjson.dumps`` returns its result in a 4 KiB buffer; kept for tens of thousands of
    partial rows that alone would take hundreds of megabytes.
    """
    return bytes(memoryview(orjson.dumps(value)))


class _Out:
    """The pass's output: blocks of partial rows built as columns, and single rows."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {f.name: [] for f in PASS_SCHEMA}
        self.blocks: list[pa.RecordBatch] = []

    def add(self, **values: Any) -> None:
        for name, col in self.cols.items():
            col.append(values.get(name))

    def add_windows(self, window: WindowSpec, kind: str, wi: int, panes: list[int],
                    keys: list[str], blobs: list[bytes], *, si: int | None = None,
                    items: list[bytes | None] | None = None) -> None:
        """Rows of partials (one per pane and group), each sent to every window containing
        its pane (one for a tumbling window), so that every partial of a window meets the
        others under one key, wherever it was made."""
        k = window.size_s // window.slide_s
        starts = panes
        if k > 1:
            step = window.slide_s * US
            starts = [p - i * step for p in panes for i in range(k)]
            panes = [p for p in panes for _ in range(k)]
            keys = [g for g in keys for _ in range(k)]
            blobs = [b for b in blobs for _ in range(k)]
            if items is not None:
                items = [it for it in items for _ in range(k)]
        n = len(panes)
        cols = {"kind": pa.array([kind] * n, pa.string()),
                "w": pa.array([wi] * n, pa.int32()), "pane": pa.array(panes, pa.int64()),
                "ws": pa.array(starts, pa.int64()), "g": pa.array(keys, pa.string()),
                "b": pa.array(blobs, pa.binary())}
        if si is not None:
            cols["s"] = pa.array([si] * n, pa.int32())
        if items is not None:
            cols["items"] = pa.array(items, pa.binary())
        self.blocks.append(pa.RecordBatch.from_arrays(
            [cols.get(f.name, pa.nulls(n, f.type)) for f in PASS_SCHEMA], schema=PASS_SCHEMA))

    def batch(self) -> pa.RecordBatch:
        rows = pa.RecordBatch.from_pydict(self.cols, schema=PASS_SCHEMA)
        if not self.blocks:
            return rows
        return pa.Table.from_batches([rows, *self.blocks]).combine_chunks().to_batches()[0]


def _metric_partials(out: _Out, wi: int, window: WindowSpec, codes: np.ndarray,
                     panes: list[int], keys: list[str], columns: dict[str, pa.Array],
                     types: dict[str, str], late: np.ndarray | None) -> None:
    n = len(panes)
    count = np.bincount(codes, minlength=n)
    per_group: list[dict[str, Any]] = [{"count": int(c)} for c in count.tolist()]
    if late is not None:  # late rows folded in (late = "update"), counted per window
        for g, c in enumerate(np.bincount(codes[late], minlength=n).tolist()):
            per_group[g]["late_rows"] = c
    wanted: dict[str, set[str]] = {}
    for m in window.metrics:
        if m.field is None:
            continue
        need = wanted.setdefault(m.field, set())
        if m.func in ("sum", "avg"):
            need.add("sum")
        if m.func == "avg":
            need.add("n")
        if m.func in ("min", "max"):
            need.add(m.func)
    for fld, need in wanted.items():
        part = column_part(fld)  # a path's dots are _ in column names
        arr = columns[fld]
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        is_int = types[fld] in ("long", "int")
        values = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False))
        vcodes = codes[valid]
        vals = values[valid]
        nn = np.bincount(vcodes, minlength=n).tolist()
        if "n" in need:
            for g in range(n):
                per_group[g][f"n_{part}"] = nn[g]
        if "sum" in need:
            sums = _exact_sums(vals, vcodes, n, is_int)
            for g in range(n):
                per_group[g][f"sum_{part}"] = str(sums[g]) if nn[g] else None
        as_float = vals.astype(np.float64)
        for func, init, ufunc in (("min", np.inf, np.minimum), ("max", -np.inf, np.maximum)):
            if func not in need:
                continue
            acc = np.full(n, init, dtype=np.float64)
            ufunc.at(acc, vcodes, as_float)
            # NaN propagates through minimum/maximum, as in Spark's min/max of doubles
            for g, v in enumerate(acc.tolist()):
                per_group[g][f"{func}_{part}"] = v if nn[g] else None
    out.add_windows(window, "m", wi, panes, keys, [_json(v) for v in per_group])


def _sketch_partials(out: _Out, wi: int, window: WindowSpec, codes: np.ndarray,
                     panes: list[int], keys: list[str], columns: dict[str, pa.Array]) -> None:
    n = len(panes)
    for si, sk in enumerate(window.sketches):
        values, of = columns[sk.field], codes
        if pa.types.is_list(values.type):  # a list field: each element, in its row's cell
            of = codes[pc.list_parent_indices(values).to_numpy()]
            values = pc.list_flatten(values)
        blobs = _group_blobs(sk, of, values, n)
        items = None
        if sk.kind == "cms" and sk.param_dict.get("top_k"):
            items = distinct_items(of, values, n)
        kept = [g for g, blob in enumerate(blobs) if blob is not None]
        out.add_windows(window, "s", wi, [panes[g] for g in kept], [keys[g] for g in kept],
                        [blobs[g] for g in kept], si=si,
                        items=None if items is None else [_json(items[g]) for g in kept])


def _group_blobs(sk: Any, codes: np.ndarray, values: Any, n: int) -> list[bytes | None]:
    """Each group's partial sketch's bytes (None: nothing to keep), by ``group_bytes``
    for the kinds that have it."""
    group_bytes = getattr(sk.sketch_class, "group_bytes", None)
    if group_bytes is not None:
        empty = sk.sketch_class(**sk.param_dict).to_bytes()
        return [None if blob == empty else blob
                for blob in group_bytes(codes, values, n, **sk.param_dict)]
    # a quantiles sketch that only skipped values (nulls, NaN) still counts them
    return [None if sketch.is_empty() and not getattr(sketch, "skipped", 0) else sketch.to_bytes()
            for sketch in sk.sketch_class.from_groups(codes, values, n, **sk.param_dict)]


def _topics(raw: pa.Table, ctx: PassContext) -> pa.Array:
    """The ``_topic`` column; a Kafka batch of one subscribed topic may leave it out."""
    if "_topic" in raw.column_names:
        return raw.column("_topic").combine_chunks()
    return pa.array([ctx.spec.source.topic] * raw.num_rows, pa.string())


def pass_decoder(spec: Spec) -> Decoder:
    """The decoder of the pass: every declared field validated, the used ones kept."""
    return decoder_for(spec.events, columns=used_fields(spec))


def decode_raw(decoder: Decoder, raw: pa.Table | pa.RecordBatch, ctx: PassContext) -> Decoded:
    """Decode and validate raw records (a whole input partition, or a piece of one)."""
    values = raw.column("_value")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    reader = (raw.column(READER_REASON).to_pylist()
              if READER_REASON in raw.schema.names else None)
    return decoder.decode(values, now_ms=ctx.now_ms, reader_reasons=reader)


def run_pass(raw: pa.Table, ctx: PassContext, decoded: Decoded | None = None
             ) -> pa.RecordBatch:
    """The partial rows of one input partition's raw records (see the module docstring).

    ``decoded``: the records already decoded (:func:`decode_raw`), as Spark's pass does
    while the rest of the partition is still arriving.
    """
    spec = ctx.spec
    n_rows = raw.num_rows
    if decoded is None:
        decoded = decode_raw(pass_decoder(spec), raw, ctx)
    bad = decoded.bad
    event_of_bad = dict(decoded.bad_event_us)
    wm_us = ctx.watermark_ms * 1000
    late = decoded.event_us < wm_us
    absorb = spec.events.late == "update"
    if late.any() and not absorb:
        reason = "late: event time is before the watermark " + timestamp_text(wm_us)
        for i, us in zip(decoded.ok[late].tolist(), decoded.event_us[late].tolist(),
                         strict=True):
            bad[i] = reason
            event_of_bad[i] = us
    # rows that go into windows: the on-time ones, and under late = "update" the late ones
    # too (folded into their closed windows by the driver)
    on_time = np.ones(late.size, dtype=bool) if absorb else ~late
    out = _Out()

    # bookkeeping: reason codes, and per input partition the latest event time of its
    # parsed records, late ones included (what the watermark advances by), up to the
    # batch time
    topic_codes, topic_names = factorize(_topics(raw, ctx))
    part_no = np.asarray(raw.column("_partition").to_numpy(zero_copy_only=False),
                         dtype=np.int64)
    width = int(part_no.max()) + 1 if n_rows else 1
    pid = topic_codes.astype(np.int64) * width + part_no  # one id per input partition
    ids = np.unique(pid)
    names = {int(i): partition_key(topic_names[i // width], i % width) for i in ids.tolist()}
    seen = {names[i]: 0 for i in names}
    latest: dict[str, int] = {}
    # an event ahead of the batch time (a clock running fast, accepted within max_future)
    # does not advance the watermark: the real-time events after it stay on time
    present = decoded.event_us <= ctx.now_ms * 1000
    if present.any():
        ok_pid = pid[decoded.ok[present]]
        slot = np.searchsorted(ids, ok_pid)
        best = np.full(ids.size, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(best, slot, decoded.event_us[present])
        for i, v in zip(ids.tolist(), best.tolist(), strict=True):
            if v != np.iinfo(np.int64).min:
                latest[names[i]] = int(v)
    codes_count: dict[str, int] = {}
    for r in bad.values():
        code = r.split(":", 1)[0]
        codes_count[code] = codes_count.get(code, 0) + 1
    stats: dict[str, Any] = {"rows": n_rows, "valid": int(on_time.sum()), "codes": codes_count,
                             "late_absorbed": int(late.sum()) if absorb else 0,
                             "latest": latest, "partitions": sorted(seen),
                             "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if ctx.track_latency and n_rows:
        src = raw.column("_source_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        src = src[~np.isnan(src.astype(np.float64))] if src.dtype.kind == "f" else src
        buckets = (np.asarray(src, dtype=np.int64) // 100_000) * 100
        b, c = np.unique(buckets, return_counts=True)
        stats["hist"] = {str(k): int(v) for k, v in zip(b.tolist(), c.tolist(), strict=True)}
    out.add(kind="p", b=orjson.dumps(stats))

    quarantined = None
    if bad:
        rows = sorted(bad)
        idx = pa.array(rows, pa.int64())
        n_bad = len(rows)
        quarantined = pa.Table.from_pydict({
            "kind": pa.array(["q"] * n_bad, pa.string()),
            "w": pa.nulls(n_bad, pa.int32()), "pane": pa.nulls(n_bad, pa.int64()),
            "ws": pa.nulls(n_bad, pa.int64()),
            "g": pa.nulls(n_bad, pa.string()), "s": pa.nulls(n_bad, pa.int32()),
            "b": raw.column("_value").take(idx), "items": pa.nulls(n_bad, pa.binary()),
            "key": raw.column("_key").take(idx), "topic": _topics(raw, ctx).take(idx),
            "part": raw.column("_partition").take(idx).cast(pa.int32()),
            "off": raw.column("_offset").take(idx).cast(pa.int64()),
            "src_ts": raw.column("_source_ts").take(idx).cast(pa.timestamp("us", tz="UTC")),
            "reason": pa.array([bad[i] for i in rows], pa.string()),
            "et": pa.array([event_of_bad.get(i) for i in rows], pa.int64()),
        }, schema=PASS_SCHEMA)

    if on_time.any():
        et = decoded.event_us[on_time]
        keep = np.flatnonzero(on_time)
        late_kept = late[on_time] if absorb else None
        columns = {k: v.take(pa.array(keep)) for k, v in decoded.columns.items()}
        types = dict(spec.events.fields)
        for wi, window in enumerate(spec.windows):
            slide = window.slide_s * US
            pane = et - np.mod(et, slide)
            gcodes, gkeys = group_keys(window, columns, et.size)
            combined = factorize(pane)[0] * len(gkeys) + gcodes
            codes, uniq = factorize(combined)
            codes = codes.astype(np.int64)
            pane_of = np.zeros(len(uniq), dtype=np.int64)
            group_of = np.zeros(len(uniq), dtype=np.int64)
            pane_of[codes] = pane
            group_of[codes] = gcodes
            panes = [int(p) for p in pane_of.tolist()]
            keys = [gkeys[g] for g in group_of.tolist()]
            _metric_partials(out, wi, window, codes, panes, keys, columns, types, late_kept)
            if window.sketches:
                _sketch_partials(out, wi, window, codes, panes, keys, columns)
    small = out.batch()
    if quarantined is None:
        return small
    table = pa.concat_tables([pa.Table.from_batches([small]), quarantined]).combine_chunks()
    return table.to_batches()[0]


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off: the pass allocates millions of objects in no cycle,
    and the collector would walk them again and again (about 6% of the pass)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def make_pass(ctx: PassContext, *, kafka_rows: bool = False):
    """The function Spark's ``mapInArrow`` runs on each input partition.

    ``kafka_rows``: the input is the Kafka source's own rows, renamed here rather than
    by a projection in Spark, which would copy every key and value once more.
    """

    def one_pass(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        allocate_returnably()  # once per worker (the daemon's workers start with it)
        if kafka_rows:
            batches = map(from_kafka, batches)
        # each piece is decoded as it arrives, while Spark still reads and sends the
        # next ones: the JVM's work and ours overlap
        decoder = pass_decoder(ctx.spec)
        collected: list[pa.RecordBatch] = []
        pieces: list[tuple[int, Decoded]] = []
        start = 0
        out = None
        with _no_cycle_collection():
            for batch in batches:
                if batch.num_rows:
                    pieces.append((start, decode_raw(decoder, batch, ctx)))
                    collected.append(batch)
                    start += batch.num_rows
            if collected:
                table = pa.Table.from_batches(collected)
                faults.maybe_kill_worker(table)
                out = run_pass(table, ctx, Decoded.concat(pieces))
                del table, collected, pieces
        if out is not None:
            release_freed_memory()  # this worker's pass is done: its peak goes back
            yield out

    return one_pass
