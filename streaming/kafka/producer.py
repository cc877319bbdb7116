"""Send the generated clickstream (:mod:`streaming.kafka.generator`) to a Kafka topic.

The records are built column by column (:func:`~streaming.kafka.generator.wire_chunks`)
and sent with :class:`~streaming.kafka.batch_producer.BatchProducer`, Kafka's idempotent
producer that builds its record batches itself, as ``replay`` does: several times the
rate of ``KafkaProducer.send()`` per record, with the same records, keys and partitions.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc

from streaming.errors import ConfigError
from streaming.kafka.admin import (
    TOPIC_NAME,
    Compression,
    connect_error,
    ensure_topic,
    kafka_clients,
    producer_settings,
)
from streaming.kafka.batch_producer import BatchProducer, Partitioner, murmur2_rows
from streaming.kafka.generator import (
    CHUNK,
    KINDS,
    LATE,
    OUT_OF_ORDER,
    GeneratorConfig,
    WireChunk,
    wire_chunks,
)
from streaming.kafka.shapes import SHAPES, avro_values, nested_values


@dataclass(frozen=True)
class ProduceStats:
    """What :func:`produce` sent. ``counts`` has one entry per record kind."""

    topic: str
    partitions: int
    sent: int
    bytes: int
    failed: int
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    interrupted: bool = False
    first_error: str | None = None
    compression: str = "none"
    start_time: str | None = None

    @property
    def events_per_second(self) -> float:
        return self.sent / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["events_per_second"] = round(self.events_per_second, 1)
        return out

    def line(self) -> str:
        bad = sum(v for k, v in self.counts.items() if k.startswith("malformed:"))
        return (f"{self.sent} events ({self.bytes / 1e6:.1f} MB) to {self.topic} in "
                f"{self.elapsed_seconds:.1f} s, {self.events_per_second:,.0f}/s; "
                f"out_of_order {self.counts.get(OUT_OF_ORDER, 0)}, "
                f"late {self.counts.get(LATE, 0)}, "
                f"malformed {bad}, failed {self.failed}"
                + (" (interrupted)" if self.interrupted else ""))


def produce(bootstrap_servers: str, topic: str, config: GeneratorConfig, *,
            count: int | None = None, duration: float | None = None,
            rate_limit: float | None = None, partitions: int = 2,
            compression: Compression = "auto", connect_timeout: float = 15.0,
            progress: Callable[[ProduceStats], None] | None = None,
            progress_interval: float = 2.0, shape: str = "flat",
            value_format: str = "json", stop: threading.Event | None = None) -> ProduceStats:
    """Send generated records to ``topic``, creating it if missing.

    Stops after ``count`` records or ``duration`` seconds (whichever is first;
    endless when neither), once ``stop`` is set (checked before every step of at most a
    few hundred records, and while waiting for the pace), or on Ctrl-C; then flushes
    and returns the stats (``interrupted=True`` after a stop or Ctrl-C). With
    ``rate_limit`` (events/s of wall time) records go out at that steady rate, and when
    ``config.start_time`` is None the event-time clock starts now and runs at the same
    rate, so event time tracks the wall clock. Without it records go out as fast as possible.

    Raises:
        ConfigError: bad arguments, or no broker answers within ``connect_timeout``.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ConfigError(f"count must be a non-negative integer, got {count!r}")
    if duration is not None and not 0 < duration < math.inf:
        raise ConfigError(f"duration must be positive seconds, got {duration!r}")
    if rate_limit is not None and not 0 < rate_limit < math.inf:
        raise ConfigError(f"rate limit must be positive events/s, got {rate_limit!r}")
    if shape not in SHAPES:
        raise ConfigError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    if value_format not in ("json", "avro") or (value_format == "avro" and shape != "flat"):
        raise ConfigError("the values are JSON (flat or nested) or Avro (flat)")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(f"partitions must be a positive integer, got {partitions!r}")
    if not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ConfigError(f"not a valid Kafka topic name: {topic!r} (1-249 of a-z A-Z 0-9 . _ -)")
    if rate_limit is not None and config.start_time is None:
        config = replace(config, rate=float(rate_limit))
    admin_cls, _, _ = kafka_clients()
    from kafka.errors import KafkaError

    n_partitions = ensure_topic(admin_cls, bootstrap_servers, topic, partitions,
                                connect_timeout)
    settings = producer_settings(compression)
    delivery_timeout = settings["delivery_timeout_ms"] / 1000
    try:
        producer = BatchProducer.connect(
            bootstrap_servers, topic, n_partitions, client_id="streamsketch-produce",
            timeout=connect_timeout, batch_size=settings["batch_size"],
            linger=settings["linger_ms"] / 1000, compression=settings["compression_type"],
            delivery_timeout=delivery_timeout)
    except (KafkaError, OSError) as exc:
        raise connect_error(bootstrap_servers, connect_timeout, exc) from None
    except (RuntimeError, ValueError) as exc:  # e.g. a codec whose package is not installed
        raise ConfigError(f"cannot create the producer: {exc}") from None

    config = config.with_start()  # now that the broker answered: event time tracks wall time
    kinds = np.zeros(len(KINDS), dtype=np.int64)
    nbytes = 0
    interrupted = False
    step = max(1, min(500, int(rate_limit / 50))) if rate_limit else CHUNK
    t0 = time.monotonic()
    deadline = t0 + duration if duration is not None else math.inf
    next_report = t0 + progress_interval

    def stats(elapsed: float) -> ProduceStats:
        return ProduceStats(topic=topic, partitions=n_partitions, sent=int(kinds.sum()),
                            bytes=nbytes, failed=producer.failed,
                            counts={k: int(v) for k, v in zip(KINDS, kinds, strict=True) if v},
                            elapsed_seconds=elapsed, interrupted=interrupted,
                            first_error=producer.first_error,
                            compression=settings["compression_type"] or "none",
                            start_time=_iso(config.start_time))

    partition_of = Partitioner(n_partitions)
    part_of_user = np.full(config.users, -1, dtype=np.int64)
    remaining = math.inf if count is None else count
    sent = 0
    pace_from = t0
    try:
        for chunk in wire_chunks(config):
            n = int(min(len(chunk.keys), remaining))
            parts = _partitions(chunk, n, part_of_user, partition_of)
            for i in range(0, n, step):
                now = time.monotonic()
                if now >= deadline:
                    raise _Done
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                if rate_limit:
                    due = pace_from + sent / rate_limit
                    if due > now:
                        if due >= deadline:
                            raise _Done
                        producer.push()  # what is due goes out before the wait
                        while (left := due - time.monotonic()) > 0 and not (
                                stop is not None and stop.is_set()):
                            producer.poll(min(left, 0.1))
                    elif now - due > 1.0:  # fell behind: don't burst to catch up
                        pace_from = now - sent / rate_limit
                j = min(n, i + step)
                keys, values = chunk.keys.slice(i, j - i), chunk.values.slice(i, j - i)
                if shape == "nested":
                    values = nested_values(values)
                elif value_format == "avro":
                    values = avro_values(values)
                for p in range(n_partitions):
                    rows = np.flatnonzero(parts[i:j] == p)
                    if len(rows):
                        producer.send_arrays(p, keys.take(rows), values.take(rows))
                nbytes += sum(int(pc.sum(pc.binary_length(a)).as_py() or 0)
                              for a in (keys, values))
                kinds += np.bincount(chunk.kinds[i:j], minlength=len(KINDS))
                sent += j - i
                producer.poll()
                if progress is not None and now >= next_report:
                    next_report = now + progress_interval
                    progress(stats(now - t0))
            remaining -= n
            if remaining <= 0:
                break
    except _Done:
        pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            producer.flush(delivery_timeout)
        finally:
            producer.close(timeout=5)
    return stats(time.monotonic() - t0)


