"""A stable digest of a pipeline's output tables, to compare two runs in one line.

Aggregates are taken as a reader sees them (one row per window x group, the partial
rows of an open window merged) in a canonical order with their metric values,
sketches likewise by the SHA-256 of their merged bytes, quarantine rows by source
position and reason.
Bookkeeping columns (``last_batch``, ``updated_at``, ``quarantined_at``,
``batch_id``) are left out: they say when a row was written, not what it holds.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from streaming.engine.tables import table_paths
from streaming.spec.model import Spec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _canon(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def table_rows(spark: SparkSession, spec: Spec) -> dict[str, list[list[Any]]]:
    """Canonical rows of each table (sorted), the material the digest hashes."""
    from pyspark.sql import functions as F

    from streaming.engine.reduce import merged_table

    paths = table_paths(spec)
    out: dict[str, list[list[Any]]] = {}
    metric_cols = [c for c, _ in spec.metric_columns()]
    agg = merged_table(spec, "aggregates",
                       spark.read.format("delta").load(paths.aggregates).toArrow())
    cols = ["window_name", "window_start", "window_end", "group_key", *metric_cols, "final"]
    out["aggregates"] = _sorted_rows(agg, cols, ["window_name", "window_start", "group_key"])
    sk = merged_table(spec, "sketches", spark.read.format("delta").load(paths.sketches).toArrow())
    cols = ["window_name", "window_start", "group_key", "sketch_name", "kind", "bytes", "final"]
    out["sketches"] = _sorted_rows(sk, cols, ["window_name", "window_start", "group_key",
                                              "sketch_name"])
    q = spark.read.format("delta").load(paths.quarantine)
    cols = ["topic", "partition", "offset", "reason_code", "reason", "key", "value"]
    out["quarantine"] = [[_canon(r[c]) for c in cols] for r in
                         q.select(*[F.col(f"`{c}`") for c in cols])
                         .orderBy("topic", "partition", "offset").collect()]
    return out


def _sorted_rows(table: Any, cols: list[str], order: list[str]) -> list[list[Any]]:
    if table.num_rows:
        table = table.sort_by([(c, "ascending") for c in order])
    return [[_canon(r[c]) for c in cols] for r in table.select(cols).to_pylist()]


def digest(spark: SparkSession, spec: Spec) -> dict[str, Any]:
    """Per-table SHA-256 and row counts, plus one overall digest."""
    rows = table_rows(spark, spec)
    tables = {}
    for name, items in rows.items():
        blob = json.dumps(items, separators=(",", ":"), sort_keys=True).encode()
        tables[name] = {"rows": len(items), "sha256": hashlib.sha256(blob).hexdigest()}
    overall = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return {"digest": overall, "tables": tables}
