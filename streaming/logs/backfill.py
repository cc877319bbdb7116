"""Backfill: the pipeline over log files, without Kafka, giving the tables Kafka would.

The records of the logs (in order) are cut into batches of ``records_per_batch``
and each batch goes through the same code as a streaming micro-batch: the engine's
one pass (:func:`streaming.engine.onepass.run_pass`, run in this process: a backfill needs
no JVM), then :meth:`Pipeline.process` (quarantine, windows, sketches, Delta
writes). Provenance columns name the log instead of a topic: ``topic`` = the log
file's name, ``partition`` = its position among the logs, ``offset`` = its line (or
row) number; ``source_timestamp`` is null.

Each log is an input partition for the watermark (:mod:`streaming.engine.watermarks`); a
log read to its end no longer holds it back. So a backfill of one log with
``records_per_batch`` equal to a single-partition topic's ``max_offsets_per_trigger``
cuts the same batches as ``run --available-now`` over that topic, makes the same
late decisions, and writes identical aggregates and byte-identical sketches.

Exactly once, like the streaming query's offset and commit logs: before a batch
runs, its plan (start position, record count, batch time) is written to
``<checkpoint>/backfill/plan-N.json`` and its watermark fixed; after its writes,
``done-N.json`` holds the end position. After a crash the unfinished plan is run
again exactly as planned; the Delta writes are idempotent per batch id.

What the log reader finds lost (a gzip stream cut short, a corrupt Parquet file)
becomes a quarantine row with reason ``truncated`` or ``corrupt`` at the line where
the data stops; lines that are not JSON, lack the time field or carry wrong types
reach the parser like any record and are quarantined with its reasons.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming.engine.onepass import READER_REASON, partition_key, run_pass
from streaming.engine.pipeline import Pipeline
from streaming.engine.summary import BatchSummary
from streaming.errors import CheckpointError, ConfigError
from streaming.logs.reader import LogReader, ReadOptions
from streaming.spec.model import Spec

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

DEFAULT_RECORDS_PER_BATCH = 200_000

_LOST = {
    "truncated": "truncated: the log ends inside its gzip stream after line {line}; "
                 "the rest of the file is lost",
    "corrupt": "corrupt: the file cannot be read past line {line}; the rest is lost",
    "unsendable": "unsendable: a recorded envelope with neither key nor value",
}


@dataclass(frozen=True)
class Position:
    """After line ``line`` of log number ``log`` (``line`` 0: before its first line)."""

    log: int = 0
    line: int = 0


@dataclass
class BackfillStats:
    logs: list[str]
    batches: int = 0
    resumed_batches: int = 0
    records: int = 0
    valid: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reader_bad: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"logs": self.logs, "batches": self.batches,
                "resumed_batches": self.resumed_batches, "records": self.records,
                "valid": self.valid, "quarantined": dict(sorted(self.quarantined.items())),
                "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second, 1),
                "reader_bad": self.reader_bad}

    def lines(self) -> list[str]:
        q = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined.items())) or "none"
        out = [f"backfill: {self.records:,} records in {self.batches} batches, "
               f"{self.seconds:.1f} s ({self.events_per_second:,.0f} events/s); "
               f"{self.valid:,} aggregated, quarantined: {q}"]
        for name, bad in self.reader_bad.items():
            for reason, info in bad.items():
                out.append(f"  {name}: {info['count']:,} {reason} (lines "
                           f"{', '.join(map(str, info['lines']))})")
        return out


def backfill_spec(spec: Spec, logs: Sequence[Path]) -> Spec:
    """The spec with its source replaced by the logs (bound into the checkpoint)."""
    paths = os.pathsep.join(str(Path(p).resolve()) for p in logs)
    return replace(spec, source=replace(spec.source, kind="files", path=paths))


def log_files(spec: Spec) -> list[Path]:
    """The logs of a files source: a file, a folder's files in name order, or a path list."""
    if spec.source.path is None:
        raise ConfigError("a files source needs [source] path")
    out: list[Path] = []
    for part in spec.source.path.split(os.pathsep):
        p = Path(part)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        else:
            out.append(p)
    if not out:
        raise ConfigError(f"no log file under {spec.source.path}")
    return out


