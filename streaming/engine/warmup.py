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


#: the job group of the warm-up job, so that a query that ends first can cancel it
WARMUP_GROUP = "streamsketch-warm-up"


class Warmup:
    """The warm-up job's thread; :meth:`end` cancels the job if it still runs (a run
    over an idle topic ends before the workers it would start are needed) and waits."""

    def __init__(self, spark: SparkSession, thread: threading.Thread) -> None:
        self.spark = spark
        self.thread = thread

    def end(self, timeout: float = 30.0) -> None:
        if self.thread.is_alive():
            try:
                self.spark.sparkContext.cancelJobGroup(WARMUP_GROUP)
            except Exception:  # noqa: BLE001 - only an optimisation; wait for it instead
                pass
        self.thread.join(timeout)  # no job of ours outlives the query


def warm_workers(spark: SparkSession) -> Warmup:
    """Run the warm-up job (one task per core) in a background thread. A failure (or a
    cancel) is ignored: the first batch starts the workers itself."""

    def work() -> None:
        try:
            sc = spark.sparkContext
            sc.setJobGroup(WARMUP_GROUP, "start the Python workers", interruptOnCancel=True)
            n = max(1, int(sc.defaultParallelism))
            spark.range(0, n, 1, n).mapInArrow(_warm, "id BIGINT").collect()
        except Exception:  # noqa: BLE001 - only an optimisation
            pass

    thread = threading.Thread(target=work, name="streamsketch-warm-workers", daemon=True)
    thread.start()
    return Warmup(spark, thread)
