"""The merge stage's tasks on real Spark: which task a cell goes to, and files a task
reads itself.

A file written by merge task p of n holds only cells Spark's shuffle sends to task p,
so a later batch with n tasks lets task p read it instead of shuffling its rows. That
rests on :func:`spark_hash` being Spark's own hash, on the marker rows reaching the
task they name, and on a change of n (another machine, another cluster size) sending
the files through the shuffle again: each is checked here against Spark itself.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter

import pytest

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)

SPEC = """
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = 400

[events]
time_field = "ts"
watermark = "10 seconds"
[events.fields]
user_id = "string"
page = "string"
amount = "double"

[[windows]]
name = "by_page"
size = "1 minute"
group_by = ["page"]
metrics = ["count", "sum(amount)"]

  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 12

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
enabled = false
"""


def test_spark_hash_is_the_hash_spark_partitions_by(spark):
    from streaming.engine.stored_cells import spark_hash

    rnd = random.Random(3)
    alphabet = "ab€日é\"\\ 0"
    keys = ["", "a", "ab", "abc", "abcd", "abcde"] + [
        "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12))) for _ in range(300)]
    rows = [(rnd.randrange(-3, 5), rnd.randrange(-2**62, 2**62), k) for k in keys]
    df = spark.createDataFrame(rows, "w INT, ws BIGINT, g STRING")
    got = df.selectExpr("w", "ws", "g", "hash(w, ws, g) AS h").collect()
    assert len(got) == len(rows)
    assert [(r["w"], r["ws"], r["g"], r["h"]) for r in got] == [
        (r["w"], r["ws"], r["g"], spark_hash(r["w"], r["ws"], r["g"])) for r in got]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_each_marker_reaches_the_task_it_names(spark, n):
    from streaming.engine.onepass import PASS_DDL
    from streaming.engine.stored_cells import marker_frame

    def where(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        offs = [o for b in batches for o in b.column("off").to_pylist()]
        task = TaskContext.get().partitionId()
        yield pa.RecordBatch.from_pydict({"task": pa.array([task] * len(offs), pa.int32()),
                                          "off": pa.array(offs, pa.int64())})

    markers = marker_frame(spark, n)
    # the same columns and types as the pass's rows (what the shuffle hashes)
    assert ([(f.name, f.dataType) for f in markers.schema]
            == [(f.name, f.dataType) for f in spark.createDataFrame([], PASS_DDL).schema])
    placed = (markers.repartition(n, "w", "ws", "g")
              .mapInArrow(where, "task INT, off BIGINT").collect())
    assert sorted((r["task"], r["off"]) for r in placed) == [(p, p) for p in range(n)]


def test_a_change_in_the_number_of_merge_tasks_loses_and_doubles_nothing(
        kafka, spark, topic_name, tmp_path, monkeypatch):
    from streaming.engine.pipeline import Pipeline
    from streaming.engine.tables import read_table
    from streaming.kafka.generator import GeneratorConfig, generate
    from streaming.kafka.producer import produce
    from streaming.spec.model import parse_spec

    spec = parse_spec(SPEC.format(topic=topic_name, bootstrap=kafka.bootstrap_servers,
                                  root=tmp_path))
    halves = [GeneratorConfig(seed=seed, rate=20.0, start_time=START + dt.timedelta(seconds=s),
                              users=500, pages=40, out_of_order=0.0, late=0.0, malformed=0.0)
              for seed, s in ((1, 0), (2, 75))]
    truth: Counter = Counter()
    names: dict[int, list[str]] = {}
    for tasks, cfg in zip((2, 3), halves, strict=True):
        for rec in generate(cfg, 1_500):
            t = dt.datetime.fromisoformat(rec.event["ts"].replace("Z", "+00:00"))
            truth[(int(t.timestamp()) // 60 * 60, rec.event["page"])] += 1
        produce(kafka.bootstrap_servers, topic_name, cfg, count=1_500, partitions=2)
        monkeypatch.setattr(Pipeline, "merge_partitions", lambda self, n=tasks: n)
        pipeline = Pipeline(spark, spec)
        pipeline.run(available_now=True, timeout=600)
        assert pipeline.query.exception() is None
        names[tasks] = sorted(p.name for p in (tmp_path / "delta").rglob("*.parquet"))
    # both runs wrote files tagged with their own number of tasks
    assert any("of2-" in n for n in names[2])
    assert any("of3-" in n for n in names[3] if n not in names[2])
    rows = read_table(str(tmp_path / "delta" / "aggregates"))
    got = Counter({(int(ws.timestamp()), json.loads(k)[0]): c for ws, k, c in zip(
        rows.column("window_start").to_pylist(), rows.column("group_key").to_pylist(),
        rows.column("count").to_pylist(), strict=True)})
    assert got == truth
    # one final row per closed cell, nothing left over from the other bucketing
    raw = read_table(str(tmp_path / "delta" / "sketches"), raw=True)
    final = [(ws, k) for ws, k, f in zip(raw.column("window_start").to_pylist(),
                                          raw.column("group_key").to_pylist(),
                                          raw.column("final").to_pylist(), strict=True) if f]
    assert final and len(final) == len(set(final))