class LogRecords:
    """The logs' records from a position on, as Arrow batches of raw records."""

    def __init__(self, logs: Sequence[Path], options: ReadOptions, start: Position) -> None:
        self.logs = list(logs)
        self.options = options
        self.position = start
        self.readers: dict[int, LogReader] = {}
        self._iter = self._records()

    def finished_before(self, position: Position) -> frozenset[str]:
        """The input partitions (logs) read to their end before ``position``."""
        return frozenset(partition_key(self.logs[i].name, i) for i in range(position.log))

    def _records(self) -> Iterator[tuple[int, Any]]:
        pos = self.position
        for i in range(pos.log, len(self.logs)):
            reader = LogReader(self.logs[i], self.options)
            self.readers[i] = reader
            with reader:
                for rec in reader.records(after_line=pos.line if i == pos.log else 0):
                    yield i, rec
            self.position = Position(i + 1, 0)

    def take(self, n: int) -> tuple[pa.Table, Position, int]:
        """Up to ``n`` records as a raw-record table, the position after them, their count."""
        import pyarrow as pa

        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        parts: list[int] = []
        offsets: list[int] = []
        reasons: list[str | None] = []
        topics: list[str] = []
        names = [p.name for p in self.logs]
        for i, rec in self._iter:
            keys.append(rec.key)
            values.append(rec.value)
            parts.append(i)
            offsets.append(rec.line)
            topics.append(names[i])
            lost = _LOST.get(rec.bad) if rec.bad else None
            reasons.append(lost.format(line=rec.line - 1) if lost else None)
            self.position = Position(i, rec.line)
            if len(values) >= n:
                break
        count = len(values)
        table = pa.table({
            "_key": pa.array(keys, pa.binary()), "_value": pa.array(values, pa.binary()),
            "_topic": pa.array(topics, pa.string()), "_partition": pa.array(parts, pa.int32()),
            "_offset": pa.array(offsets, pa.int64()),
            "_source_ts": pa.nulls(count, pa.timestamp("us", tz="UTC")),
            READER_REASON: pa.array(reasons, pa.string())})
        return table, self.position, count

    def bad(self) -> dict[str, dict[str, Any]]:
        return {self.logs[i].name: r.bad.to_dict() for i, r in sorted(self.readers.items())
                if r.bad.total}


def journal_batches(checkpoint: Path) -> tuple[int, int]:
    """(last batch done, last batch planned) of a backfill checkpoint; -1: none."""
    return _Journal.peek(checkpoint)


class _Journal:
    """Plans and completions of backfill batches, next to the pipeline's checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        self.dir = Path(checkpoint) / "backfill"
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def peek(checkpoint: Path) -> tuple[int, int]:
        """(last batch done, last batch planned) of a checkpoint's journal; -1: none."""
        folder = Path(checkpoint) / "backfill"

        def ids(prefix: str) -> list[int]:
            return [int(p.stem.split("-")[1]) for p in folder.glob(f"{prefix}-*.json")]

        done = max(ids("done"), default=-1)
        return done, max(max(ids("plan"), default=-1), done)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)

    def _read(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"backfill journal entry {path} is damaged ({exc}); "
                                  "refusing to guess where the backfill stopped") from None

    def last_done(self) -> dict[str, Any] | None:
        done = [int(p.stem.split("-")[1]) for p in self.dir.glob("done-*.json")]
        return self._read(f"done-{max(done)}.json") if done else None

    def plan(self, batch_id: int) -> dict[str, Any] | None:
        name = f"plan-{batch_id}.json"
        return self._read(name) if (self.dir / name).exists() else None

    def write_plan(self, plan: dict[str, Any]) -> None:
        self._write(f"plan-{plan['batch_id']}.json", plan)

    def write_done(self, done: dict[str, Any]) -> None:
        self._write(f"done-{done['batch_id']}.json", done)


