"""``streamsketch replay`` and ``streamsketch record``: event logs into and out of Kafka.

Examples::

    streamsketch replay day.jsonl.gz --topic clickstream --speed 60    # an hour a minute
    streamsketch replay a.parquet b.csv --topic t --max-rate 5000 --resume
    streamsketch record --topic clickstream --out saved.jsonl.gz --from-time 2026-11-23T10:00Z

**Replay** reads logs with :mod:`streaming.logs.reader` and publishes each record with
:class:`streaming.kafka.batch_producer.BatchProducer`: Kafka's idempotent producer
(``acks=all``), with the batch size, linger, compression and delivery timeout of
:func:`streaming.kafka.generator.producer_settings`, that builds the record batches of
the partitions computed here itself instead of paying ``KafkaProducer.send()``
per record.
With ``--speed F`` the log's event-time gaps are kept, scaled by 1/F
(:func:`pace_schedule`); ``--max-rate N`` caps records/s; with neither it goes
as fast as it can.

**Resume.** A small state file (``<first LOG>.replay-state.json`` or ``--state``)
holds, per log, the last line whose record the broker acknowledged, and per
partition the offset after our last acknowledged record. It is written
atomically (on a thread, so a slow fsync does not hold the replay up) only after
``flush()`` returned with no failed record, every ``--checkpoint-seconds`` or
``--checkpoint-records``, and on Ctrl-C; so it never runs ahead of the broker.
Records sent after the last checkpoint may have landed too (always after
SIGKILL, which leaves no time to save). ``--resume`` therefore first reads what
the topic holds past the saved offsets and, since
each record's partition is computed here (the key's murmur2 hash like Kafka's
default partitioner; a keyless record goes to ``line % partitions``) and a
partition keeps the order records were sent in, skips the log records that
match that tail in order, partition by partition. An interrupted replay, by
Ctrl-C or SIGKILL, resumed with the same logs and topic, publishes each record
exactly once, unless something else wrote to those partitions in between, or
a delivery failure (not an interruption) left a gap in a partition: the first
mismatch stops the matching of that partition, and its records from there on
are sent again (at-least-once); likewise when more than
:data:`RECONCILE_LIMIT` records landed past the checkpoint, or the topic's
partition count changed.

**Record** consumes a topic from its start (or ``--from-time``) up to the end
offsets it had when recording began (or ``--to-time``) and writes envelopes that
``replay`` publishes back byte for byte. Records are merged across partitions
by timestamp, so a paced replay of a recording keeps its time order.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streaming.cli.produce import DEFAULT_BOOTSTRAP, _iso_time, _number
from streaming.errors import ConfigError
from streaming.kafka.batch_producer import BatchProducer
from streaming.logs.reader import FORMATS, TIME_FORMATS, LogReader, LogWriter, ReadOptions

STATE_KIND = "streamsketch-replay-state"
STATE_VERSION = 1
RECONCILE_LIMIT = 2_000_000
"""Most records read back from the topic on ``--resume`` to find what already landed."""
_SLEEP_MIN = 0.005  # pacing never sleeps for less: records due within it go out together
_MAX_LAG = 1.0      # pacing that falls further behind than this re-anchors instead of bursting


# -- pacing -------------------------------------------------------------------------
class Pacer:
    """When each record is due, in seconds after the first, for a speed and/or a rate cap.

    Event time is taken relative to the first record that has one and never
    goes backwards (the largest seen so far), so out-of-order records go out
    at once instead of sleeping backwards; records without a time go out with
    the one before.
    """

    def __init__(self, speed: float | None = None, max_rate: float | None = None) -> None:
        self.speed, self.max_rate = speed, max_rate
        self._first: int | None = None
        self._high = 0
        self._count = 0

    def due(self, time_ms: int | None) -> float:
        at = 0.0
        if self.speed is not None and time_ms is not None:
            if self._first is None:
                self._first = self._high = time_ms
            elif time_ms > self._high:
                self._high = time_ms
            at = (self._high - self._first) / 1000.0 / self.speed
        elif self.speed is not None and self._first is not None:
            at = (self._high - self._first) / 1000.0 / self.speed
        if self.max_rate is not None:
            at = max(at, self._count / self.max_rate)
        self._count += 1
        return at


def pace_schedule(times_ms: Iterable[int | None], speed: float | None = None,
                  max_rate: float | None = None) -> list[float]:
    """Seconds after the start at which each record is due (the replay's own math).

    >>> pace_schedule([1000, 3000, 2000, 7000], speed=2.0)
    [0.0, 1.0, 1.0, 3.0]
    >>> pace_schedule([0, 0, 0], max_rate=10)
    [0.0, 0.1, 0.2]
    """
    pacer = Pacer(speed, max_rate)
    return [pacer.due(t) for t in times_ms]


# -- state --------------------------------------------------------------------------
def _fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"name": path.name, "size": path.stat().st_size, "head_sha256": head}


def default_state_path(logs: Sequence[Path]) -> Path:
    return logs[0].with_name(logs[0].name + ".replay-state.json")


@dataclass
class ReplayState:
    """Progress of one replay, saved as self-describing JSON (kind and version)."""

    path: Path
    topic: str
    partitions: int
    logs: list[dict[str, Any]]
    next_offsets: dict[int, int] = field(default_factory=dict)
    _saving: threading.Thread | None = field(default=None, init=False, repr=False,
                                             compare=False)
    _error: ConfigError | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def new(cls, path: Path, topic: str, partitions: int, logs: Sequence[Path]) -> ReplayState:
        entries = [dict(_fingerprint(p), line=0, records=0, done=False) for p in logs]
        return cls(path, topic, partitions, entries)

    @classmethod
    def load(cls, path: Path, topic: str, logs: Sequence[Path]) -> ReplayState:
        try:
            data = json.loads(path.read_text())
            if data.get("kind") != STATE_KIND or data.get("version") != STATE_VERSION:
                raise ConfigError(f"{path} is not a replay state of version {STATE_VERSION}")
            state = cls(path, data["topic"], int(data["partitions"]), list(data["logs"]),
                        {int(p): int(o) for p, o in data["next_offsets"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot read the replay state {path}: {exc}") from None
        if state.topic != topic:
            raise ConfigError(f"{path} is the state of a replay into {state.topic!r}, "
                              f"not {topic!r}; pass --state for a separate one")
        now = [_fingerprint(p) for p in logs]
        then = [{k: e.get(k) for k in ("name", "size", "head_sha256")} for e in state.logs]
        if now != then:
            raise ConfigError(f"{path} was written for the logs "
                              f"{', '.join(str(e['name']) for e in then)} and they are not these "
                              "(or have changed); pass the same logs, or --restart")
        return state

    def save(self) -> None:
        """Write the state now: a temporary file, fsync'd, renamed over the old one."""
        self._write(self._text())

    def save_in_background(self) -> None:
        """:meth:`save` this state (as it is now) on a thread; :meth:`wait` for it.

        An fsync can take tens of milliseconds on a busy disk; the replay goes
        on meanwhile. Saves never overlap and land in order; an error is
        raised by the next call or by :meth:`wait`.
        """
        text = self._text()
        self.wait()
        self._saving = threading.Thread(target=self._write_keeping_error, args=(text,),
                                        name="streamsketch-replay-state")
        self._saving.start()

    def wait(self) -> None:
        """Wait for a background save to be on disk; raise its error if it failed."""
        if self._saving is not None:
            self._saving.join()
            self._saving = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _text(self) -> str:
        data = {"kind": STATE_KIND, "version": STATE_VERSION, "topic": self.topic,
                "partitions": self.partitions, "logs": self.logs,
                "next_offsets": {str(p): o for p, o in sorted(self.next_offsets.items())},
                "updated_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        return json.dumps(data, indent=1)

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ConfigError(f"cannot write the replay state {self.path}: "
                              f"{exc.strerror or exc}") from None

    def _write_keeping_error(self, text: str) -> None:
        try:
            self._write(text)
        except ConfigError as exc:
            self._error = exc


# -- partitions and reconciliation ---------------------------------------------------
class _Partitioner:
    """Kafka's default partition of a key (murmur2, cached); keyless records by line."""

    def __init__(self, partitions: int) -> None:
        from kafka.partitioner.default import murmur2

        self.n, self._murmur2 = partitions, murmur2
        self.known: dict[bytes, int] = {}
        """Keys seen so far and their partitions (a hot loop may look here first)."""

    def __call__(self, key: bytes | None, line: int) -> int:
        if key is None:
            return line % self.n
        p = self.known.get(key)
        if p is None:
            p = (self._murmur2(key) & 0x7FFFFFFF) % self.n
            if len(self.known) < 1_000_000:
                self.known[key] = p
        return p


class Landed:
    """What the topic holds past the checkpoint, per partition, matched against the log."""

    def __init__(self, tails: Mapping[int, Iterable[tuple[bytes | None, bytes | None]]],
                 start: Mapping[int, int] | None = None) -> None:
        self.tails = {p: collections.deque(t) for p, t in tails.items() if t}
        self.found = 0
        self.mismatched: list[int] = []
        self._start = dict(start or {})
        self.offsets: dict[int, int] = {}
        """Per partition (with ``start``), the offset after the last record matched."""

    def __bool__(self) -> bool:
        return bool(self.tails)

    def take(self, partition: int, key: bytes | None, value: bytes | None) -> bool:
        """True when this record is the next one already in ``partition`` (then skip it)."""
        tail = self.tails.get(partition)
        if tail is None:
            return False
        if tail[0] == (key, value):
            tail.popleft()
            self.found += 1
            if partition in self._start:
                self.offsets[partition] = self.offsets.get(partition,
                                                           self._start[partition]) + 1
            if not tail:
                del self.tails[partition]
            return True
        self.mismatched.append(partition)
        del self.tails[partition]
        return False


def _consumer(bootstrap_servers: str, timeout: float) -> Any:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from streaming.kafka.generator import _connect_error

    try:
        return KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, client_id="streamsketch-replay",
                             allow_auto_create_topics=False,
                             bootstrap_timeout_ms=int(timeout * 1000),
                             request_timeout_ms=max(int(timeout * 1000), 30_000) + 5_000)
    except (KafkaError, OSError) as exc:
        raise _connect_error(bootstrap_servers, timeout, exc) from None


def _read_tails(consumer: Any, topic: str, start: dict[int, int], limit: int
                ) -> dict[int, list[tuple[bytes | None, bytes | None]]] | None:
    """(key, value) of every record from ``start`` to the end, per partition; None past limit."""
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in start]
    end = consumer.end_offsets(tps)
    todo = {tp: end[tp] for tp in tps if end[tp] > start[tp.partition]}
    if sum(end[tp] - start[tp.partition] for tp in todo) > limit:
        return None
    tails: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in start}
    if not todo:
        return tails
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, start[tp.partition])
    deadline = time.monotonic() + 120
    while todo and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=500).items():
            stop = todo.get(tp)
            tails[tp.partition].extend((m.key, m.value) for m in batch
                                       if stop is not None and m.offset < stop)
        for tp in [tp for tp, stop in todo.items() if consumer.position(tp) >= stop]:
            del todo[tp]
    if todo:
        raise ConfigError(f"could not read back the tail of {topic} to resume; try again")
    return tails


