"""The way back for tables behind their checkpoint: write the missing batches again.

Every table row knows its batch, and the checkpoint knows every batch exactly: Spark's
offset log holds each batch's end offsets (and ``sources/0/0`` the first batch's start),
the watermark log its watermark and its time. So the batches a table lacks can be
written again as they first ran, with the same records, watermark and time, and so
the same late decisions and bytes: :func:`recover_kafka` reads each one's offset range
from Kafka with Spark's batch reader and runs it through the pipeline's own batch code
(:meth:`Pipeline.process_frame`); a table that already holds a batch is left out of it.

A backfill keeps the plan of every batch (:mod:`streaming.logs.backfill`):
:func:`rewind_backfill` removes the completions of the batches the tables lack, and the
next backfill runs them again exactly as planned.

What cannot be written again is refused, naming why, before anything is written: a
batch whose offsets or watermark the checkpoint no longer keeps (Spark and the
watermark log keep the last 100 batches), or records the topic no longer holds
(retention passed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streaming.engine.agreement import table_batches
from streaming.engine.checkpoint import batch_meta, start_offsets
from streaming.engine.table_files import fsync_path
from streaming.errors import CheckpointError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streaming.engine.pipeline import Pipeline

Offsets = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Recovery:
    """The batches to write again: ``first`` .. ``last`` (none when first > last)."""

    held: dict[str, int]
    first: int
    last: int

    @property
    def batches(self) -> range:
        return range(self.first, self.last + 1)


def plan_recovery(pipeline: Pipeline, committed: int) -> Recovery:
    """What a prepared (``recovering``) pipeline's tables lack of ``committed`` batches."""
    assert pipeline.tables is not None
    held = table_batches(pipeline.tables.all(), pipeline.app_id)
    return Recovery(held, min(held.values()) + 1, committed)


def batch_ranges(pipeline: Pipeline, recovery: Recovery) -> list[tuple[int, Offsets, Offsets]]:
    """Each batch's (id, start offsets, end offsets), checked to be known, with its watermark."""
    assert pipeline.checkpoint is not None and pipeline.watermarks is not None
    query_dir = pipeline.checkpoint.query_dir
    out = []
    for b in recovery.batches:
        try:
            start = (start_offsets(query_dir) if b == 0
                     else batch_meta(query_dir, b - 1).end_offsets)
            end = batch_meta(query_dir, b).end_offsets
        except CheckpointError as exc:
            raise CheckpointError(f"batch {b} cannot be written again: {exc} (Spark keeps the "
                                  "offsets of the last 100 batches)") from None
        if start is None or end is None:
            raise CheckpointError(f"the offset log of batch {b} holds no Kafka offsets")
        if not pipeline.watermarks.recorded(b):
            raise CheckpointError(
                f"batch {b} cannot be written again: the checkpoint no longer keeps its "
                "watermark (the watermark log keeps the last 100 batches)")
        for topic, parts in end.items():
            for part, offset in parts.items():
                if offset < start.get(topic, {}).get(part, 0):
                    raise CheckpointError(
                        f"batch {b}: partition {part} of {topic} went back from offset "
                        f"{start[topic][part]} to {offset} (the topic was recreated); its "
                        "records cannot be read again")
        out.append((b, start, end))
    return out


def earliest_offsets(spark: SparkSession, options: dict[str, str],
                     topic: str, partitions: list[int]) -> dict[int, int]:
    """The first offset the topic still holds, per partition, asked with the Kafka client
    Spark itself uses (the spec's ``[source.kafka]`` settings apply as they do there)."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    props = jvm.java.util.Properties()
    for key, value in options.items():
        if key.startswith("kafka."):
            props.setProperty(key[len("kafka."):], value)
    deser = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
    props.setProperty("key.deserializer", deser)
    props.setProperty("value.deserializer", deser)
    props.setProperty("enable.auto.commit", "false")
    consumer = jvm.org.apache.kafka.clients.consumer.KafkaConsumer(props)
    try:
        tps = jvm.java.util.ArrayList()
        for p in partitions:
            tps.add(jvm.org.apache.kafka.common.TopicPartition(topic, p))
        found = consumer.beginningOffsets(tps)
        return {int(tp.partition()): int(found.get(tp)) for tp in found.keySet()}
    finally:
        consumer.close()


def check_retained(spark: SparkSession, options: dict[str, str],
                   ranges: list[tuple[int, Offsets, Offsets]]) -> None:
    """Refuse when the topic no longer holds a record a batch to write again needs."""
    needed: dict[tuple[str, int], tuple[int, int]] = {}
    for b, start, end in ranges:
        for topic, parts in end.items():
            for part, offset in parts.items():
                first = start.get(topic, {}).get(part, 0)
                if offset > first and (topic, int(part)) not in needed:
                    needed[(topic, int(part))] = (first, b)
    for topic in sorted({t for t, _ in needed}):
        parts = sorted(p for t, p in needed if t == topic)
        earliest = earliest_offsets(spark, options, topic, parts)
        for p in parts:
            first, b = needed[(topic, p)]
            if earliest.get(p, 0) > first:
                raise CheckpointError(
                    f"partition {p} of topic {topic} now starts at offset {earliest[p]}, but "
                    f"batch {b} needs its records from offset {first}: Kafka no longer holds "
                    "them (retention passed), so the tables cannot be brought back to the "
                    "checkpoint. Restore tables that hold a later batch, or delete both "
                    "(tables and checkpoint) to start fresh")


def recover_kafka(spark: SparkSession, pipeline: Pipeline, recovery: Recovery) -> None:
    """Write the batches ``recovery`` names again from Kafka, as they first ran."""
    from streaming.engine.source import kafka_options

    ranges = batch_ranges(pipeline, recovery)
    options = {k: v for k, v in kafka_options(pipeline.spec).items()
               if k not in ("subscribe", "startingOffsets", "maxOffsetsPerTrigger")}
    check_retained(spark, options, ranges)
    for b, start, end in ranges:
        assign = {t: sorted(int(p) for p in parts) for t, parts in end.items()}
        begin = {t: {p: start.get(t, {}).get(p, -2) for p in parts} for t, parts in end.items()}
        reader = spark.read.format("kafka")
        for k, v in options.items():
            reader = reader.option(k, v)
        df = (reader.option("assign", json.dumps(assign))
              .option("startingOffsets", json.dumps(begin))
              .option("endingOffsets", json.dumps(end)).load())
        pipeline.process_frame(df, b)


def rewind_backfill(pipeline: Pipeline, recovery: Recovery) -> None:
    """Make the next backfill run the batches ``recovery`` names again, as planned."""
    assert pipeline.checkpoint is not None and pipeline.watermarks is not None
    folder = pipeline.checkpoint.root / "backfill"
    for b in recovery.batches:
        if not pipeline.watermarks.recorded(b):
            raise CheckpointError(
                f"backfill batch {b} cannot be run again: the checkpoint no longer keeps its "
                "watermark (the watermark log keeps the last 100 batches)")
        if not (folder / f"plan-{b}.json").exists():
            raise CheckpointError(f"the backfill journal no longer holds the plan of batch "
                                  f"{b}; it cannot be run again as it first ran")
    for b in reversed(recovery.batches):
        (folder / f"done-{b}.json").unlink(missing_ok=True)
    fsync_path(str(folder))
