"""The foundation chain: kafka-python -> real broker -> Spark Kafka source -> Delta -> read back."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_kafka_to_spark_to_delta_exactly_n_rows(kafka, spark, topic_name, tmp_path):
    from kafka import KafkaProducer
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    n = 2_500
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all",
                             enable_idempotence=True)
    sent = {}
    for i in range(n):
        record = {"id": i, "name": f"user-{i % 97}", "payload": "é✓" * (i % 3)}
        sent[i] = record
        producer.send(topic_name, key=str(i).encode(), value=json.dumps(record).encode())
    producer.flush()
    producer.close()

    schema = StructType([StructField("id", LongType()), StructField("name", StringType()),
                         StructField("payload", StringType())])
    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
              .option("subscribe", topic_name)
              .option("startingOffsets", "earliest")
              .load())
    parsed = stream.select(F.col("key").cast("string").alias("key"),
                           F.from_json(F.col("value").cast("string"), schema).alias("r"),
                           "partition", "offset").select("key", "r.*", "partition", "offset")
    table = tmp_path / "events"
    query = (parsed.writeStream.format("delta")
             .option("checkpointLocation", str(tmp_path / "checkpoint"))
             .trigger(availableNow=True)
             .start(str(table)))
    query.awaitTermination(timeout=300)
    assert query.exception() is None

    rows = spark.read.format("delta").load(str(table)).collect()
    assert len(rows) == n
    got = {r["id"]: {"id": r["id"], "name": r["name"], "payload": r["payload"]} for r in rows}
    assert got == sent
    assert all(r["key"] == str(r["id"]) for r in rows)
    # (partition, offset) identify each record once: no duplicates
    assert len({(r["partition"], r["offset"]) for r in rows}) == n
