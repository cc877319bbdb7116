"""``streamsketch produce``: send the seeded clickstream to a Kafka topic.

Examples::

    streamsketch produce --rate 1000                       # live, until Ctrl-C
    streamsketch produce --count 1000000 --rate 0 --json   # as fast as possible
    streamsketch produce --duration 60 --late 0.01 --malformed 0.005
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from streaming.cli.common import iso_time, number
from streaming.cli.signals import StopSignals
from streaming.errors import ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _fraction(text: str) -> float:
    return number(float, low=0.0, high=1.0)(text)


def _progress_line(stats) -> None:
    print(f"produce: {stats.sent:,} sent to {stats.topic}, {stats.elapsed_seconds:.0f} s, "
          f"{stats.events_per_second:,.0f}/s, failed {stats.failed}", file=sys.stderr, flush=True)


def event_start(start_time: dt.datetime | None, rate_limit: float | None, count: int | None,
                event_rate: float, now: dt.datetime) -> dt.datetime | None:
    """The first event's time: as given; sent as fast as possible with a count, the time
    that puts the last event at ``now`` (event time runs at ``event_rate``, far faster
    than the wall clock, and would otherwise end up to hours in the future, beyond
    ``max_future``); else None (now)."""
    if start_time is not None or rate_limit is not None or count is None:
        return start_time
    return now - dt.timedelta(seconds=count / event_rate)


def _cmd_produce(args: argparse.Namespace) -> int:
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    if args.format == "avro" and args.shape != "flat":
        raise ConfigError("--format avro sends the flat shape only (drop --shape nested)")
    if args.topic is None:
        args.topic = ("clickstream-nested" if args.shape == "nested" else
                      "clickstream-avro" if args.format == "avro" else "clickstream")
    rate_limit = args.rate if args.rate > 0 else None
    event_rate = args.event_rate or rate_limit or 1000.0
    start = event_start(args.start_time, rate_limit, args.count, event_rate,
                        dt.datetime.now(dt.UTC))
    if rate_limit is None and start is None and not args.quiet:
        print(f"produce: event times start now and advance {event_rate:g}/s, faster than the "
              "clock: they run into the future (beyond [events] max_future, quarantined as "
              "future_time) unless --count or --start-time is given", file=sys.stderr,
              flush=True)
    config = GeneratorConfig(seed=args.seed, rate=event_rate, start_time=start,
                             users=args.users, pages=args.pages,
                             out_of_order=args.out_of_order, max_disorder=args.max_disorder,
                             late=args.late, late_by=args.late_by, malformed=args.malformed)
    if not args.quiet:
        what = (f"{args.count:,} events" if args.count is not None else
                f"for {args.duration:g} s" if args.duration is not None else "until Ctrl-C")
        pace = f"{rate_limit:g}/s" if rate_limit else "as fast as possible"
        print(f"produce: {what} to {args.topic} at {args.bootstrap_servers}, {pace}",
              file=sys.stderr, flush=True)
    # SIGTERM and Ctrl-C stop it between two steps: what was sent is flushed, the stats
    # printed. A flag the loop checks, not an exception raised wherever the signal
    # lands (one raised inside the Kafka client's own waits could be swallowed there).
    with StopSignals() as term:
        stats = produce(args.bootstrap_servers, args.topic, config, count=args.count,
                        duration=args.duration, rate_limit=rate_limit,
                        partitions=args.partitions, connect_timeout=args.connect_timeout,
                        progress=None if args.quiet else _progress_line,
                        shape=args.shape, value_format=args.format, stop=term.event)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(stats.line())
    if stats.failed:
        print(f"streamsketch: error: {stats.failed} records were not delivered: "
              f"{stats.first_error}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``produce`` subcommand to a CLI's subparsers."""
    p = sub.add_parser(
        "produce", help="send a seeded, realistic clickstream to Kafka",
        description="Send generated clickstream events (JSON, keyed by user_id) to a Kafka "
                    "topic, creating it if missing. Stops after --count events, after "
                    "--duration seconds, or on Ctrl-C or SIGTERM (what was sent is flushed, "
                    "the stats are printed, exit code 0). Exit code 1 if records were not "
                    "delivered, 2 for bad arguments or an unreachable broker.")
    p.add_argument("--bootstrap-servers",
                   default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
                   help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or "
                        f"{DEFAULT_BOOTSTRAP})")
    p.add_argument("--topic", default=None,
                   help="topic (default: clickstream; clickstream-nested with --shape "
                        "nested, clickstream-avro with --format avro)")
    p.add_argument("--format", choices=["json", "avro"], default="json",
                   help="json (default), or avro: Avro values of streaming/specs/"
                        "clickstream.avsc in Confluent's wire format, schema id 1 "
                        "(streaming/specs/clickstream-avro.toml)")
    p.add_argument("--shape", choices=["flat", "nested"], default="flat",
                   help="flat: fields at the top (the bundled spec's); nested: the same "
                        "events with their fields one level down (user.id, page.path...; "
                        "streaming/specs/clickstream-nested.toml)")
    p.add_argument("--partitions", type=number(int, low=1), default=2,
                   help="partitions when the topic is created (default: %(default)s)")
    p.add_argument("--rate", type=number(float, low=0), default=1000.0,
                   help="events per second of wall time; 0 = as fast as possible "
                        "(default: %(default)g)")
    p.add_argument("--event-rate", type=number(float, low=0, inclusive=False), default=None,
                   help="events per second of event time (default: --rate, or 1000 when "
                        "--rate is 0); with no --start-time and --rate > 0, event time "
                        "then tracks the wall clock")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--count", type=number(int, low=1), default=None,
                      help="stop after N events (default: no limit)")
    stop.add_argument("--duration", type=number(float, low=0, inclusive=False), default=None,
                      help="stop after SECONDS of wall time")
    p.add_argument("--seed", type=number(int, low=0), default=0,
                   help="random seed; same seed, same events (default: %(default)s)")
    p.add_argument("--start-time", type=iso_time, default=None,
                   help="event time of the first event, ISO-8601 (UTC if no offset; "
                        "default: now, or with --rate 0 and --count, the time that puts "
                        "the last event at now)")
    p.add_argument("--users", type=number(int, low=1), default=100_000,
                   help="distinct users (default: %(default)s)")
    p.add_argument("--pages", type=number(int, low=1), default=5_000,
                   help="distinct pages (default: %(default)s)")
    p.add_argument("--out-of-order", type=_fraction, default=0.0,
                   help="fraction of events shifted back within --max-disorder")
    p.add_argument("--max-disorder", type=number(float, low=0, inclusive=False), default=60.0,
                   help="seconds (default: %(default)g)")
    p.add_argument("--late", type=_fraction, default=0.0,
                   help="fraction of events shifted back beyond --late-by")
    p.add_argument("--late-by", type=number(float, low=0, inclusive=False), default=10_800.0,
                   help="seconds (default: %(default)g, beyond a 2-hour watermark)")
    p.add_argument("--malformed", type=_fraction, default=0.0,
                   help="fraction of records replaced by a bad one (invalid JSON, non-UTF-8, "
                        "wrong type, missing or bad timestamp, null or empty value)")
    p.add_argument("--connect-timeout", type=number(float, low=0, inclusive=False),
                   default=15.0, help="seconds to wait for the broker (default: %(default)g)")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_produce)

