"""The other engine design :mod:`benchmarks.bench_cardinality` measures: Spark's own state.

Design (b) of engine v3: window state kept in Spark's state store (RocksDB, on the
executors), one Python state per (window, group) with ``applyInPandasWithState``: the
events of a batch are parsed by Spark (``from_json``), grouped by (window start, key), and
each group's function adds them to its state (count, exact sum, a ``sketches``
HyperLogLog) and emits the updated row. Rows go to the ``noop`` sink: this measures the
state handling alone, not a Delta sink (it would only add to it).
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

    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    from streaming.runtime.session import SparkOptions, build_session

    spark = build_session(SparkOptions(app_name="statestore-job"))
    schema = ("user_id STRING, session_id STRING, page STRING, action STRING, "
              "amount DOUBLE, country STRING, device STRING, ts TIMESTAMP")
    events = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", args.bootstrap)
              .option("subscribe", args.topic).option("startingOffsets", "earliest")
              .option("maxOffsetsPerTrigger", args.per_trigger).load()
              .select(F.from_json(F.col("value").cast("string"), schema).alias("e"))
              .select("e.*")
              .withColumn("ws", F.window("ts", "5 minutes").start))

    def update(key, frames, state):
        import sketches

        count, total, hll = (state.get if state.exists else (0, 0.0, None))
        sketch = (sketches.HyperLogLog(precision=12) if hll is None
                  else sketches.from_bytes(bytes(hll)))
        for frame in frames:
            count += len(frame)
            total += float(frame["amount"].fillna(0).sum())
            sketch.update(frame["other"].dropna().to_numpy())
        state.update((count, total, sketch.to_bytes()))
        yield pd.DataFrame({"ws": [key[0]], "key": [key[1]], "count": [count],
                            "sum_amount": [total], "distinct": [sketch.estimate()]})

    queries = []
    for name, key, other in (("by_user", "user_id", "page"), ("by_page", "page", "user_id")):
        grouped = (events.select("ws", F.col(key).alias("key"), "amount",
                                 F.col(other).alias("other"))
                   .groupBy("ws", "key"))
        out = grouped.applyInPandasWithState(
            update, "ws TIMESTAMP, key STRING, count LONG, sum_amount DOUBLE, distinct DOUBLE",
            "count LONG, total DOUBLE, hll BINARY", "Update", GroupStateTimeout.NoTimeout)
        queries.append(out.writeStream.format("noop").outputMode("update")
                       .option("checkpointLocation", f"{args.root}/ck/{name}")
                       .trigger(availableNow=True).start())
    for q in queries:
        q.awaitTermination()
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
