"""Spark's Python workers started, and the engine imported in them, before the first batch.

On a cold start the first batch pays for starting Spark's Python workers and importing
the engine in each (seconds, on 2 cores); :func:`warm_workers` runs one small job for
that in a background thread while the query itself starts (Kafka's admin client, the
offsets of the first batch), so that the two overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession


def _warm(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A warm-up task: the modules the pass and the merge stage import, imported."""
    import pyarrow.parquet  # noqa: F401

    import streaming.engine.reduce  # noqa: F401 (the pass, the merge stage, the sketches)

    yield from batches


def warm_workers(spark: SparkSession) -> threading.Thread:
    """Run the warm-up job (one task per core) in a background thread; returns the
    thread. A failure is ignored: the first batch starts the workers itself."""

    def work() -> None:
        try:
            n = max(1, int(spark.sparkContext.defaultParallelism))
            spark.range(0, n, 1, n).mapInArrow(_warm, "id BIGINT").collect()
        except Exception:  # noqa: BLE001 - only an optimisation
            pass

    thread = threading.Thread(target=work, name="streamsketch-warm-workers", daemon=True)
    thread.start()
    return thread
