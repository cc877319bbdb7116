"""Answers from the stored tables: merge any time range of windows.

``distinct``   HyperLogLog union: estimate with lower/upper bounds (2 sigma)
``topk``       Count-Min union: heavy hitters with counts and the error bound
``contains``   Bloom union: is a value (probably) present, with the false-positive rate
``similarity`` MinHash: Jaccard of two time ranges
``overlap``    Theta set algebra of two ranges or groups: each, union, intersection and
               both differences, every one with bounds
``aggregate``  exact metrics summed over the range

A range selects the windows lying wholly inside ``[from, to)``. For sliding
windows, additive answers (``topk``, ``aggregate``) use only the windows that
tile the range without overlap (starts aligned to the window size), so no event
is counted twice; HLL, Bloom and MinHash unions are idempotent and use them all.

Two engines read the tables and give the same answers:

* :class:`DeltaSource` (the default): delta-rs, no JVM; sketches merged in bulk
  (:mod:`streaming.engine.sketch_merge`), metrics summed exactly with NumPy;
* :class:`SparkSource`: Spark SQL over delta-spark, each sketch read and merged
  by the ``sketches`` package one at a time.

Every answer function takes either a source or a ``SparkSession`` first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming.engine.tables import table_paths
from streaming.errors import ConfigError
from streaming.query.params import Selection, parse_groups, parse_quantiles, parse_time
from streaming.query.window_counts import CellCount, windows_per_group
from streaming.spec.model import Spec, load_spec
from streaming.spec.windows import SketchSpec, WindowSpec, column_part

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def demo_tables() -> Path:
    """Where ``streamsketch demo`` (run from here, default home) writes its tables.

    The same folder as :func:`streaming.cli.demo.demo_spec`'s ``[sink] path``.
    """
    from streaming.runtime.home import default_home

    return default_home().expanduser().absolute() / "demo" / "delta"


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it."""
    path = path.absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class TablesMissingError(ConfigError):
    """The table a query reads does not exist (yet)."""


def load_query_spec(spec_path: str | Path, tables: str | Path | None, *,
                    table: str | None = "sketches") -> Spec:
    """The spec, with ``[sink] path`` replaced by ``tables`` if given.

    Raises:
        TablesMissingError: when ``table`` (unless None) is missing; if the demo's
            tables exist, the message says how to query them.
    """
    spec = load_spec(spec_path)
    if tables is not None:
        spec = replace(spec, sink=replace(spec.sink, path=str(tables)))
    if table is not None:
        check_table(spec, table, hint_demo=tables is None)
    return spec


def check_table(spec: Spec, table: str, *, hint_demo: bool = False) -> None:
    """Raise :class:`TablesMissingError` unless the spec's ``table`` exists."""
    path = Path(table_paths(spec).all()[table])
    if (path / "_delta_log").is_dir():
        return
    msg = f"no {table} table under {spec.sink.path}"
    demo = demo_tables()
    if hint_demo and (demo / table / "_delta_log").is_dir():
        msg += f"; the demo's tables are under {shown(demo)}: add --tables {shown(demo)}"
    else:
        msg += "; run the pipeline first (or point --tables at a folder of tables)"
    raise TablesMissingError(msg)




def find_sketch(sel: Selection, name: str | None, kind: str) -> SketchSpec:
    """The window's sketch called ``name`` (or its only sketch of ``kind``)."""
    for s in sel.window.sketches:
        if (name is None and s.kind == kind) or s.name == name:
            if s.kind != kind:
                raise ConfigError(f"sketch {s.name!r} is a {s.kind}, this query needs {kind}")
            return s
    have = ", ".join(f"{s.name} ({s.kind})" for s in sel.window.sketches) or "none"
    raise ConfigError(f"window {sel.window.name!r} has no {kind} sketch"
                      + (f" named {name!r}" if name else "") + f"; it has: {have}")


def metric_sources(window: WindowSpec) -> list[str]:
    """The stored columns an ``aggregate`` answer sums (or takes the min/max of)."""
    wanted = {"count"}
    for m in window.metrics:
        if m.func == "avg":
            wanted |= {f"sum_{column_part(m.field)}", f"n_{column_part(m.field)}"}
        elif m.field:
            wanted.add(m.column)
    return sorted(wanted)