# -- replay -------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayConfig:
    """A validated replay. ``speed`` and ``max_rate`` may be combined (both apply)."""

    topic: str
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    read: ReadOptions = ReadOptions()
    speed: float | None = None
    max_rate: float | None = None
    partitions: int = 2
    state_path: Path | None = None
    resume: bool = False
    restart: bool = False
    checkpoint_seconds: float = 2.0
    checkpoint_records: int = 50_000
    connect_timeout: float = 15.0

    def __post_init__(self) -> None:
        from streaming.kafka.generator import _TOPIC

        if not _TOPIC.fullmatch(self.topic) or self.topic in (".", ".."):
            raise ConfigError(f"not a valid Kafka topic name: {self.topic!r}")
        for name in ("speed", "max_rate"):
            v = getattr(self, name)
            if v is not None and not 0 < v < math.inf:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if self.speed is not None and not self.read.require_time:
            raise ConfigError("--speed needs event times: read the log with require_time")
        if self.resume and self.restart:
            raise ConfigError("--resume and --restart contradict each other")


@dataclass
class ReplayStats:
    """What one replay session did; ``logs`` has one entry per log file."""

    topic: str
    partitions: int
    records: int = 0
    bytes: int = 0
    elapsed_seconds: float = 0.0
    resumed_skipped: int = 0
    already_in_topic: int = 0
    failed: int = 0
    first_error: str | None = None
    interrupted: bool = False
    complete: bool = False
    state_file: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.records / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["events_per_second"] = round(self.events_per_second, 1)
        out["mb_per_second"] = round(self.bytes / 1e6 / self.elapsed_seconds, 3) \
            if self.elapsed_seconds > 0 else 0.0
        return out

    def lines(self) -> list[str]:
        head = (f"{self.records:,} records ({self.bytes / 1e6:.1f} MB) to {self.topic} in "
                f"{self.elapsed_seconds:.1f} s, {self.events_per_second:,.0f}/s")
        if self.resumed_skipped or self.already_in_topic:
            head += (f"; resumed: {self.resumed_skipped:,} skipped as acknowledged, "
                     f"{self.already_in_topic:,} found already in the topic")
        head += f"; failed {self.failed}" + (" (interrupted)" if self.interrupted else "")
        out = [head]
        for log in self.logs:
            if log["blank_lines"]:
                out.append(f"  {log['name']}: {log['blank_lines']:,} blank lines (not records)")
            for reason, info in log["bad"].items():
                shown = ", ".join(map(str, info["lines"][:20]))
                more = " ..." if info["count"] > 20 else ""
                what = "published as-is" if info["published"] else "not published"
                out.append(f"  {log['name']}: {info['count']:,} {reason} ({what}), "
                           f"line {shown}{more}")
        return out