def _partitions(chunk: WireChunk, n: int, part_of_user: np.ndarray,
                partition_of: Partitioner) -> np.ndarray:
    """The partition of each of the chunk's first ``n`` records: its key's (one key per
    user), Kafka's default murmur2 choice, worked out once per user."""
    users = chunk.users[:n]
    parts = part_of_user[users]
    new = np.flatnonzero(parts < 0)
    if len(new):
        _, first = np.unique(users[new], return_index=True)
        rows = new[first]
        keys = chunk.keys.take(rows)
        lengths = pc.binary_length(keys).to_numpy()
        if len(set(lengths.tolist())) == 1:  # one key length: hash them all at once
            _, offsets, data = keys.buffers()
            start = int(np.frombuffer(offsets, dtype=np.int32)[keys.offset])
            raw = np.frombuffer(data, dtype=np.uint8)[start:start + int(lengths.sum())]
            hashes = murmur2_rows(raw.reshape(len(rows), int(lengths[0])))
            part_of_user[users[rows]] = (hashes & 0x7FFFFFFF) % partition_of.n
        else:
            for i in rows.tolist():
                part_of_user[users[i]] = partition_of(chunk.keys[i].as_py(), 0)
        parts = part_of_user[users]
    return parts


class _Done(Exception):
    """The duration is over (out of the nested send loops)."""


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
