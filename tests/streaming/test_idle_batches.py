"""A batch over no Kafka offsets runs no Spark job, yet commits to every table.

An idle topic (or an empty one, as a first ``run --available-now`` meets it) gives
batches whose offset range is empty: they hold no rows, so the pipeline runs neither
the pass nor the merge stage for them, unless the batch compacts the stored files of
windows it closes. The Spark jobs a query ran are the jobs of its job group (its run
id); the same query over one record shows the count can be more than zero. A batch's
expected offsets are known from its first batch on (Spark's ``sources/0/0``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"

[events]
time_field = "ts"
watermark = "1 hour"
[events.fields]
user_id = "string"

[[windows]]
name = "minutely"
size = "1 minute"
metrics = ["count"]
sketches = [{{ kind = "hll", name = "users", field = "user_id" }}]

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
enabled = false
"""


def _spec(root: Path, topic: str, bootstrap: str):
    from streaming.spec.model import load_spec

    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.toml"
    path.write_text(SPEC.format(topic=topic, bootstrap=bootstrap, root=root))
    spec = load_spec(path)
    return replace(spec, source=replace(spec.source, bootstrap_servers=bootstrap))


def _topic(bootstrap: str, topic: str, records: list[dict]) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    if records:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for r in records:
            producer.send(topic, json.dumps(r).encode())
        producer.flush()
        producer.close()


def _run(spark, spec) -> tuple[list, list[int]]:
    """Run the query to the end of the topic; its batch summaries and its jobs' ids."""
    from streaming.engine.pipeline import Pipeline

    summaries: list = []
    pipeline = Pipeline(spark, spec, on_batch=summaries.append)
    query = pipeline.start(available_now=True)
    try:
        query.awaitTermination(300)
    finally:
        pipeline.stop()
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(str(query.runId))
    return summaries, list(jobs)


def _versions(path: str) -> int:
    from deltalake import DeltaTable

    return DeltaTable(path).version()


@pytest.mark.parametrize("records", [0, 1], ids=["empty-topic", "one-record"])
def test_a_batch_over_no_offsets_runs_no_spark_job(kafka, spark, topic_name, tmp_path, records):
    from streaming.engine.tables import table_paths

    at = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
    rows = [{"ts": at.isoformat(), "user_id": f"u{i}"} for i in range(records)]
    _topic(kafka.bootstrap_servers, topic_name, rows)
    spec = _spec(tmp_path / "job", topic_name, kafka.bootstrap_servers)
    summaries, jobs = _run(spark, spec)

    assert [s.batch_id for s in summaries] == [0]
    first = summaries[0]
    assert first.rows == records
    # the first batch's offsets are known (from sources/0/0): all there were, none missing
    assert first.offset_gap == 0
    if records == 0:
        assert jobs == [], f"an empty batch ran Spark jobs {jobs}"
    else:
        assert jobs, "a batch with a record ran no Spark job: the job count is not seen"
    # every table records the batch all the same (an empty commit where nothing changed)
    for name, path in table_paths(spec).all().items():
        assert _versions(path) >= 1, f"{name} has no commit for batch 0"
