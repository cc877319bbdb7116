"""``streamsketch replay`` and ``streamsketch record``: event logs into and out of Kafka.

Examples::

    streamsketch replay day.jsonl.gz --topic clickstream --speed 60    # an hour a minute
    streamsketch replay a.parquet b.csv --topic t --max-rate 5000 --resume
    streamsketch replay day.jsonl.gz --spec s.toml --backfill --sink out/   # no Kafka
    streamsketch record --topic clickstream --out saved.jsonl.gz --from-time 2026-11-23T10:00Z

The work is in :mod:`streaming.logs.replay`, :mod:`streaming.logs.record` and
:mod:`streaming.logs.backfill`; this module is their options, progress and signals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from streaming.cli.common import info, iso_time, local_dir, number
from streaming.errors import ConfigError
from streaming.kafka.admin import DEFAULT_BOOTSTRAP
from streaming.logs.formats import FORMATS, TIME_FORMATS
from streaming.logs.reader import ReadOptions
from streaming.logs.record import RecordStats, record
from streaming.logs.replay import ReplayConfig, ReplayStats, replay


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


def _reshape(args: argparse.Namespace) -> Any:
    from streaming.kafka.shapes import reshape

    try:
        return reshape(args.shape, args.values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.backfill:
        if args.spec is None:
            raise ConfigError("--backfill needs --spec: the pipeline to run over the logs")
        if args.topic is not None:
            raise ConfigError("--backfill reads the logs directly; --topic is for publishing "
                              "to Kafka (give one or the other)")
        if args.shape != "flat" or args.values != "json":
            raise ConfigError("--shape and --values shape what is published to Kafka; "
                              "--backfill reads the logs as they are")
        from streaming.cli.backfill import cmd_backfill

        return cmd_backfill(args, info)
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
                          connect_timeout=args.connect_timeout, reshape=_reshape(args))
    stop = threading.Event()
    bar = None if args.quiet else _Progress(sys.stderr)
    with _Interrupts(stop):
        try:
            stats = replay(args.logs, config, stop=stop, progress=bar, log=info)
        finally:
            if bar is not None:
                bar.finish()
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print("\n".join(stats.lines()))
    if stats.failed:
        info(f"streamsketch: error: {stats.failed} records were not delivered "
              f"({stats.first_error}); the state keeps the last acknowledged point, "
              "run again with --resume")
        return 1
    return 130 if stats.interrupted else 0


def _cmd_record(args: argparse.Namespace) -> int:
    if args.from_time and args.to_time and args.to_time <= args.from_time:
        raise ConfigError("--to-time must be after --from-time")
    stop = threading.Event()

    def report(s: RecordStats) -> None:
        info(f"record: {s.records:,} records, {s.elapsed_seconds:.0f} s")

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
        info(f"streamsketch: error: no record for {args.timeout:g} s before the end offsets "
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
    p.add_argument("logs", nargs="+", type=local_dir, metavar="LOG", help="log files, in order")
    p.add_argument("--topic", help="topic to publish to")
    bf = p.add_argument_group("backfill (no Kafka: the pipeline runs over the logs)")
    bf.add_argument("--backfill", action="store_true",
                    help="run the --spec pipeline over the logs into its Delta tables, "
                         "exactly as `run` over a topic holding them, and exit when done")
    bf.add_argument("--spec", type=Path, default=None, help="pipeline spec for --backfill")
    bf.add_argument("--sink", type=local_dir, default=None,
                    help="write tables to DIR/delta and the checkpoint to DIR/checkpoints "
                         "instead of the spec's [sink]")
    bf.add_argument("--records-per-batch", type=number(int, low=1), default=None,
                    help="records per batch (default: the spec's max_offsets_per_trigger, "
                         "so batches and late decisions match a one-partition topic)")
    # a backfill runs in this process, without Spark: the option is accepted (scripts may
    # pass it) and said to be ignored
    bf.add_argument("--master", default=None, help=argparse.SUPPRESS)
    pace = p.add_argument_group("pacing (both may be given; neither: as fast as possible)")
    pace.add_argument("--speed", type=number(float, low=0, inclusive=False), default=None,
                      help="keep event-time gaps, scaled by 1/F (60: an hour of log a minute)")
    pace.add_argument("--max-rate", type=number(float, low=0, inclusive=False), default=None,
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
    p.add_argument("--shape", choices=["flat", "nested"], default="flat",
                   help="a recorded flat clickstream sent nested, as produce --shape "
                        "nested sends it (default: as logged)")
    p.add_argument("--values", choices=["json", "avro"], default="json",
                   help="avro: a recorded flat clickstream sent as Avro values, as "
                        "produce --format avro sends them (default: json, as logged)")
    p.add_argument("--partitions", type=number(int, low=1), default=2,
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
    state.add_argument("--checkpoint-seconds", type=number(float, low=0, inclusive=False),
                       default=2.0, help="save the state at least this often (default: "
                                         "%(default)g)")
    state.add_argument("--checkpoint-records", type=number(int, low=1), default=50_000,
                       help="... and every N records (default: %(default)s)")
    p.add_argument("--connect-timeout", type=number(float, low=0, inclusive=False),
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
    p.add_argument("--out", required=True, type=local_dir, help="the log to write")
    p.add_argument("--from-time", type=iso_time, default=None,
                   help="start at the first record at/after this ISO-8601 time")
    p.add_argument("--to-time", type=iso_time, default=None,
                   help="stop at the first record at/after this ISO-8601 time (exclusive)")
    p.add_argument("--max-records", type=number(int, low=1), default=None,
                   help="stop after N records")
    p.add_argument("--timeout", type=number(float, low=0, inclusive=False), default=30.0,
                   help="give up after this many seconds without a record (default: "
                        "%(default)g)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _common(p)
    p.set_defaults(func=_cmd_record)