class SparkSource:
    """The tables read through Spark SQL (needs a JVM; the reference path)."""

    def __init__(self, spark: SparkSession, spec: Spec) -> None:
        self.spark, self.spec = spark, spec

    def _filters(self, sel: Selection, *, tiling: bool):
        from pyspark.sql import functions as F

        cond = F.col("window_name") == sel.window.name
        if sel.start is not None:
            cond &= F.col("window_start") >= F.lit(sel.start.replace(tzinfo=None))
        if sel.end is not None:
            cond &= F.col("window_end") <= F.lit(sel.end.replace(tzinfo=None))
        for k, v in sel.groups.items():
            cond &= F.col("group")[k] == v
        if tiling and sel.window.sliding:
            cond &= (F.unix_seconds("window_start") % F.lit(sel.window.size_s)) == 0
        return cond

    def merged(self, sel: Selection, sk: SketchSpec, *, tiling: bool) -> tuple[Any, int]:
        from pyspark.sql import functions as F

        from streaming.engine.sketch_merge import merge_each

        rows = (self.spark.read.format("delta").load(table_paths(self.spec).sketches)
                .where(self._filters(sel, tiling=tiling) & (F.col("sketch_name") == sk.name))
                .select("bytes", "window_start", "group_key").collect())
        cells = {(r["window_start"], r["group_key"]) for r in rows}
        return merge_each((bytes(r["bytes"]) for r in rows), sk), len(cells)

    def metric_rows(self, sel: Selection, columns: list[str], *, by_group: bool
                    ) -> list[dict[str, Any]]:
        from pyspark.sql import functions as F

        from streaming.query.metric_sums import combine_of

        aggs = []
        for c in columns:
            fn = {"min": F.min, "max": F.max, "sum": F.sum}[combine_of(c)]
            aggs.append(fn(F.col(f"`{c}`")).alias(c))
        df = (self.spark.read.format("delta").load(table_paths(self.spec).aggregates)
              .where(self._filters(sel, tiling=True)))
        group_cols = ["group_key", "group"] if by_group else []
        out = []
        for r in df.groupBy(*group_cols).agg(F.count_distinct("window_start").alias("_windows"),
                                             *aggs).collect():
            row = {c: r[c] for c in columns}
            row["_windows"] = r["_windows"]
            row["_group"] = dict(r["group"]) if by_group else None
            out.append(row)
        return out