def replay(logs: Sequence[str | os.PathLike[str]], config: ReplayConfig, *,
           stop: threading.Event | None = None,
           progress: Callable[[ReplayStats, int, int], None] | None = None,
           log: Callable[[str], None] = lambda _msg: None) -> ReplayStats:
    """Publish the records of ``logs`` (in order) to ``config.topic``; see the module doc.

    ``stop`` ends the replay cleanly at a record boundary (flushed, state saved,
    ``interrupted=True``). ``progress(stats, bytes_done, bytes_total)`` is called
    about every half second.

    Raises:
        ConfigError: bad arguments, unreadable state, no broker within the timeout.
        LogFormatError: a log that cannot be opened as its format.
    """
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import KafkaError

    from streaming.kafka.generator import _connect_error, _ensure_topic, producer_settings

    paths = [Path(p) for p in logs]
    if not paths:
        raise ConfigError("no log to replay")
    for path in paths:  # format and access, before connecting
        LogReader(path, config.read).close()
    state_path = config.state_path or default_state_path(paths)
    if state_path.exists() and not (config.resume or config.restart):
        raise ConfigError(f"{state_path} holds an earlier replay of these logs; pass --resume "
                          "to continue it, or --restart to publish everything again")
    stop = stop or threading.Event()
    n_parts = _ensure_topic(KafkaAdminClient, config.bootstrap_servers, config.topic,
                            config.partitions, config.connect_timeout)
    consumer = _consumer(config.bootstrap_servers, config.connect_timeout)
    landed = Landed({})
    try:
        if config.resume and state_path.exists():
            state = ReplayState.load(state_path, config.topic, paths)
            tails = None
            if state.partitions == n_parts:
                tails = _read_tails(consumer, config.topic, state.next_offsets, RECONCILE_LIMIT)
            if tails is None:
                log(f"replay: cannot match the topic's tail against the log (partitions "
                    f"{state.partitions} -> {n_parts}, or over {RECONCILE_LIMIT:,} records): "
                    "records sent after the last checkpoint may be published twice")
            else:
                landed = Landed(tails, start=state.next_offsets)
            state.partitions = n_parts
        else:
            if config.resume:
                log(f"replay: no state at {state_path}; starting from the beginning")
            state = ReplayState.new(state_path, config.topic, n_parts, paths)
            tps = [TopicPartition(config.topic, p) for p in range(n_parts)]
            state.next_offsets = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
            state.save()
    except KafkaError as exc:
        raise _connect_error(config.bootstrap_servers, config.connect_timeout, exc) from None
    finally:
        consumer.close()

    settings = producer_settings()
    delivery_timeout = settings["delivery_timeout_ms"] / 1000
    try:
        producer = BatchProducer.connect(
            config.bootstrap_servers, config.topic, n_parts, timeout=config.connect_timeout,
            batch_size=settings["batch_size"], linger=settings["linger_ms"] / 1000,
            compression=settings["compression_type"], delivery_timeout=delivery_timeout)
    except (KafkaError, OSError) as exc:
        raise _connect_error(config.bootstrap_servers, config.connect_timeout, exc) from None

    stats = ReplayStats(topic=config.topic, partitions=n_parts, state_file=str(state_path))
    total_bytes = sum(e["size"] for e in state.logs)
    done_bytes = sum(e["size"] for e in state.logs if e["done"])
    t0 = time.monotonic()

    def checkpoint(entry: dict[str, Any], line: int, records: int) -> bool:
        # Only what the broker acknowledged is saved: flush() waits for every
        # record sent so far, and a failure anywhere stops the checkpoints.
        if not producer.flush(delivery_timeout):
            return False
        state.next_offsets.update(producer.acked_offsets)
        for p, offset in landed.offsets.items():
            # Records matched as already in the topic are behind the new line too;
            # a partition that got nothing new since must not restart before them.
            state.next_offsets[p] = max(state.next_offsets.get(p, 0), offset)
        entry.update(line=line, records=records)
        state.save_in_background()
        return True

    partition_of = _Partitioner(n_parts)
    known = partition_of.known
    send = producer.send
    pacer = Pacer(config.speed, config.max_rate) if config.speed or config.max_rate else None
    pace_t0 = None
    next_progress = t0
    try:
        for path, entry in zip(paths, state.logs, strict=True):
            summary = {"name": path.name, "records": entry["records"], "bad": {},
                       "blank_lines": 0, "complete": entry["done"]}
            stats.logs.append(summary)
            stats.resumed_skipped += entry["records"]
            if entry["done"]:
                continue
            line, records = entry["line"], entry["records"]
            next_check = time.monotonic() + config.checkpoint_seconds
            since_check = sent = nbytes = 0
            with LogReader(path, config.read) as reader:
                for rec in reader.records(after_line=line):
                    key, value = rec.key, rec.value
                    p = known.get(key)  # type: ignore[arg-type]  # None: not there
                    if p is None:
                        p = partition_of(key, rec.line)
                    if landed.tails and landed.take(p, key, value):
                        line, records = rec.line, records + 1
                        stats.already_in_topic += 1
                        continue
                    if pacer is not None:
                        due, now = pacer.due(rec.time_ms), time.monotonic()
                        if pace_t0 is None:
                            pace_t0 = now
                        ahead = pace_t0 + due - now
                        if ahead > _SLEEP_MIN:  # never per record: only when enough is due
                            producer.push()  # what is due now goes out before the wait
                            while ahead > 0 and not stop.is_set():
                                producer.poll(min(ahead, 0.1))
                                ahead = pace_t0 + due - time.monotonic()
                        elif ahead < -_MAX_LAG:
                            pace_t0 -= ahead
                        if stop.is_set():
                            break
                    send(p, key, value)
                    line, records = rec.line, records + 1
                    sent += 1
                    nbytes += (len(key) if key is not None else 0) + \
                        (len(value) if value is not None else 0)
                    since_check += 1
                    if since_check & 255 == 0 or pacer is not None:
                        if since_check & (255 if pacer is not None else 2047) == 0:
                            producer.poll()  # answers, and batches open longer than linger
                        stats.records += sent
                        stats.bytes += nbytes
                        sent = nbytes = 0
                        if stop.is_set():  # unpaced, a stop waits for at most 255 records
                            break
                        now = time.monotonic()
                        if since_check >= config.checkpoint_records or now >= next_check:
                            if not checkpoint(entry, line, records):
                                break
                            since_check, next_check = 0, now + config.checkpoint_seconds
                        if progress is not None and now >= next_progress:
                            next_progress = now + 0.5
                            stats.elapsed_seconds = now - t0
                            progress(stats, done_bytes + reader.bytes_read(), total_bytes)
                else:
                    entry["done"] = True
                stats.records += sent
                stats.bytes += nbytes
                summary.update(records=records, bad=reader.bad.to_dict(),
                               blank_lines=reader.blank_lines, complete=entry["done"])
            if not checkpoint(entry, line, records) or stop.is_set():
                break
            done_bytes += entry["size"]
    finally:
        producer.close(timeout=delivery_timeout)
        state.wait()  # the last checkpoint is on disk before replay returns
    stats.elapsed_seconds = time.monotonic() - t0
    stats.failed = producer.failed
    stats.first_error = producer.first_error
    stats.interrupted = stop.is_set()
    stats.complete = all(e["done"] for e in state.logs) and not producer.failed
    if landed.mismatched:
        log(f"replay: partitions {sorted(set(landed.mismatched))} held records that are not "
            "the log's: something else wrote to them; matching stopped there")
    return stats


