"""``streamsketch record``: a topic's records into an event log that replay publishes back.

Consumes a topic from its start (or ``from_time``) up to the end offsets it had
when recording began (or ``to_time``) and writes envelopes
(:class:`~streaming.logs.writer.LogWriter`) that ``replay`` publishes back byte
for byte. Records are merged across partitions by timestamp, so a paced replay
of a recording keeps its time order.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming.errors import ConfigError
from streaming.kafka.admin import connect_error, open_consumer
from streaming.logs.writer import LogWriter


@dataclass
class RecordStats:
    """What one recording wrote; ``partitions`` maps each to its offset range and count."""

    topic: str
    out: str
    records: int = 0
    bytes: int = 0
    elapsed_seconds: float = 0.0
    complete: bool = False
    interrupted: bool = False
    partitions: dict[int, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def line(self) -> str:
        why = "complete" if self.complete else "interrupted" if self.interrupted else "incomplete"
        return (f"{self.records:,} records ({self.bytes / 1e6:.1f} MB) from {self.topic} "
                f"to {self.out} in {self.elapsed_seconds:.1f} s ({why})")


def record(bootstrap_servers: str, topic: str, out: str | os.PathLike[str], *,
           from_time: dt.datetime | None = None, to_time: dt.datetime | None = None,
           max_records: int | None = None, timeout: float = 30.0, overwrite: bool = False,
           stop: threading.Event | None = None,
           progress: Callable[[RecordStats], None] | None = None) -> RecordStats:
    """Write ``topic``'s records as envelopes to ``out`` (``.jsonl`` or ``.jsonl.gz``).

    From each partition's first offset (or the first at/after ``from_time``) up
    to its end offset when the recording starts (or the first offset at/after
    ``to_time``, exclusive), merged across partitions by timestamp. Gives up
    after ``timeout`` seconds without a record while some are still due.

    Raises:
        ConfigError: no such topic, no broker, or ``out`` exists (without ``overwrite``).
    """
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    stop = stop or threading.Event()
    consumer = open_consumer(bootstrap_servers, min(timeout, 30.0))
    stats = RecordStats(topic=topic, out=str(out))
    t0 = time.monotonic()
    try:
        parts = consumer.partitions_for_topic(topic) if topic in consumer.topics() else None
        if not parts:
            raise ConfigError(f"no topic {topic!r} at {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        end = consumer.end_offsets(tps)
        start = consumer.beginning_offsets(tps)
        for moment, target in ((from_time, start), (to_time, end)):
            if moment is None:
                continue
            found = consumer.offsets_for_times({tp: int(moment.timestamp() * 1000)
                                                for tp in tps})
            for tp in tps:  # None: no record at/after the time, so the end
                target[tp] = min(end[tp], found[tp].offset) if found[tp] else end[tp]
        stats.partitions = {tp.partition: {"start": start[tp], "end": max(start[tp], end[tp]),
                                           "records": 0} for tp in tps}
        writer = LogWriter(out, overwrite=overwrite)
        try:
            _copy(consumer, writer, tps, start, end, stats, max_records, timeout, stop,
                  progress, t0)
        finally:
            writer.close()
    except KafkaError as exc:
        raise connect_error(bootstrap_servers, timeout, exc) from None
    finally:
        consumer.close()
    stats.elapsed_seconds = time.monotonic() - t0
    stats.interrupted = stop.is_set()
    return stats


def _copy(consumer: Any, writer: LogWriter, tps: list[Any], start: dict[Any, int],
          end: dict[Any, int], stats: RecordStats, max_records: int | None, timeout: float,
          stop: threading.Event, progress: Callable[[RecordStats], None] | None,
          t0: float) -> None:
    """Merge the partitions' records by (timestamp, partition) into ``writer``."""
    todo = [tp for tp in tps if end[tp] > start[tp]]
    consumer.assign(todo)
    for tp in todo:
        consumer.seek(tp, start[tp])
    buffers: dict[Any, collections.deque] = {tp: collections.deque() for tp in todo}
    fetching = set(todo)  # partitions with records still to fetch
    paused: set[Any] = set()
    limit = max_records if max_records is not None else math.inf
    quiet_since = time.monotonic()
    next_report = quiet_since + 2.0
    while (fetching or any(buffers.values())) and stats.records < limit and not stop.is_set():
        if fetching:
            polled = consumer.poll(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            if polled:
                quiet_since = now
            elif now - quiet_since > timeout:
                return
            for tp, batch in polled.items():
                buffers[tp].extend(m for m in batch if m.offset < end[tp])
                if consumer.position(tp) >= end[tp]:
                    fetching.discard(tp)
                    consumer.pause(tp)
        # Emit while every partition still fetching has something buffered to compare.
        while stats.records < limit and all(buffers[tp] for tp in fetching):
            heads = [(buf[0].timestamp, tp.partition, tp) for tp, buf in buffers.items() if buf]
            if not heads:
                break
            m = buffers[min(heads)[2]].popleft()
            writer.write(key=m.key, value=m.value, timestamp_ms=m.timestamp, topic=m.topic,
                         partition=m.partition, offset=m.offset)
            stats.records += 1
            stats.bytes += len(m.key or b"") + len(m.value or b"")
            stats.partitions[m.partition]["records"] += 1
        for tp in fetching:  # bound memory: a partition far ahead waits for the others
            if len(buffers[tp]) > 20_000 and tp not in paused:
                consumer.pause(tp)
                paused.add(tp)
            elif len(buffers[tp]) < 5_000 and tp in paused:
                consumer.resume(tp)
                paused.discard(tp)
        if progress is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + 2.0
            stats.elapsed_seconds = time.monotonic() - t0
            progress(stats)
    stats.complete = not fetching and not any(buffers.values())
