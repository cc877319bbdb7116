"""Transactions: records of an aborted Kafka transaction are never counted, committed ones
are, exactly once (real broker, real Spark, real Delta)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytestmark = pytest.mark.integration


def _event(i: int, user: str) -> bytes:
    return json.dumps({"ts": f"2026-11-20T08:{i // 60 % 60:02d}:{i % 60:02d}Z",
                       "user_id": user, "page": "/p", "amount": None,
                       "country": "DE"}).encode()


def test_aborted_transactions_are_never_counted(kafka, spark, topic_name, tmp_path):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from streaming.engine.pipeline import Pipeline
    from streaming.engine.tables import read_table
    from streaming.spec.model import default_spec_path, load_spec

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    admin.create_topics([NewTopic(topic_name, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                             transactional_id=f"{topic_name}-tx")
    producer.init_transactions()
    for round_no, commit in enumerate((True, False, True, False, True)):
        producer.begin_transaction()
        user = "kept" if commit else "aborted"
        for i in range(100):
            producer.send(topic_name, _event(round_no * 100 + i, user))
        producer.flush()
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
    producer.close()

    spec = load_spec(default_spec_path())
    spec = replace(spec, source=replace(spec.source, topic=topic_name,
                                        bootstrap_servers=kafka.bootstrap_servers),
                   sink=replace(spec.sink, path=str(tmp_path / "delta"),
                                checkpoint=str(tmp_path / "ck")))
    batches: list = []
    Pipeline(spark, spec, on_batch=batches.append).run(available_now=True, timeout=300)
    assert sum(b.rows for b in batches) == 300
    rows = read_table(str(tmp_path / "delta" / "aggregates"), "window_name = 'minutely'")
    assert sum(rows.column("count").to_pylist()) == 300
    sketches_rows = read_table(str(tmp_path / "delta" / "sketches"),
                               "window_name = 'minutely' AND sketch_name = 'seen_users'")
    import sketches

    for blob in sketches_rows.column("bytes").to_pylist():
        bloom = sketches.from_bytes(blob)
        assert not bloom.contains(["aborted"])[0]
    # a second run on the same checkpoint reads nothing again
    more: list = []
    Pipeline(spark, spec, on_batch=more.append).run(available_now=True, timeout=300)
    assert sum(b.rows for b in more) == 0