def backfill(spark: SparkSession | None, spec: Spec, logs: Sequence[str | os.PathLike[str]], *,
             records_per_batch: int = DEFAULT_RECORDS_PER_BATCH, log_format: str | None = None,
             on_batch: Callable[[BatchSummary], None] | None = None,
             pipeline: Pipeline | None = None) -> BackfillStats:
    """Run the pipeline of ``spec`` over ``logs`` until they are consumed (see module doc).

    ``spec`` is used as given (see :func:`backfill_spec` for binding it to the
    logs). A given ``pipeline`` must be built on ``spec``; it is prepared here.
    ``spark`` is not needed (the pass runs in this process) and may be None.

    Raises:
        ConfigError: no log, or a bad batch size.
        CheckpointError: the checkpoint belongs to another spec or set of logs, or its
            journal is damaged.
        LogFormatError: a log that cannot be opened as its format.
    """
    paths = [Path(p) for p in logs]
    if not paths:
        raise ConfigError("no log to backfill")
    if records_per_batch < 1:
        raise ConfigError(f"records per batch must be at least 1, not {records_per_batch}")
    options = ReadOptions(format=log_format, key_field=None, raw=True, keep_lost=True)  # type: ignore[arg-type]
    for p in paths:  # format and access, before any state is touched
        LogReader(p, options).close()
    pipeline = pipeline or Pipeline(spark, spec, on_batch=on_batch)
    planned = _Journal.peek(Path(spec.sink.checkpoint))
    pipeline.prepare(planned=planned)
    try:
        stats = _run(pipeline, paths, options, records_per_batch)
        pipeline.compact()  # the windows the last batch closed: one final row each
        return stats
    finally:
        pipeline.lock.release()


def _run(pipeline: Pipeline, paths: list[Path], options: ReadOptions,
         records_per_batch: int) -> BackfillStats:
    assert pipeline.checkpoint is not None and pipeline.watermarks is not None
    journal = _Journal(pipeline.checkpoint.root)
    done = journal.last_done()
    batch_id = 0 if done is None else int(done["batch_id"]) + 1
    start = Position() if done is None else Position(*done["end"])
    stats = BackfillStats(logs=[str(p) for p in paths], resumed_batches=batch_id)
    records = LogRecords(paths, options, start)
    t0 = time.monotonic()
    while True:
        plan = journal.plan(batch_id)
        if plan is not None:  # planned before a crash: run it again, exactly
            if Position(*plan["start"]) != records.position:
                pos = records.position
                raise CheckpointError(f"backfill plan {batch_id} starts at {plan['start']}, "
                                      f"but batch {batch_id - 1} ended at "
                                      f"{[pos.log, pos.line]}")
            table, end, count = records.take(int(plan["records"]))
            if count != plan["records"] or [end.log, end.line] != plan["end"]:
                raise CheckpointError(f"the logs changed under backfill batch {batch_id}: it "
                                      f"planned {plan['records']} records, found {count}")
            now_ms = int(plan["timestamp_ms"])
            begin = Position(*plan["start"])
        else:
            begin = records.position
            table, end, count = records.take(records_per_batch)
            if count == 0:
                break
            now_ms = int(time.time() * 1000)
            journal.write_plan({"batch_id": batch_id, "start": [begin.log, begin.line],
                                "end": [end.log, end.line], "records": count,
                                "timestamp_ms": now_ms})
        watermark_ms = pipeline.watermarks.for_batch(batch_id, now_ms,
                                                     finished=records.finished_before(begin))
        summary = pipeline.process(lambda ctx, t=table: run_pass(t, ctx), batch_id,
                                   watermark_ms, now_ms)
        journal.write_done({"batch_id": batch_id, "end": [end.log, end.line]})
        stats.batches += 1
        stats.records += summary.rows
        stats.valid += summary.valid
        for k, v in summary.quarantined.items():
            stats.quarantined[k] = stats.quarantined.get(k, 0) + v
        batch_id += 1
    stats.seconds = time.monotonic() - t0
    stats.reader_bad = records.bad()
    return stats
