"""Replay: event logs into Kafka, paced, resumable, each record once (``streamsketch replay``).

**Replay** reads logs with :mod:`streaming.logs.reader` and publishes each record with
:class:`streaming.kafka.batch_producer.BatchProducer`: Kafka's idempotent producer
(``acks=all``), with the batch size, linger, compression and delivery timeout of
:func:`streaming.kafka.admin.producer_settings`, that builds the record batches of
the partitions computed here itself instead of paying ``KafkaProducer.send()``
per record.
With ``--speed F`` the log's event-time gaps are kept, scaled by 1/F
(:func:`~streaming.logs.pacing.pace_schedule`); ``--max-rate N`` caps records/s;
with neither it goes as fast as it can.

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
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.errors import ConfigError
from streaming.kafka.admin import (
    DEFAULT_BOOTSTRAP,
    TOPIC_NAME,
    connect_error,
    ensure_topic,
    open_consumer,
    producer_settings,
)
from streaming.kafka.batch_producer import BatchProducer, Partitioner
from streaming.logs.pacing import Pacer
from streaming.logs.reader import LogReader, ReadOptions

STATE_KIND = "streamsketch-replay-state"
STATE_VERSION = 1
RECONCILE_LIMIT = 2_000_000
"""Most records read back from the topic on ``--resume`` to find what already landed."""
_SLEEP_MIN = 0.005  # pacing never sleeps for less: records due within it go out together
_MAX_LAG = 1.0      # pacing that falls further behind than this re-anchors instead of bursting


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
    #: each value as it is sent: None, or a function of the logged bytes (the clickstream
    #: nested or as Avro: :func:`streaming.kafka.shapes.reshape`); deterministic, so a
    #: resumed replay matches the topic's tail against what it would send
    reshape: Any = None

    def __post_init__(self) -> None:
        if not TOPIC_NAME.fullmatch(self.topic) or self.topic in (".", ".."):
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
    n_parts = ensure_topic(KafkaAdminClient, config.bootstrap_servers, config.topic,
                            config.partitions, config.connect_timeout)
    consumer = open_consumer(config.bootstrap_servers, config.connect_timeout)
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
        raise connect_error(config.bootstrap_servers, config.connect_timeout, exc) from None
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
        raise connect_error(config.bootstrap_servers, config.connect_timeout, exc) from None

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

    partition_of = Partitioner(n_parts)
    known = partition_of.known
    reshape = config.reshape
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
                    if reshape is not None:
                        value = reshape(value)
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
