"""GitHub-shaped events (fields nested in objects) through Kafka, Spark and Delta.

The spec names its fields by path (``actor.login``, ``repo.name``, ``payload.size``,
the time ``payload.created_at``) and one is a list (``payload.labels``, each label
counted by a Count-Min); the events are produced here with kafka-python, and
every number is checked against the test's own count of what it sent: the hourly count
and exact sum per repository (the group column keyed by the path), the distinct actors
within the HyperLogLog's error, and every record either aggregated or quarantined with
its reason and offset (an ``actor`` that is a string, not an object, is ``wrong_type``;
a missing ``actor`` or ``payload.size`` is a null, not an error).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from pipeline_runs import run_spec, send_json

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
N = 3000

SPEC = """\
[source]
topic = "{topic}"
bootstrap_servers = "{bootstrap}"
starting_offsets = "earliest"
max_offsets_per_trigger = 1000

[events]
time_field = "payload.created_at"
watermark = "1 hour"
[events.fields]
"actor.login" = "string"
repo.name = "string"
type = "string"
[events.fields.payload]
size = "long"
labels = "list<string>"

[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["repo.name"]
metrics = ["count", "sum(payload.size)", "max(payload.size)"]
  [[windows.sketches]]
  name = "actors"
  kind = "hll"
  field = "actor.login"
  precision = 12
  [[windows.sketches]]
  name = "labels"
  kind = "cms"
  field = "payload.labels"
  epsilon = 0.001
  delta = 0.01
  top_k = 5

[sink]
path = "{root}/delta"
checkpoint = "{root}/ck"

[metrics]
enabled = false
"""


def _events(seed: int) -> list[tuple[dict | str, str | None]]:
    """(event, the reason it is quarantined or None), in time order over 5 hours."""
    rng = np.random.default_rng(seed)
    out: list[tuple[dict | str, str | None]] = []
    for i in range(N):
        at = START + dt.timedelta(seconds=int(i * 6))
        event: dict = {"type": str(rng.choice(["PushEvent", "IssuesEvent", "WatchEvent"])),
                       "id": str(i),
                       "repo": {"id": int(rng.integers(1000)),
                                "name": f"org/repo{int(rng.integers(12))}"},
                       "payload": {"created_at": at.isoformat().replace("+00:00", "Z"),
                                   "size": int(rng.integers(0, 50)),
                                   "labels": [f"label{int(x)}" for x in
                                              rng.zipf(1.6, size=int(rng.integers(0, 4)))
                                              if x < 30]}}
        roll = rng.random()
        if roll < 0.03:
            event["actor"] = f"user{int(rng.integers(400))}"  # a string: wrong_type
            reason = "wrong_type"
        else:
            reason = None
            if roll > 0.05:  # else: no actor at all (a null login, counted)
                event["actor"] = {"login": f"user{int(rng.integers(400))}", "id": 1}
            if roll > 0.97:
                del event["payload"]["size"]  # a null size: counted, not summed
        out.append((event, reason))
    return out


def test_nested_github_events_are_counted_exactly(kafka, spark, topic_name, tmp_path):
    from pyspark.sql import functions as F

    from streaming.query import questions as q

    events = _events(7)
    send_json(kafka.bootstrap_servers, topic_name,
              ((event, (event["repo"]["name"] if isinstance(event, dict) else "x").encode())
               for event, _ in events))
    root = tmp_path / "job"
    spec = run_spec(spark, kafka.bootstrap_servers, SPEC.format(
        topic=topic_name, bootstrap=kafka.bootstrap_servers, root=root), root)

    # the test's own count of what it sent
    truth_count: Counter = Counter()
    truth_sum: Counter = Counter()
    truth_max: dict = defaultdict(lambda: None)
    actors: set[str] = set()
    labels: Counter = Counter()
    bad = Counter(reason for _, reason in events if reason)
    for event, reason in events:
        if reason:
            continue
        hour = event["payload"]["created_at"][:13]
        cell = (hour, event["repo"]["name"])
        truth_count[cell] += 1
        size = event["payload"].get("size")
        if size is not None:
            truth_sum[cell] += size
            truth_max[cell] = size if truth_max[cell] is None else max(truth_max[cell], size)
        if "actor" in event:
            actors.add(event["actor"]["login"])
        labels.update(event["payload"]["labels"])

    agg = (spark.read.format("delta").load(f"{spec.sink.path}/aggregates")
           .groupBy(F.date_format("window_start", "yyyy-MM-dd'T'HH").alias("hour"),
                    F.col("group")["repo.name"].alias("repo"))
           .agg(F.sum("count").alias("count"), F.sum("sum_payload_size").alias("sum"),
                F.max("max_payload_size").alias("max")).collect())
    assert {(r["hour"], r["repo"]): r["count"] for r in agg} == dict(truth_count)
    assert {(r["hour"], r["repo"]): r["sum"] for r in agg} == \
        {k: decimal.Decimal(v) for k, v in truth_sum.items()}
    assert {(r["hour"], r["repo"]): r["max"] for r in agg if r["max"] is not None} == \
        {k: float(v) for k, v in truth_max.items() if v is not None}

    quarantine = spark.read.format("delta").load(f"{spec.sink.path}/quarantine").collect()
    assert Counter(r["reason"].split(":", 1)[0] for r in quarantine) == bad
    assert all(r["reason"] == "wrong_type: field actor.login: actor is not an object"
               for r in quarantine)
    # every record once: aggregated or quarantined, at an offset of its own
    assert sum(truth_count.values()) + len(quarantine) == N
    assert len({(r["partition"], r["offset"]) for r in quarantine}) == len(quarantine)

    qspec = q.load_query_spec(root / "spec.toml", None, table="sketches")
    question = q.question(qspec, "distinct", window="hourly", start=None, end=None,
                          groups=None, sketch=None, k=10, value=None, vs_start=None,
                          vs_end=None, qs=None)
    answer = q.ask(q.DeltaSource(qspec), qspec, question)
    sigma = 1.04 / 2 ** 6  # precision 12
    assert abs(answer["estimate"] - len(actors)) <= 4 * sigma * len(actors), \
        (answer["estimate"], len(actors))

    # a list field: each label counted once per event that carries it (Count-Min top-k)
    question = q.question(qspec, "topk", window="hourly", start=None, end=None, groups=None,
                          sketch="labels", k=5, value=None, vs_start=None, vs_end=None,
                          qs=None)
    answer = q.ask(q.DeltaSource(qspec), qspec, question)
    assert answer["total"] == sum(labels.values())
    top = [(t["item"], t["count"]) for t in answer["top"]]
    bound = answer["error_bound"]
    assert [item for item, _ in top] == [item for item, _ in labels.most_common(5)] or \
        bound > 0
    for item, count in top:
        assert labels[item] <= count <= labels[item] + bound, (item, count, labels[item])

    # and the group column, through the query API, by the path
    question = q.question(q.load_query_spec(root / "spec.toml", None, table="aggregates"),
                          "aggregate", window="hourly", start=None, end=None,
                          groups=["repo.name=org/repo3"], sketch=None, k=10, value=None,
                          vs_start=None, vs_end=None, qs=None)
    (row,) = q.ask(q.DeltaSource(qspec), qspec, question)["rows"]
    assert row["count"] == sum(v for (_, repo), v in truth_count.items()
                               if repo == "org/repo3")
    assert Path(spec.sink.path).exists()
