"""Shared fixtures: a real Kafka broker and a real Spark session.

Kafka comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; testcontainers'
Kafka if a Docker engine answers; else the embedded local broker run from its
Maven Central jars. The chosen path is printed in the pytest header.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class KafkaEndpoint:
    bootstrap_servers: str
    source: str  # "env", "testcontainers" or "local-broker"


def docker_engine_answers() -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, and why not when it doesn't."""
    try:
        import docker
    except ImportError:
        return False, "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        return True, "docker engine answered"
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        return False, f"no Docker engine answers ({type(exc).__name__})"


def _kafka_plan() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return f"env (KAFKA_BOOTSTRAP_SERVERS={os.environ['KAFKA_BOOTSTRAP_SERVERS']})"
    ok, why = docker_engine_answers()
    if ok:
        return "testcontainers Kafka (Docker engine answered)"
    return f"local KRaft broker from Maven Central jars ({why})"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"kafka: {_kafka_plan()}"]


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaEndpoint]:
    """A real Kafka broker for the whole test session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield KafkaEndpoint(env, "env")
        return
    ok, _ = docker_engine_answers()
    if ok:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield KafkaEndpoint(container.get_bootstrap_server(), "testcontainers")
        return
    from streaming.kafka.broker import LocalKafka, free_port

    home = Path(tempfile.mkdtemp(prefix="streamsketch-test-kafka-"))
    broker = LocalKafka(home, port=free_port())
    broker.start(timeout=120)
    try:
        yield KafkaEndpoint(broker.bootstrap_servers, "local-broker")
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session (Delta + Kafka connector) for the test session."""
    from streaming.runtime.session import SparkOptions, build_session

    session = build_session(SparkOptions(master="local[2]", app_name="streamsketch-tests",
                                         shuffle_partitions=2, driver_memory="2g"))
    yield session
    session.stop()


_topic_counter = 0


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A fresh topic name per test."""
    global _topic_counter
    _topic_counter += 1
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"t{os.getpid()}-{_topic_counter}-{base}"
