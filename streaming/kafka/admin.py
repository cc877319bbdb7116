"""Kafka clients and topics: settings, connection errors, topic creation.

What the producers (:mod:`streaming.kafka.producer`, the log replay) and the
log recorder share about talking to a broker.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from streaming.errors import BrokerError, ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

Compression = Literal["auto", "none", "gzip", "lz4", "zstd", "snappy"]
#: what Kafka accepts as a topic name
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def kafka_clients() -> tuple[Any, Any, Any]:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.partitioner import DefaultPartitioner

    class KeyCachePartitioner(DefaultPartitioner):
        """The default (Java-compatible murmur2) partitioner, remembering each key's hash."""

        def __init__(self) -> None:
            self._hashes: dict[bytes, int] = {}

        def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
            h = self._hashes.get(serialized_key) if serialized_key is not None else None
            if h is None:
                if serialized_key is None or len(self._hashes) > 1_000_000:
                    return super().partition(topic, key, serialized_key, value,
                                             serialized_value, cluster)
                from kafka.partitioner.default import murmur2

                h = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
            # A topic's partitions are 0..n-1, so this is DefaultPartitioner's choice.
            return h % len(cluster.partitions_for_topic(topic))

    return KafkaAdminClient, KafkaProducer, KeyCachePartitioner


def producer_settings(compression: Compression = "auto") -> dict[str, Any]:
    """The KafkaProducer settings :func:`produce` uses: idempotent, acks=all, batched.

    ``"auto"`` compression is lz4 when its package is installed. Otherwise it
    is gzip while kafka-python checksums batches (CRC-32C) in pure Python,
    i.e. without the ``crc32c`` package: the checksum then costs more per byte
    than gzip, so shrinking batches ~5x first is faster end to end (see
    ``benchmarks/bench_produce.py``). With a C checksum it is no compression.
    """
    if compression == "auto":
        from kafka.codec import has_lz4
        from kafka.record import util

        if has_lz4():
            compression = "lz4"
        else:
            compression = "none" if getattr(util, "crc32c_c", None) is not None else "gzip"
    return {
        "enable_idempotence": True,   # retries neither duplicate nor reorder records
        "acks": "all",
        "retries": 2**31 - 1,         # bounded by delivery_timeout_ms instead
        "max_in_flight_requests_per_connection": 5,  # the most idempotence allows
        "delivery_timeout_ms": 120_000,
        "linger_ms": 20,              # fuller batches; at most 20 ms added latency
        # a partition has one batch in flight at a time (batch_producer.py), so the batch
        # sets the bytes per broker round trip: 1 MB, just under Kafka's default largest
        # batch (message.max.bytes, 1 MiB + 12; a smaller one splits batches, see
        # BatchProducer._split). 256 KiB sent 295k events/s here, 1 MB 393k
        "batch_size": 1_000_000,
        "compression_type": None if compression == "none" else compression,
    }


def connect_error(bootstrap_servers: str, timeout: float, exc: BaseException) -> ConfigError:
    return ConfigError(f"cannot reach Kafka at {bootstrap_servers} within {timeout:g} s "
                       f"({type(exc).__name__}); is the broker running "
                       "(`streamsketch kafka start`)?")


def ensure_topic(admin_cls: Any, bootstrap_servers: str, topic: str, partitions: int,
                  timeout: float) -> int:
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = admin_cls(bootstrap_servers=bootstrap_servers, client_id="streamsketch-produce",
                          bootstrap_timeout_ms=int(timeout * 1000),
                          request_timeout_ms=int(timeout * 1000))
    except (KafkaError, OSError) as exc:
        raise connect_error(bootstrap_servers, timeout, exc) from None
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics({topic: {"num_partitions": partitions}},
                                    timeout_ms=int(timeout * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics([topic])
        return len(described[0]["partitions"]) if described else partitions
    except KafkaError as exc:
        raise BrokerError(f"cannot create topic {topic!r} at {bootstrap_servers}: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        admin.close()


def open_consumer(bootstrap_servers: str, timeout: float) -> Any:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, client_id="streamsketch-replay",
                             allow_auto_create_topics=False,
                             bootstrap_timeout_ms=int(timeout * 1000),
                             request_timeout_ms=max(int(timeout * 1000), 30_000) + 5_000)
    except (KafkaError, OSError) as exc:
        raise connect_error(bootstrap_servers, timeout, exc) from None
