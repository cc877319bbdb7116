"""Sketches other engines read: DataSketches-format HLL and Theta through the pipeline,
then read and merged by Spark SQL (its own DataSketches functions), and Spark-built
sketches merged by our ``query``.

Events go through Kafka, Spark and Delta like any others; then, in the same Spark session:

- ``hll_sketch_agg`` / ``theta_sketch_agg`` over the very events the test sent, per hour
  and country, fill the same registers / hold the same hashes as our stored rows;
- ``hll_sketch_estimate``, ``hll_union_agg``, ``theta_sketch_estimate``,
  ``theta_union_agg``, ``theta_intersection`` and ``theta_difference`` over our bytes
  give what they give over Spark's own sketches;
- our ``query distinct`` and ``query overlap`` answer within their bounds of the exact
  sets, and merge Spark-built bytes as they merge ours.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from pipeline_runs import run_spec, send_json

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
N = 6000
HOURS = 4

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = 2500

[events]
time_field = "ts"
watermark = "1 minute"
[events.fields]
user = "string"
session = "long"
country = "string"

[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["country"]
metrics = ["count"]
  [[windows.sketches]]
  name = "users"
  kind = "hll"
  format = "datasketches"
  field = "user"
  [[windows.sketches]]
  name = "sessions"
  kind = "hll"
  format = "datasketches"
  field = "session"
  precision = 10
  [[windows.sketches]]
  name = "user_sets"
  kind = "theta"
  field = "user"
  lg_k = 9

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
enabled = false
"""


