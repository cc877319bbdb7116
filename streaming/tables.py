"""The Delta tables a pipeline writes, their schemas, and their binding to a checkpoint.

``aggregates``  one row per window x group: exact metrics, ``final`` once the
                watermark has passed the window end.
``sketches``    one row per window x group x sketch: the sketch bytes (the
                ``sketches`` package's versioned format) plus its estimate, bounds,
                top-k and stats.
``quarantine``  every record that was not aggregated: malformed, or later than
                the watermark, with its raw key/value, topic, partition, offset and
                the reason.

Every table carries the id of the checkpoint that writes it (table property
``streamsketch.checkpoint_id``): a table written under another checkpoint is
refused, because batch ids, the basis of idempotent writes, restart with a new
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.errors import CheckpointError
from streaming.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CHECKPOINT_PROPERTY = "streamsketch.checkpoint_id"
TABLES = ("aggregates", "sketches", "quarantine")

_KEY_DDL = ("window_name STRING NOT NULL, window_start TIMESTAMP NOT NULL, "
            "window_end TIMESTAMP NOT NULL, group_key STRING NOT NULL, "
            "`group` MAP<STRING, STRING>")
_SQL_TYPES = {"long": "BIGINT", "double": "DOUBLE", "decimal": "DECIMAL(38,9)"}


def aggregates_ddl(spec: Spec) -> str:
    metrics = ", ".join(f"`{c}` {_SQL_TYPES[t]}" for c, t in spec.metric_columns())
    return (f"{_KEY_DDL}, {metrics}, final BOOLEAN NOT NULL, last_batch BIGINT NOT NULL, "
            "updated_at TIMESTAMP")


SKETCHES_DDL = (f"{_KEY_DDL}, sketch_name STRING NOT NULL, kind STRING NOT NULL, "
                "field STRING NOT NULL, bytes BINARY NOT NULL, estimate DOUBLE, "
                "lower_bound DOUBLE, upper_bound DOUBLE, "
                "top_k ARRAY<STRUCT<item: STRING, count: BIGINT>>, stats MAP<STRING, DOUBLE>, "
                "final BOOLEAN NOT NULL, last_batch BIGINT NOT NULL, updated_at TIMESTAMP")

QUARANTINE_DDL = ("key BINARY, value BINARY, topic STRING, `partition` INT, `offset` BIGINT, "
                  "source_timestamp TIMESTAMP, reason_code STRING NOT NULL, "
                  "reason STRING NOT NULL, "
                  "event_time TIMESTAMP, batch_id BIGINT NOT NULL, quarantined_at TIMESTAMP")


@dataclass(frozen=True)
class TablePaths:
    root: Path

    @property
    def aggregates(self) -> str:
        return str(self.root / "aggregates")

    @property
    def sketches(self) -> str:
        return str(self.root / "sketches")

    @property
    def quarantine(self) -> str:
        return str(self.root / "quarantine")

    def all(self) -> dict[str, str]:
        return {"aggregates": self.aggregates, "sketches": self.sketches,
                "quarantine": self.quarantine}


def table_paths(spec: Spec) -> TablePaths:
    return TablePaths(Path(spec.sink.path))


def _is_delta(path: str) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def ensure_tables(spark: SparkSession, spec: Spec, checkpoint_id: str) -> TablePaths:
    """Create missing tables; refuse tables bound to another checkpoint."""
    from delta.tables import DeltaTable

    paths = table_paths(spec)
    ddls = {"aggregates": aggregates_ddl(spec), "sketches": SKETCHES_DDL,
            "quarantine": QUARANTINE_DDL}
    for name, path in paths.all().items():
        if _is_delta(path):
            props = DeltaTable.forPath(spark, path).detail().first()["properties"]
            bound = props.get(CHECKPOINT_PROPERTY)
            if bound != checkpoint_id:
                raise CheckpointError(
                    f"table {path} was written under another checkpoint ({bound}); its batch "
                    "ids would clash with this one's. Use a new [sink] path with a new "
                    "checkpoint, or delete both to start fresh")
            continue
        builder = (DeltaTable.createIfNotExists(spark).location(path)
                   .property(CHECKPOINT_PROPERTY, checkpoint_id)
                   .property("delta.appendOnly", "true" if name == "quarantine" else "false"))
        schema = spark.createDataFrame([], ddls[name]).schema
        builder.addColumns(schema).execute()
    return paths
