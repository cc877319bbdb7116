"""Build ``aggregates`` and ``sketches`` tables with delta-rs, no JVM, from known events.

The tables follow the schemas of :mod:`streaming.engine.tables` (window keys, the
canonical ``group_key`` JSON array, the ``group`` map, metric columns, sketch
bytes from the ``sketches`` package). The events are kept, so a test can compute
the true answer of any query directly from them.

Used by the query tests and by ``benchmarks/bench_query.py``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from streaming.spec.model import Spec
from streaming.spec.windows import WindowSpec

US = 1_000_000
UTC_US = pa.timestamp("us", tz="UTC")


@dataclass
class Events:
    """Columns of generated events; ``ts_us`` is event time in UTC microseconds."""

    ts_us: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.ts_us.size)

    def take(self, mask: np.ndarray) -> Events:
        return Events(self.ts_us[mask], {k: v[mask] for k, v in self.columns.items()})


def make_events(*, start: dt.datetime, hours: int, per_hour: int, countries: int,
                users: int = 5000, pages: int = 200, seed: int = 7) -> Events:
    """Clickstream-like events spread over ``hours`` hours from ``start``."""
    rng = np.random.default_rng(seed)
    n = hours * per_hour
    t0 = int(start.timestamp()) * US
    ts = np.sort(t0 + rng.integers(0, hours * 3600 * US, n, dtype=np.int64))
    page_w = 1.0 / np.arange(1, pages + 1) ** 1.1
    cols = {
        "user_id": np.array([f"u{i:07d}" for i in range(users)], dtype=object)[
            rng.integers(0, users, n)],
        "page": np.array([f"/p/{i}" for i in range(pages)], dtype=object)[
            rng.choice(pages, n, p=page_w / page_w.sum())],
        "country": np.array([f"C{i:02d}" for i in range(countries)], dtype=object)[
            rng.integers(0, countries, n)],
        "amount": np.round(rng.gamma(2.0, 20.0, n), 2),
    }
    return Events(ts, cols)


def window_starts(ts_us: np.ndarray, window: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """(event index, window start µs) for every window each event falls in."""
    slide, size = window.slide_s * US, window.size_s * US
    last = ts_us - ts_us % slide
    idx, starts = [], []
    for k in range(size // slide):
        idx.append(np.arange(ts_us.size))
        starts.append(last - k * slide)
    return np.concatenate(idx), np.concatenate(starts)


def _group_key(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _cells(events: Events, window: WindowSpec):
    idx, starts = window_starts(events.ts_us, window)
    gcols = [events.columns[g][idx].astype(str) for g in window.group_by]
    keys = list(zip(starts.tolist(), *[c.tolist() for c in gcols], strict=True))
    uniq: dict[tuple, int] = {}
    codes = np.fromiter((uniq.setdefault(k, len(uniq)) for k in keys), dtype=np.int64,
                        count=len(keys))
    return idx, codes, list(uniq)


def _agg_arrays(spec: Spec, window: WindowSpec, events: Events, idx, codes, cells):
    n = len(cells)
    out: dict[str, list] = {c: [None] * n for c, _ in spec.metric_columns()}
    out["count"] = np.bincount(codes, minlength=n).tolist()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    for m in window.metrics:
        if m.field is None:
            continue
        vals = events.columns[m.field][idx][order]
        parts = [vals[bounds[i]:bounds[i + 1]] for i in range(n)]
        if m.func in ("sum", "avg"):
            sums = [sum((decimal.Decimal(repr(float(v))) for v in p), decimal.Decimal(0))
                    .quantize(decimal.Decimal("1e-9")) for p in parts]
            out[f"sum_{m.field}"] = sums
            if m.func == "avg":
                out[f"n_{m.field}"] = [len(p) for p in parts]
                out[m.column] = [float(s) / len(p) if len(p) else None
                                 for s, p in zip(sums, parts, strict=True)]
        elif m.func == "min":
            out[m.column] = [float(p.min()) for p in parts]
        elif m.func == "max":
            out[m.column] = [float(p.max()) for p in parts]
    return out


def _pa_type(typ: str) -> pa.DataType:
    return {"long": pa.int64(), "double": pa.float64(), "decimal": pa.decimal128(38, 9)}[typ]


def aggregates_schema(spec: Spec) -> pa.Schema:
    return pa.schema(
        [("window_name", pa.string(), False), ("window_start", UTC_US, False),
         ("window_end", UTC_US, False), ("group_key", pa.string(), False),
         ("group", pa.map_(pa.string(), pa.string()))]
        + [(c, _pa_type(t)) for c, t in spec.metric_columns()]
        + [("final", pa.bool_(), False), ("last_batch", pa.int64(), False),
           ("updated_at", UTC_US)])


SKETCHES_SCHEMA = pa.schema(
    [("window_name", pa.string(), False), ("window_start", UTC_US, False),
     ("window_end", UTC_US, False), ("group_key", pa.string(), False),
     ("group", pa.map_(pa.string(), pa.string())),
     ("sketch_name", pa.string(), False), ("kind", pa.string(), False),
     ("field", pa.string(), False), ("bytes", pa.binary(), False),
     ("estimate", pa.float64()), ("lower_bound", pa.float64()), ("upper_bound", pa.float64()),
     ("top_k", pa.list_(pa.struct([("item", pa.string()), ("count", pa.int64())]))),
     ("stats", pa.map_(pa.string(), pa.float64())),
     ("final", pa.bool_(), False), ("last_batch", pa.int64(), False),
     ("updated_at", UTC_US)])


def window_batches(spec: Spec, window: WindowSpec, events: Events
                   ) -> tuple[pa.Table, pa.Table]:
    """The aggregates and sketches rows of one window over ``events``."""
    idx, codes, cells = _cells(events, window)
    n = len(cells)
    starts = np.array([c[0] for c in cells], dtype=np.int64)
    keys = [_group_key(tuple(c[1:])) for c in cells]
    groups = [list(zip(window.group_by, c[1:], strict=True)) for c in cells]
    now = np.full(n, 1_800_000_000 * US, dtype=np.int64)
    key_cols = {
        "window_name": pa.array([window.name] * n, pa.string()),
        "window_start": pa.array(starts, UTC_US),
        "window_end": pa.array(starts + window.size_s * US, UTC_US),
        "group_key": pa.array(keys, pa.string()),
        "group": pa.array(groups, pa.map_(pa.string(), pa.string())),
    }
    tail = {"final": pa.array([True] * n), "last_batch": pa.array(np.zeros(n, np.int64)),
            "updated_at": pa.array(now, UTC_US)}
    metrics = _agg_arrays(spec, window, events, idx, codes, cells)
    schema = aggregates_schema(spec)
    agg = pa.table({**key_cols,
                    **{c: pa.array(metrics[c], _pa_type(t)) for c, t in spec.metric_columns()},
                    "late_rows": pa.array(np.zeros(n, np.int64)), **tail}, schema=schema)
    parts = []
    for sk in window.sketches:
        built = sk.sketch_class.from_groups(codes, events.columns[sk.field][idx], n,
                                            **sk.param_dict)
        blobs = [s.to_bytes() for s in built]
        est = [None if sk.kind in ("cms", "quantiles") else float(s.estimate()) for s in built]
        parts.append(pa.table({
            **key_cols,
            "sketch_name": pa.array([sk.name] * n), "kind": pa.array([sk.kind] * n),
            "field": pa.array([sk.field] * n), "bytes": pa.array(blobs, pa.binary()),
            "estimate": pa.array(est, pa.float64()),
            "lower_bound": pa.array([None] * n, pa.float64()),
            "upper_bound": pa.array([None] * n, pa.float64()),
            "top_k": pa.array([None] * n, SKETCHES_SCHEMA.field("top_k").type),
            "stats": pa.array([None] * n, SKETCHES_SCHEMA.field("stats").type),
            **tail}, schema=SKETCHES_SCHEMA))
    return agg, pa.concat_tables(parts) if parts else SKETCHES_SCHEMA.empty_table()


def chunks(events: Events, every_s: int) -> Iterator[Events]:
    """Events cut on ``every_s`` boundaries (keeps memory small for a year of data)."""
    cut = events.ts_us // (every_s * US)
    for value in np.unique(cut):
        yield events.take(cut == value)


def write_tables(spec: Spec, events: Events, *, files: int = 1,
                 chunk_s: int | None = None, row_group_rows: int | None = None) -> None:
    """Write both tables under ``spec.sink.path`` in ``files`` appends (one file each).

    With ``chunk_s``, events are processed in slices of that many seconds, to keep
    memory small; only for tumbling windows whose size divides ``chunk_s`` (a
    sliding window would be cut in two rows at a slice boundary). ``row_group_rows``
    caps the rows of a Parquet row group (delta-rs's default is about a million).
    """
    from deltalake import WriterProperties, write_deltalake

    props = (WriterProperties(max_row_group_size=row_group_rows, compression="SNAPPY")
             if row_group_rows else None)

    aggs, sks = [], []
    for part in (chunks(events, chunk_s) if chunk_s else [events]):
        for window in spec.windows:
            a, s = window_batches(spec, window, part)
            aggs.append(a)
            sks.append(s)
    root = Path(spec.sink.path)
    for name, tables in (("aggregates", aggs), ("sketches", sks)):
        table = pa.concat_tables(tables)
        step = -(-table.num_rows // files)
        for i in range(files):
            piece = table.slice(i * step, step)
            if piece.num_rows or i == 0:
                write_deltalake(str(root / name), piece, mode="append",
                                writer_properties=props)
