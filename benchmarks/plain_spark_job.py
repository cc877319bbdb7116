"""The high-cardinality job of :mod:`benchmarks.bench_cardinality`, written plainly in Spark.

``from_json`` with the events' schema -> ``withWatermark`` -> ``groupBy(window, key)
.agg(count, sum, approx_count_distinct)`` -> a delta-spark sink, one query per window
(per user, per page), ``availableNow`` with the same ``maxOffsetsPerTrigger``. The
session is the project's own (same jars, same local master), so the comparison is of
the job, not of the setup.
"""

from __future__ import annotations

import argparse


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--per-trigger", type=int, default=200_000)
    args = ap.parse_args()

    from pyspark.sql import functions as F

    from streaming.runtime.session import SparkOptions, build_session

    spark = build_session(SparkOptions(app_name="plain-spark-job"))
    schema = ("user_id STRING, session_id STRING, page STRING, action STRING, "
              "amount DOUBLE, country STRING, device STRING, ts TIMESTAMP")
    events = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", args.bootstrap)
              .option("subscribe", args.topic).option("startingOffsets", "earliest")
              .option("maxOffsetsPerTrigger", args.per_trigger).load()
              .select(F.from_json(F.col("value").cast("string"), schema).alias("e"))
              .select("e.*").withWatermark("ts", "2 minutes"))
    queries = []
    for name, key, distinct in (("by_user", "user_id", "page"), ("by_page", "page", "user_id")):
        agg = (events.groupBy(F.window("ts", "5 minutes"), key)
               .agg(F.count(F.lit(1)).alias("count"), F.sum("amount").alias("sum_amount"),
                    F.approx_count_distinct(distinct).alias(f"distinct_{distinct}")))
        queries.append(agg.writeStream.format("delta").outputMode("append")
                       .option("checkpointLocation", f"{args.root}/ck/{name}")
                       .trigger(availableNow=True).start(f"{args.root}/delta/{name}"))
    for q in queries:
        q.awaitTermination()
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
