"""Options of Spark's Kafka source built from a spec."""

from __future__ import annotations

from dataclasses import replace

from streaming.engine.source import FETCH_MAX_WAIT_MS, kafka_options
from streaming.spec.model import Secret, default_spec_path, load_spec


def test_the_fetch_wait_is_short_by_default_and_the_spec_can_set_another(monkeypatch):
    spec = load_spec(default_spec_path())
    opts = kafka_options(spec)
    assert opts["kafka.fetch.max.wait.ms"] == FETCH_MAX_WAIT_MS
    assert int(FETCH_MAX_WAIT_MS) < 500  # below Kafka's own default, or it is no change
    monkeypatch.setenv("SASL_CONFIG_FOR_TEST", "secret jaas")
    own = replace(spec, source=replace(spec.source, kafka_options=(
        ("fetch.max.wait.ms", "250"),
        ("sasl.jaas.config", Secret("env:SASL_CONFIG_FOR_TEST")))))
    opts = kafka_options(own)
    assert opts["kafka.fetch.max.wait.ms"] == "250"
    assert opts["kafka.sasl.jaas.config"] == "secret jaas"
    assert opts["subscribe"] == str(spec.source.topic)
