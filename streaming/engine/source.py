"""The raw record stream of a Kafka source, with provenance columns.

The pipeline reads the Kafka source's own rows (:func:`raw_stream`) and its pass renames
the columns it reads to ``_key, _value, _partition, _offset, _source_ts``
(:data:`KAFKA_COLUMNS`, :func:`from_kafka`): the same columns a backfill builds
from log files (:mod:`streaming.logs.backfill`), so the same one pass
(:mod:`streaming.engine.onepass`) serves a live topic and a backfill. Renaming in Spark
instead (:func:`kafka_stream`, which the benchmarks' JVM-only variants use) costs a
projection that copies every key and value once more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from streaming.errors import ConfigError
from streaming.spec.model import Secret, Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


#: the Kafka consumers' longest wait for a fetch (see :func:`kafka_options`)
FETCH_MAX_WAIT_MS = "50"
#: bytes of one partition's fetch, and records of one poll (see :func:`kafka_options`)
FETCH_PARTITION_BYTES = 4 << 20
POLL_RECORDS = 10_000


#: the columns of Spark's Kafka source the pass reads, and their names in the pass (the
#: topic is left out: a query subscribes to one, named by the spec)
KAFKA_COLUMNS = {"key": "_key", "value": "_value", "partition": "_partition",
                 "offset": "_offset", "timestamp": "_source_ts"}


def from_kafka(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of Spark's Kafka source rows as raw records (:data:`KAFKA_COLUMNS`)."""
    return pa.RecordBatch.from_arrays([batch.column(c) for c in KAFKA_COLUMNS],
                                      names=list(KAFKA_COLUMNS.values()))


def kafka_options(spec: Spec) -> dict[str, str]:
    """Options for Spark's Kafka source (secrets revealed only here, never logged)."""
    src = spec.source
    opts = {
        "kafka.bootstrap.servers": src.bootstrap_servers,
        "subscribe": str(src.topic),
        "startingOffsets": src.starting_offsets,
        "failOnDataLoss": "true" if src.fail_on_data_loss else "false",
        "includeHeaders": "false",
        # records of aborted transactions are never counted (and open ones wait)
        "kafka.isolation.level": src.isolation_level,
    }
    # Spark's executors keep their Kafka consumers between batches; one that read to
    # the end of its partition is left with a fetch waiting at the broker, and the next
    # batch's first poll waits for it: up to fetch.max.wait.ms (500 by default) for
    # every batch that starts on a partition read to its end. A batch reads offsets
    # that exist, so a short wait costs nothing. [source.kafka] can set another.
    opts["kafka.fetch.max.wait.ms"] = FETCH_MAX_WAIT_MS
    # A batch reads a known range of offsets: fetched in pieces of 4 MiB a partition
    # (Kafka's default is 1 MiB), the broker answers a quarter of the requests and,
    # measured on 2 cores, spends well under half the CPU serving them. A consumer holds
    # at most one such piece per partition.
    opts["kafka.max.partition.fetch.bytes"] = str(FETCH_PARTITION_BYTES)
    opts["kafka.max.poll.records"] = str(POLL_RECORDS)
    if src.max_offsets_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(src.max_offsets_per_trigger)
    if src.min_partitions:
        opts["minPartitions"] = str(src.min_partitions)
    for key, value in src.kafka_options:
        opts[f"kafka.{key}"] = value.reveal() if isinstance(value, Secret) else value
    return opts


def kafka_records(spark: SparkSession, spec: Spec) -> DataFrame:
    """The Kafka source's rows as Spark gives them: ``key, value, topic, partition,
    offset, timestamp, timestampType``."""
    reader = spark.readStream.format("kafka")
    for k, v in kafka_options(spec).items():
        reader = reader.option(k, v)
    return reader.load()


def kafka_stream(spark: SparkSession, spec: Spec) -> DataFrame:
    """:func:`kafka_records` renamed to the raw-record columns by Spark."""
    from pyspark.sql import functions as F

    df = kafka_records(spark, spec)
    return df.select(
        F.col("key").alias("_key"), F.col("value").alias("_value"),
        F.col("topic").alias("_topic"), F.col("partition").alias("_partition"),
        F.col("offset").alias("_offset"), F.col("timestamp").alias("_source_ts"))


def raw_stream(spark: SparkSession, spec: Spec) -> DataFrame:
    """The streaming source of a Kafka spec, the source's own rows (see the module
    docstring; a files source runs as a backfill instead)."""
    if spec.source.kind != "kafka":
        raise ConfigError("a files source is not a stream: run it as a backfill "
                          "(streaming.logs.backfill, or `streamsketch run` / `replay --backfill`)")
    return kafka_records(spark, spec)