# -- record -------------------------------------------------------------------------
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

    from streaming.kafka.generator import _connect_error

    stop = stop or threading.Event()
    consumer = _consumer(bootstrap_servers, min(timeout, 30.0))
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
        raise _connect_error(bootstrap_servers, timeout, exc) from None
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


# -- progress -----------------------------------------------------------------------
class _Progress:
    """A bar redrawn in place on a terminal, else a plain line every few seconds."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = 0.5 if self.tty else 5.0
        self.t0 = time.monotonic()
        self.next = self.t0 + self.every
        self.first_bytes: int | None = None
        self.drawn = False

    def __call__(self, stats: ReplayStats, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.every
        if self.first_bytes is None:
            self.first_bytes = done
        frac = done / total if total else 1.0
        speed = (done - self.first_bytes) / max(now - self.t0, 1e-9)
        eta = (total - done) / speed if speed > 0 else math.inf
        eta_text = "--:--" if not math.isfinite(eta) else _clock(eta)
        text = (f"{frac:6.1%}  {stats.records:,} records  {stats.events_per_second:,.0f}/s  "
                f"{stats.bytes / 1e6 / max(stats.elapsed_seconds, 1e-9):.1f} MB/s  ETA {eta_text}")
        if self.tty:
            width = 24
            fill = int(frac * width)
            self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {text}\x1b[K")
            self.drawn = True
        else:
            self.stream.write(f"replay: {text}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


# -- the command line ---------------------------------------------------------------
class _Interrupts:
    """SIGINT/SIGTERM set ``event`` (a clean stop); another, a second later, aborts at once."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.first = 0.0
        self.saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            # The same Ctrl-C often arrives twice (a wrapper forwards it to the group).
            if time.monotonic() - self.first > 1.0:
                raise KeyboardInterrupt
            return
        self.first = time.monotonic()
        self.event.set()
        print("\nstreamsketch: stopping (flushing what was sent; Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> _Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.backfill:
        if args.spec is None:
            raise ConfigError("--backfill needs --spec: the pipeline to run over the logs")
        if args.topic is not None:
            raise ConfigError("--backfill reads the logs directly; --topic is for publishing "
                              "to Kafka (give one or the other)")
        from streaming.logs.backfill import cmd_backfill

        return cmd_backfill(args, _info)
    if args.topic is None:
        raise ConfigError("give --topic to publish the logs to Kafka, or --spec S --backfill "
                          "to run the pipeline over them directly")
    paced = args.speed is not None  # event times are read only to pace by them
    read = ReadOptions(format=args.format, key_field=args.key_field or None,
                       time_field=(args.time_field or None) if paced else None,
                       time_format=args.time_format,
                       require_time=paced, envelope_time=args.envelope_time,
                       skip_bad=args.skip_bad)
    config = ReplayConfig(topic=args.topic, bootstrap_servers=args.bootstrap_servers, read=read,
                          speed=args.speed, max_rate=args.max_rate, partitions=args.partitions,
                          state_path=args.state, resume=args.resume, restart=args.restart,
                          checkpoint_seconds=args.checkpoint_seconds,
                          checkpoint_records=args.checkpoint_records,
                          connect_timeout=args.connect_timeout)
    stop = threading.Event()
    bar = None if args.quiet else _Progress(sys.stderr)
    with _Interrupts(stop):
        try:
            stats = replay(args.logs, config, stop=stop, progress=bar, log=_info)
        finally:
            if bar is not None:
                bar.finish()
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print("\n".join(stats.lines()))
    if stats.failed:
        _info(f"streamsketch: error: {stats.failed} records were not delivered "
              f"({stats.first_error}); the state keeps the last acknowledged point, "
              "run again with --resume")
        return 1
    return 130 if stats.interrupted else 0


def _cmd_record(args: argparse.Namespace) -> int:
    if args.from_time and args.to_time and args.to_time <= args.from_time:
        raise ConfigError("--to-time must be after --from-time")
    stop = threading.Event()

    def report(s: RecordStats) -> None:
        _info(f"record: {s.records:,} records, {s.elapsed_seconds:.0f} s")

    with _Interrupts(stop):
        stats = record(args.bootstrap_servers, args.topic, args.out, from_time=args.from_time,
                       to_time=args.to_time, max_records=args.max_records,
                       timeout=args.timeout, overwrite=args.force, stop=stop,
                       progress=None if args.quiet else report)
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.line())
    if stats.interrupted:
        return 130
    reached_limit = args.max_records is not None and stats.records >= args.max_records
    if not stats.complete and not reached_limit:
        _info(f"streamsketch: error: no record for {args.timeout:g} s before the end offsets "
              "were reached; the recording is incomplete")
        return 1
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers",
                   default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
                   help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or "
                        f"{DEFAULT_BOOTSTRAP})")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``replay`` and ``record`` subcommands to a CLI's subparsers."""
    p = sub.add_parser(
        "replay", help="publish recorded event logs to Kafka, paced or as fast as possible",
        description="Publish the records of event logs (JSON Lines, .gz, Parquet, CSV; plain "
                    "events or `streamsketch record` envelopes) to a topic, creating it if "
                    "missing. Bad lines are counted with their line numbers and published "
                    "as-is (or dropped with --skip-bad). Resumable: a state file keeps the "
                    "acknowledged position. Exit codes: 0 done, 1 records not delivered, "
                    "2 bad arguments or unreachable broker, 130 interrupted (state saved).")
    p.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="log files, in order")
    p.add_argument("--topic", help="topic to publish to")
    bf = p.add_argument_group("backfill (no Kafka: the pipeline runs over the logs)")
    bf.add_argument("--backfill", action="store_true",
                    help="run the --spec pipeline over the logs into its Delta tables, "
                         "exactly as `run` over a topic holding them, and exit when done")
    bf.add_argument("--spec", type=Path, default=None, help="pipeline spec for --backfill")
    bf.add_argument("--sink", type=Path, default=None,
                    help="write tables to DIR/delta and the checkpoint to DIR/checkpoints "
                         "instead of the spec's [sink]")
    bf.add_argument("--records-per-batch", type=_number(int, low=1), default=None,
                    help="records per batch (default: the spec's max_offsets_per_trigger, "
                         "so batches and late decisions match a one-partition topic)")
    bf.add_argument("--master", default="local[*]", help="Spark master (default: %(default)s)")
    pace = p.add_argument_group("pacing (both may be given; neither: as fast as possible)")
    pace.add_argument("--speed", type=_number(float, low=0, inclusive=False), default=None,
                      help="keep event-time gaps, scaled by 1/F (60: an hour of log a minute)")
    pace.add_argument("--max-rate", type=_number(float, low=0, inclusive=False), default=None,
                      help="at most N records per second")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="log format (default: from the file name)")
    p.add_argument("--key-field", default="user_id",
                   help="event field used as the Kafka key of plain events, '' for none "
                        "(default: %(default)s)")
    p.add_argument("--time-field", default="ts",
                   help="event field with the event time (default: %(default)s)")
    p.add_argument("--time-format", choices=TIME_FORMATS, default="iso8601",
                   help="how the time field is written (default: %(default)s)")
    p.add_argument("--envelope-time", choices=("timestamp", "field"), default="timestamp",
                   help="time of recorded envelopes: their Kafka timestamp, or the time "
                        "field of their value (default: %(default)s)")
    p.add_argument("--partitions", type=_number(int, low=1), default=2,
                   help="partitions when the topic is created (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true",
                   help="drop bad lines instead of publishing them as-is")
    state = p.add_argument_group("resuming")
    state.add_argument("--state", type=Path, default=None,
                       help="state file (default: <first LOG>.replay-state.json)")
    again = state.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue after the acknowledged records of the state file")
    again.add_argument("--restart", action="store_true",
                       help="ignore an existing state file and publish everything again")
    state.add_argument("--checkpoint-seconds", type=_number(float, low=0, inclusive=False),
                       default=2.0, help="save the state at least this often (default: "
                                         "%(default)g)")
    state.add_argument("--checkpoint-records", type=_number(int, low=1), default=50_000,
                       help="... and every N records (default: %(default)s)")
    p.add_argument("--connect-timeout", type=_number(float, low=0, inclusive=False),
                   default=15.0, help="seconds to wait for the broker (default: %(default)g)")
    _common(p)
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser(
        "record", help="save a topic's records to a log that `replay` publishes back",
        description="Consume a topic from its start (or --from-time) to the end offsets it "
                    "has when recording starts (or --to-time), and write each record's key, "
                    "value, timestamp, partition and offset as JSON Lines (.jsonl, or "
                    "gzip'd: .jsonl.gz). Exit codes: 0 done, 1 stalled before the end, "
                    "2 bad arguments, 130 interrupted (what was read is kept).")
    p.add_argument("--topic", required=True, help="topic to record")
    p.add_argument("--out", required=True, type=Path, help="the log to write")
    p.add_argument("--from-time", type=_iso_time, default=None,
                   help="start at the first record at/after this ISO-8601 time")
    p.add_argument("--to-time", type=_iso_time, default=None,
                   help="stop at the first record at/after this ISO-8601 time (exclusive)")
    p.add_argument("--max-records", type=_number(int, low=1), default=None,
                   help="stop after N records")
    p.add_argument("--timeout", type=_number(float, low=0, inclusive=False), default=30.0,
                   help="give up after this many seconds without a record (default: "
                        "%(default)g)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _common(p)
    p.set_defaults(func=_cmd_record)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streaming.logs.replay replay|record ...``: these two commands alone."""
    from streaming.cli.main import _Parser, run_command

    parser = _Parser(prog="streamsketch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    register(sub)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
