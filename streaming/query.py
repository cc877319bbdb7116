"""Answers from the stored tables: merge any time range of windows.

``distinct``   HyperLogLog union: estimate with lower/upper bounds (2 sigma)
``topk``       Count-Min union: heavy hitters with counts and the error bound
``contains``   Bloom union: is a value (probably) present, with the false-positive rate
``similarity`` MinHash: Jaccard of two time ranges
``aggregate``  exact metrics summed over the range

A range selects the windows lying wholly inside ``[from, to)``. For sliding
windows, additive answers (``topk``, ``aggregate``) use only the windows that
tile the range without overlap (starts aligned to the window size), so no event
is counted twice; HLL, Bloom and MinHash unions are idempotent and use them all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from streaming.errors import ConfigError
from streaming.spec import Spec, WindowSpec
from streaming.tables import table_paths

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def parse_time(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def parse_groups(items: list[str] | None, window: WindowSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--group wants key=value, got {item!r}")
        if key not in window.group_by:
            raise ConfigError(f"--group {key}: window {window.name!r} groups by "
                              f"{list(window.group_by) or 'nothing'}")
        out[key] = value
    return out


@dataclass(frozen=True)
class Selection:
    window: WindowSpec
    start: dt.datetime | None
    end: dt.datetime | None
    groups: dict[str, str]


def _filters(sel: Selection, *, tiling: bool):
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


def _sketch(spec: Spec, sel: Selection, name: str | None, kind: str):
    for s in sel.window.sketches:
        if (name is None and s.kind == kind) or s.name == name:
            if s.kind != kind:
                raise ConfigError(f"sketch {s.name!r} is a {s.kind}, this query needs {kind}")
            return s
    have = ", ".join(f"{s.name} ({s.kind})" for s in sel.window.sketches) or "none"
    raise ConfigError(f"window {sel.window.name!r} has no {kind} sketch"
                      + (f" named {name!r}" if name else "") + f"; it has: {have}")


def merged_sketch(spark: SparkSession, spec: Spec, sel: Selection, name: str | None,
                  kind: str) -> tuple[Any, int]:
    """The union of the selected windows' sketches, and how many rows went into it."""
    from pyspark.sql import functions as F

    import sketches

    sk = _sketch(spec, sel, name, kind)
    rows = (spark.read.format("delta").load(table_paths(spec).sketches)
            .where(_filters(sel, tiling=kind == "cms") & (F.col("sketch_name") == sk.name))
            .select("bytes").collect())
    result = sk.new()
    for r in rows:
        result.merge(sketches.from_bytes(bytes(r["bytes"])))
    return result, len(rows)


def distinct(spark, spec: Spec, sel: Selection, name: str | None) -> dict[str, Any]:
    hll, n = merged_sketch(spark, spec, sel, name, "hll")
    return {"estimate": hll.estimate(), "lower_bound": hll.lower_bound(2),
            "upper_bound": hll.upper_bound(2), "relative_error": hll.relative_error(),
            "windows_merged": n}


def topk(spark, spec: Spec, sel: Selection, name: str | None, k: int) -> dict[str, Any]:
    cms, n = merged_sketch(spark, spec, sel, name, "cms")
    return {"top": [{"item": str(i), "count": int(c)} for i, c in cms.top(k)],
            "total": int(cms.total), "error_bound": cms.error_bound(), "windows_merged": n}


def contains(spark, spec: Spec, sel: Selection, name: str | None, value: str) -> dict[str, Any]:
    bloom, n = merged_sketch(spark, spec, sel, name, "bloom")
    return {"value": value, "probably_present": bool(bloom.contains([value])[0]),
            "expected_fpr": bloom.expected_fpr(), "windows_merged": n}


def similarity(spark, spec: Spec, a: Selection, b: Selection, name: str | None) -> dict[str, Any]:
    ma, na = merged_sketch(spark, spec, a, name, "minhash")
    mb, nb = merged_sketch(spark, spec, b, name, "minhash")
    return {"jaccard": ma.jaccard(mb), "windows_merged": [na, nb]}


def aggregate(spark, spec: Spec, sel: Selection) -> dict[str, Any]:
    from pyspark.sql import functions as F

    wanted = {"count"}
    for m in sel.window.metrics:
        if m.func == "avg":
            wanted |= {f"sum_{m.field}", f"n_{m.field}"}
        elif m.field:
            wanted.add(m.column)
    aggs = []
    for c in sorted(wanted):
        fn = F.min if c.startswith("min_") else F.max if c.startswith("max_") else F.sum
        aggs.append(fn(F.col(f"`{c}`")).alias(c))
    df = (spark.read.format("delta").load(table_paths(spec).aggregates)
          .where(_filters(sel, tiling=True)))
    group_cols = [] if sel.groups or not sel.window.group_by else ["group_key", "group"]
    rows = df.groupBy(*group_cols).agg(F.count(F.lit(1)).alias("_windows"), *aggs).collect()
    out = []
    for r in rows:
        item: dict[str, Any] = {"group": dict(r["group"]) if group_cols else sel.groups,
                                "windows": r["_windows"]}
        for m in sel.window.metrics:
            if m.func == "avg":
                s, n = r[f"sum_{m.field}"], r[f"n_{m.field}"]
                item[m.column] = float(s) / n if s is not None and n else None
            elif m.func == "count":
                item["count"] = int(r["count"] or 0)
            else:
                v = r[m.column]
                item[m.column] = float(v) if isinstance(v, Decimal) else v
        out.append(item)
    out.sort(key=lambda x: str(sorted(x["group"].items())))
    return {"rows": out}