def _events(seed: int) -> list[dict]:
    """Users drift over the hours (so hours overlap in part); few in "is", many in "us"."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        at = START + dt.timedelta(seconds=int(i * HOURS * 3600 / N))
        hour = i * HOURS // N
        country = "is" if rng.random() < 0.02 else str(rng.choice(["us", "de"]))
        out.append({"user": f"u{int(rng.integers(hour * 700, hour * 700 + 1500))}",
                    "session": int(rng.integers(-2**40, 2**40)), "country": country,
                    "ts": at.isoformat().replace("+00:00", "Z")})
    return out


def _doc_sql() -> list[str]:
    """The SQL blocks of docs/query.md's section on Spark SQL, as written there."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "query.md").read_text()
    section = text.split("## Sketch columns in Spark SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def _hour(event: dict) -> str:
    return event["ts"][:13]


def test_spark_sql_reads_and_merges_our_sketches_and_we_merge_its(kafka, spark, topic_name,
                                                                 tmp_path):
    import datasketches as ds
    from pyspark.sql import functions as F

    import sketches
    from streaming.query import questions as q

    events = _events(11)
    send_json(kafka.bootstrap_servers, topic_name,
              ((event, event["user"].encode()) for event in events))
    root = tmp_path / "job"
    spec = run_spec(spark, kafka.bootstrap_servers, SPEC.format(
        topic=topic_name, bootstrap=kafka.bootstrap_servers, root=root), root)

    # the events the test sent, as a DataFrame, and Spark's own sketches of them
    raw = spark.createDataFrame(
        [(e["user"], e["session"], e["country"], _hour(e)) for e in events],
        "user string, session bigint, country string, hour string")
    theirs = {(r["hour"], r["country"]): r for r in raw.groupBy("hour", "country").agg(
        F.hll_sketch_agg("user", 12).alias("users"),
        F.hll_sketch_agg("session", 10).alias("sessions"),
        F.theta_sketch_agg("user", 9).alias("user_sets")).collect()}
    stored = spark.read.format("delta").load(f"{spec.sink.path}/sketches").where("final")
    stored = stored.withColumn("hour", F.date_format("window_start", "yyyy-MM-dd'T'HH"))
    ours = {(r["hour"], r["group"]["country"], r["sketch_name"]): bytes(r["bytes"])
            for r in stored.collect()}
    # the last hour is still open (the watermark has not passed its end): its rows are
    # partial, one per batch; the closed hours are one final row per cell and sketch
    last = max(h for h, _ in theirs)
    theirs = {key: row for key, row in theirs.items() if key[0] != last}
    assert {(h, c) for h, c, _ in ours} == set(theirs)
    assert len(ours) == 3 * len(theirs) == 3 * 3 * (HOURS - 1)

    for (hour, country), row in theirs.items():
        for name in ("users", "sessions"):
            mine = sketches.from_bytes(ours[hour, country, name])
            spark_built = sketches.from_bytes(bytes(row[name]))
            assert np.array_equal(mine.registers(), spark_built.registers()), (hour, name)
            # a Spark-built sketch merged with ours is ours (registers, or coupons, equal)
            assert sketches.union(mine, spark_built) == mine
        truth = {e["user"] for e in events if _hour(e) == hour and e["country"] == country}
        mine_t = sketches.from_bytes(ours[hour, country, "user_sets"])
        spark_t = sketches.from_bytes(bytes(row["user_sets"]))
        assert sketches.union(mine_t, spark_t) == mine_t
        assert mine_t.lower_bound(2) <= len(truth) <= mine_t.upper_bound(2)
        # datasketches reads our bytes
        assert ds.compact_theta_sketch.deserialize(ours[hour, country, "user_sets"]) \
            .get_estimate() == pytest.approx(mine_t.estimate())

    # Spark SQL estimates our bytes as it estimates its own
    spark.createDataFrame([(h, c, n, b) for (h, c, n), b in ours.items()],
                          "hour string, country string, name string, bytes binary") \
        .createOrReplaceTempView("ours")
    raw.createOrReplaceTempView("raw")
    per_cell = spark.sql("""
        SELECT o.hour, o.country, hll_sketch_estimate(o.bytes) AS est
        FROM ours o WHERE o.name = 'users'""").collect()
    assert len(per_cell) == len(theirs)
    for r in per_cell:
        image = ours[r["hour"], r["country"], "users"]
        assert r["est"] == round(ds.hll_sketch.deserialize(image).get_estimate())
    union_ours = spark.sql("SELECT hll_sketch_estimate(hll_union_agg(bytes)) AS e FROM ours "
                           "WHERE name = 'users'").first()["e"]
    union_theirs = spark.sql("SELECT hll_sketch_estimate(hll_union_agg(s)) AS e FROM (SELECT "
                             f"hll_sketch_agg(user, 12) AS s FROM raw WHERE hour != '{last}' "
                             "GROUP BY hour, country)").first()["e"]
    assert union_ours == union_theirs
    users = {e["user"] for e in events if _hour(e) != last}
    assert abs(union_ours / len(users) - 1) < 4 * 1.04 / 64

    # set algebra in Spark SQL over our Theta bytes: hours 0 and 1 of "us"
    h0, h1 = sorted({h for h, _ in theirs})[:2]
    a = {e["user"] for e in events if _hour(e) == h0 and e["country"] == "us"}
    b = {e["user"] for e in events if _hour(e) == h1 and e["country"] == "us"}
    got = spark.sql(f"""
        SELECT theta_sketch_estimate(theta_intersection(x.bytes, y.bytes)) AS both,
               theta_sketch_estimate(theta_difference(x.bytes, y.bytes)) AS a_only,
               theta_sketch_estimate(theta_union(x.bytes, y.bytes)) AS either
        FROM ours x JOIN ours y
        WHERE x.name = 'user_sets' AND y.name = 'user_sets' AND x.country = 'us'
          AND y.country = 'us' AND x.hour = '{h0}' AND y.hour = '{h1}'""").first()
    ta = sketches.from_bytes(ours[h0, "us", "user_sets"])
    tb = sketches.from_bytes(ours[h1, "us", "user_sets"])
    from sketches.theta import theta_difference, theta_intersection
    # (Spark's estimates are rounded to whole numbers)
    assert got["both"] == round(theta_intersection(ta, tb).estimate())
    assert got["a_only"] == round(theta_difference(ta, tb).estimate())
    assert got["either"] == round(sketches.union(ta, tb).estimate())

    # the docs' SQL, as written, over the table: Spark's answers from Spark's own sketches
    spark.read.format("delta").load(f"{spec.sink.path}/sketches") \
        .createOrReplaceTempView("sketches")
    per_hour_sql, returning_sql = _doc_sql()
    per_hour = {r["window_start"].strftime("%Y-%m-%dT%H"): r["users"]
                for r in spark.sql(per_hour_sql).collect()}
    built = {r["hour"]: r["e"] for r in spark.sql(
        "SELECT hour, hll_sketch_estimate(hll_union_agg(s)) AS e FROM (SELECT hour, "
        "hll_sketch_agg(user, 12) AS s FROM raw GROUP BY hour, country) GROUP BY hour"
    ).collect()}
    assert per_hour == built and len(per_hour) == HOURS
    returning = {r["window_start"].strftime("%Y-%m-%dT%H"): r["returning"]
                 for r in spark.sql(returning_sql).collect()}
    by_hour: dict[str, object] = {}  # every row: final ones and the open hour's partial ones
    for r in spark.read.format("delta").load(f"{spec.sink.path}/sketches") \
            .where("sketch_name = 'user_sets'").collect():
        hour = r["window_start"].strftime("%Y-%m-%dT%H")
        one = sketches.ThetaSketch.from_bytes(bytes(r["bytes"]), lg_k=12)
        by_hour[hour] = one if hour not in by_hour else by_hour[hour].merge(one)
    assert len(returning) == HOURS - 1
    hours = sorted(by_hour)
    for before, hour in zip(hours, hours[1:], strict=False):
        want = theta_intersection(by_hour[before], by_hour[hour]).estimate()
        assert returning[hour] == round(want), hour

    # our query: distinct within bounds; overlap of the two hours within bounds
    qspec = q.load_query_spec(root / "spec.toml", None, table="sketches")
    answer = q.ask(q.DeltaSource(qspec), qspec, q.question(
        qspec, "distinct", window="hourly", start=None, end=None, sketch="users"))
    everyone = {e["user"] for e in events}  # open hour included: query merges its rows
    assert answer["lower_bound"] <= len(everyone) <= answer["upper_bound"]
    start0 = dt.datetime.fromisoformat(h0 + ":00+00:00")
    answer = q.ask(q.DeltaSource(qspec), qspec, q.question(
        qspec, "overlap", window="hourly", groups=["country=us"],
        start=start0.isoformat(), end=(start0 + dt.timedelta(hours=1)).isoformat(),
        vs_start=(start0 + dt.timedelta(hours=1)).isoformat(),
        vs_end=(start0 + dt.timedelta(hours=2)).isoformat()))
    exact = {"a": a, "b": b, "union": a | b, "intersection": a & b, "a_not_b": a - b,
             "b_not_a": b - a}
    for key, values in exact.items():
        assert answer[key]["lower_bound"] <= len(values) <= answer[key]["upper_bound"], key
    assert round(answer["intersection"]["estimate"]) == got["both"]