class DeltaSource:
    """The tables read with delta-rs, no JVM (see :mod:`streaming.query.read`)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._readers: dict[str, Any] = {}

    def reader(self, table: str) -> Any:
        from streaming.query.read import TableReader

        if table not in self._readers:
            self._readers[table] = TableReader(table_paths(self.spec).all()[table])
        return self._readers[table]

    def _select(self, table: str, sel: Selection, columns: list[str], *, tiling: bool,
                sketch: str | None = None) -> Any:
        """The selected rows (time range, groups, tiling) as a ``pyarrow.Table``."""
        import numpy as np
        import pyarrow as pa

        from streaming.query.metric_sums import group_codes
        from streaming.query.read import RowFilter, arrow_of, micros, to_us

        equal = [("window_name", sel.window.name)]
        if sketch is not None:
            equal.append(("sketch_name", sketch))
        keys = [*(["window_start"] if tiling and sel.window.sliding else []),
                *(["group_key", "group"] if sel.groups else [])]
        rows = self.reader(table).read(columns, RowFilter(tuple(equal), to_us(sel.start),
                                                          to_us(sel.end)), keys=keys)
        mask = np.ones(rows.num_rows, dtype=bool)
        if tiling and sel.window.sliding:
            starts = micros(rows["window_start"].combine_chunks())
            mask &= (starts // 1_000_000) % sel.window.size_s == 0
        if sel.groups and rows.num_rows:
            codes, first, _ = group_codes(rows)
            maps = rows["group"].take(arrow_of(first)).to_pylist()
            ok = np.array([all(dict(m or []).get(k) == v for k, v in sel.groups.items())
                           for m in maps], dtype=bool)
            mask &= ok[codes]
        if mask.all():
            return rows
        # pyarrow cannot filter binary views yet: those columns become plain binary first
        for i, field in enumerate(rows.schema):
            if field.type == pa.binary_view():
                rows = rows.set_column(i, field.name, rows[i].cast(pa.large_binary()))
        return rows.filter(arrow_of(mask))

    def stored_span(self, window: str) -> tuple[str, str] | None:
        """First start and last end of a window's stored rows (ISO-8601), if any."""
        from streaming.query.read import RowFilter, micros

        rows = self.reader("aggregates").read([], RowFilter((("window_name", window),)),
                                              keys=("window_start", "window_end"))
        if rows.num_rows == 0:
            return None
        iso = [(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(v)))
               .isoformat().replace("+00:00", "Z") for v in
               (micros(rows["window_start"].combine_chunks()).min(),
                micros(rows["window_end"].combine_chunks()).max())]
        return iso[0], iso[1]

    def merged(self, sel: Selection, sk: SketchSpec, *, tiling: bool) -> tuple[Any, int]:
        from streaming.engine.sketch_merge import merge_blobs, merge_chunks

        cells = CellCount()
        if sel.groups:
            rows = self._select("sketches", sel, ["bytes", *CellCount.COLUMNS], tiling=tiling,
                                sketch=sk.name)
            cells.add(rows)
            return merge_blobs(rows["bytes"], sk), cells.count
        # no group filter: merge each batch as DataFusion hands it over
        chunks = self._stream_bytes(sel, sk, tiling=tiling and sel.window.sliding, cells=cells)
        merged = merge_chunks(chunks, sk)
        return merged, cells.count

    def _stream_bytes(self, sel: Selection, sk: SketchSpec, *, tiling: bool,
                      cells: CellCount) -> Any:
        """The ``bytes`` column of the selected rows, batch by batch (counted in ``cells``)."""
        import pyarrow as pa

        from streaming.query.read import RowFilter, arrow_of, micros, to_us

        where = RowFilter((("window_name", sel.window.name), ("sketch_name", sk.name)),
                          to_us(sel.start), to_us(sel.end))
        for batch in self.reader("sketches").stream(["bytes", *CellCount.COLUMNS], where):
            batch = pa.Table.from_batches([batch])
            if tiling:
                starts = micros(batch["window_start"].combine_chunks())
                keep = (starts // 1_000_000) % sel.window.size_s == 0
                if not keep.all():  # pyarrow cannot filter binary or string views yet
                    for i, field in enumerate(batch.schema):
                        if field.type in (pa.binary_view(), pa.string_view()):
                            batch = batch.set_column(i, field.name, batch[i].cast(
                                pa.large_binary() if field.type == pa.binary_view()
                                else pa.large_string()))
                    batch = batch.filter(arrow_of(keep))
            cells.add(batch)
            yield batch["bytes"].combine_chunks()

    def metric_rows(self, sel: Selection, columns: list[str], *, by_group: bool
                    ) -> list[dict[str, Any]]:
        from streaming.query.metric_sums import combine

        rows = self._select("aggregates", sel,
                            ["group_key", *(["group"] if by_group else []), *columns,
                             "window_start"], tiling=True)
        out = combine(rows, columns, by_group=by_group)
        # an open window holds a row per batch that touched a group: count windows
        for r, n in zip(out, windows_per_group(rows, by_group=by_group), strict=True):
            r["_windows"] = n
        return out


def _source(source: Any, spec: Spec) -> Any:
    if isinstance(source, (DeltaSource, SparkSource)):
        return source
    return SparkSource(source, spec)


def merged_sketch(source: Any, spec: Spec, sel: Selection, name: str | None,
                  kind: str) -> tuple[Any, int]:
    """The union of the selected windows' sketches, and how many rows went into it."""
    sk = find_sketch(sel, name, kind)
    # counts (Count-Min, quantiles) must see each event once: sliding windows are tiled
    return _source(source, spec).merged(sel, sk, tiling=kind in ("cms", "quantiles"))


def distinct(source, spec: Spec, sel: Selection, name: str | None) -> dict[str, Any]:
    hll, n = merged_sketch(source, spec, sel, name, "hll")
    return {"estimate": hll.estimate(), "lower_bound": hll.lower_bound(2),
            "upper_bound": hll.upper_bound(2), "relative_error": hll.relative_error(),
            "windows_merged": n}


def topk(source, spec: Spec, sel: Selection, name: str | None, k: int) -> dict[str, Any]:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    cms, n = merged_sketch(source, spec, sel, name, "cms")
    if k > cms.capacity:
        raise ConfigError(f"k {k}: sketch {find_sketch(sel, name, 'cms').name!r} keeps at most "
                          f"{cms.capacity} heavy hitters")
    return {"top": [{"item": str(i), "count": int(c)} for i, c in cms.top(k)],
            "total": int(cms.total), "error_bound": cms.error_bound(), "windows_merged": n}


def contains(source, spec: Spec, sel: Selection, name: str | None, value: str) -> dict[str, Any]:
    from streaming.query.read import arrow_strings

    bloom, n = merged_sketch(source, spec, sel, name, "bloom")
    return {"value": value, "probably_present": bool(bloom.contains(arrow_strings([value]))[0]),
            "expected_fpr": bloom.expected_fpr(), "windows_merged": n}



def quantile(source, spec: Spec, sel: Selection, name: str | None,
             qs: tuple[float, ...]) -> dict[str, Any]:
    sketch, n = merged_sketch(source, spec, sel, name, "quantiles")
    empty = sketch.is_empty()
    rows = [{"q": q, "value": None if empty else float(v),
             "lower_bound": None if empty else float(sketch.lower_bound(q)),
             "upper_bound": None if empty else float(sketch.upper_bound(q))}
            for q, v in zip(qs, sketch.quantiles(list(qs)), strict=True)]
    return {"quantiles": rows, "count": int(sketch.count), "skipped": int(sketch.skipped),
            "relative_error": sketch.relative_error(), "windows_merged": n}


def similarity(source, spec: Spec, a: Selection, b: Selection, name: str | None
               ) -> dict[str, Any]:
    ma, na = merged_sketch(source, spec, a, name, "minhash")
    mb, nb = merged_sketch(source, spec, b, name, "minhash")
    return {"jaccard": ma.jaccard(mb), "windows_merged": [na, nb]}


def overlap(source, spec: Spec, a: Selection, b: Selection, name: str | None
            ) -> dict[str, Any]:
    """Distinct values in A, in B, in either, in both, in A only and in B only (Theta
    set operations), each an estimate with 2-sigma bounds."""
    from sketches.theta import theta_difference, theta_intersection

    ta, na = merged_sketch(source, spec, a, name, "theta")
    tb, nb = merged_sketch(source, spec, b, name, "theta")
    parts = {"a": ta, "b": tb, "union": ta.copy().merge(tb),
             "intersection": theta_intersection(ta, tb), "a_not_b": theta_difference(ta, tb),
             "b_not_a": theta_difference(tb, ta)}
    out: dict[str, Any] = {key: {"estimate": t.estimate(), "lower_bound": t.lower_bound(2),
                                 "upper_bound": t.upper_bound(2)} for key, t in parts.items()}
    return {**out, "windows_merged": [na, nb]}


def aggregate(source, spec: Spec, sel: Selection) -> dict[str, Any]:
    by_group = bool(sel.window.group_by) and not sel.groups
    rows = _source(source, spec).metric_rows(sel, metric_sources(sel.window),
                                             by_group=by_group)
    out = []
    for r in rows:
        item: dict[str, Any] = {"group": r["_group"] if by_group else sel.groups,
                                "windows": r["_windows"]}
        for m in sel.window.metrics:
            if m.func == "avg":
                s, n = r[f"sum_{column_part(m.field)}"], r[f"n_{column_part(m.field)}"]
                item[m.column] = float(s) / n if s is not None and n else None
            elif m.func == "count":
                item["count"] = int(r["count"] or 0)
            else:
                v = r[m.column]
                item[m.column] = float(v) if isinstance(v, Decimal) else v
        out.append(item)
    out.sort(key=lambda x: str(sorted(x["group"].items())))
    return {"rows": out}


QUERIES = ("aggregate", "distinct", "topk", "contains", "similarity", "quantile", "overlap")


@dataclass(frozen=True)
class Question:
    """One query, validated: what to answer, over which selection(s)."""

    what: str
    sel: Selection
    sketch: str | None = None
    k: int = 10
    value: str | None = None
    other: Selection | None = None
    qs: tuple[float, ...] = (0.5, 0.95, 0.99)


def question(spec: Spec, what: str, *, window: str | None, start: str | None, end: str | None,
             groups: list[str] | None = None, sketch: str | None = None, k: int = 10,
             value: str | None = None, vs_start: str | None = None,
             vs_end: str | None = None, qs: str | None = None,
             vs_groups: list[str] | None = None) -> Question:
    """Check a query's parameters against the spec (every mistake a one-line ConfigError)."""
    if what not in QUERIES:
        raise ConfigError(f"unknown query {what!r} (queries: {', '.join(QUERIES)})")
    if window is None:
        if len(spec.windows) != 1:
            raise ConfigError("window is needed: the spec has windows "
                              + ", ".join(w.name for w in spec.windows))
        win = spec.windows[0]
    else:
        win = spec.window(window)
    sel = _selection(win, start, end, groups, "from", "to")
    other = None
    if what == "contains" and value is None:
        raise ConfigError("contains needs a value (--value)")
    if what == "similarity":
        if vs_start is None or vs_end is None:
            raise ConfigError("similarity needs --vs-from and --vs-to (the second range)")
        other = _selection(win, vs_start, vs_end, groups, "vs-from", "vs-to")
    if what == "overlap":
        if vs_start is None and vs_end is None and not vs_groups:
            raise ConfigError("overlap needs a second range (--vs-from, --vs-to) or a second "
                              "group (--vs-group), or both")
        other = _selection(win, vs_start if vs_start or vs_end else start,
                           vs_end if vs_start or vs_end else end,
                           vs_groups if vs_groups else groups, "vs-from", "vs-to")
    elif vs_groups:
        raise ConfigError("--vs-group is for overlap")
    if what == "topk" and k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    kinds = {"distinct": "hll", "topk": "cms", "contains": "bloom", "similarity": "minhash",
             "quantile": "quantiles", "overlap": "theta"}
    if what in kinds:
        find_sketch(sel, sketch, kinds[what])
    return Question(what, sel, sketch, k, value, other, parse_quantiles(qs))


def _selection(win: WindowSpec, start: str | None, end: str | None, groups: list[str] | None,
               start_name: str, end_name: str) -> Selection:
    a, b = parse_time(start, f"--{start_name}"), parse_time(end, f"--{end_name}")
    if a is not None and b is not None and a >= b:
        raise ConfigError(f"--{start_name} {start} is not before --{end_name} {end}")
    return Selection(win, a, b, parse_groups(groups, win))


def ask(source: Any, spec: Spec, q: Question) -> dict[str, Any]:
    """The answer to ``q``; a range that holds no window is a ConfigError."""
    if q.what == "distinct":
        result = distinct(source, spec, q.sel, q.sketch)
    elif q.what == "topk":
        result = topk(source, spec, q.sel, q.sketch, q.k)
    elif q.what == "contains":
        result = contains(source, spec, q.sel, q.sketch, q.value or "")
    elif q.what == "similarity":
        assert q.other is not None
        result = similarity(source, spec, q.sel, q.other, q.sketch)
    elif q.what == "quantile":
        result = quantile(source, spec, q.sel, q.sketch, q.qs)
    elif q.what == "overlap":
        assert q.other is not None
        result = overlap(source, spec, q.sel, q.other, q.sketch)
    else:
        result = aggregate(source, spec, q.sel)
    merged = result.get("windows_merged")
    counts = (merged if isinstance(merged, list) else [merged]) if merged is not None else \
        [sum(r["windows"] for r in result["rows"])]
    if min(counts) == 0:
        raise NoDataError(_no_data(source, q))
    return result


class NoDataError(ConfigError):
    """A well-formed query whose range holds no stored window."""


def _no_data(source: Any, q: Question) -> str:
    where = (f"from {q.sel.start.isoformat() if q.sel.start else 'the first'} to "
             f"{q.sel.end.isoformat() if q.sel.end else 'the last'}")
    groups = "".join(f", {k}={v}" for k, v in q.sel.groups.items())
    msg = f"no windows of {q.sel.window.name!r} {where}{groups}"
    if isinstance(source, DeltaSource):
        span = source.stored_span(q.sel.window.name)
        msg += (f"; the table holds {q.sel.window.name!r} windows from {span[0]} to {span[1]}"
                if span else f"; the table holds no {q.sel.window.name!r} windows")
    return msg
