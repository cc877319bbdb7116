"""Options of Spark's Kafka source built from a spec."""

from __future__ import annotations

from dataclasses import replace

from streaming.engine.source import FETCH_MAX_WAIT_MS, kafka_options
from streaming.spec.model import Secret, default_spec_path, load_spec


def test_fetch_settings_have_defaults_the_spec_can_override(monkeypatch):
    spec = load_spec(default_spec_path())
    opts = kafka_options(spec)
    assert opts["kafka.fetch.max.wait.ms"] == FETCH_MAX_WAIT_MS
    assert int(FETCH_MAX_WAIT_MS) < 500  # below Kafka's own default, or it is no change
    assert int(opts["kafka.max.partition.fetch.bytes"]) > 1 << 20  # above Kafka's default
    assert int(opts["kafka.max.poll.records"]) > 500
    monkeypatch.setenv("SASL_CONFIG_FOR_TEST", "secret jaas")
    own = replace(spec, source=replace(spec.source, kafka_options=(
        ("fetch.max.wait.ms", "250"), ("max.partition.fetch.bytes", "1048576"),
        ("sasl.jaas.config", Secret("env:SASL_CONFIG_FOR_TEST")))))
    opts = kafka_options(own)
    assert opts["kafka.fetch.max.wait.ms"] == "250"
    assert opts["kafka.max.partition.fetch.bytes"] == "1048576"
    assert opts["kafka.sasl.jaas.config"] == "secret jaas"
    assert opts["subscribe"] == str(spec.source.topic)
