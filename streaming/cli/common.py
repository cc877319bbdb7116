"""What the command modules share: the one-line-error parser, argument types, output.

Every user error is one line on stderr and exit code 2 (:class:`Parser` for
usage errors; :class:`~streaming.errors.StreamsketchError` for the rest).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def info(message: str) -> None:
    """A progress line on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1..65535: {value}")
    return value


def local_dir(text: str) -> Path:
    """An argparse type: a local folder or file (a URI such as ``s3://...`` is refused,
    not taken as a folder named ``s3:``)."""
    from streaming.spec.values import not_local

    why = not_local(text)
    if why:
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return Path(text)


def number(kind: type, *, low: float, inclusive: bool = True, high: float = math.inf):
    """An argparse type: an int or float in [low, high] (or (low, high] if not inclusive)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        ok = (value >= low if inclusive else value > low) and value <= high
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            bound = f"{'>=' if inclusive else '>'} {low:g}" + (
                f" and <= {high:g}" if high < math.inf else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def iso_time(text: str) -> dt.datetime:
    """An argparse type: an ISO-8601 time, UTC if it names no zone."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time: {text!r} (e.g. 2026-11-23T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _fmt_ms(ms: int) -> str:
    if ms <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def batch_line(s: Any) -> str:
    """One line about a finished batch (a :class:`~streaming.engine.pipeline.BatchSummary`)."""
    q = ", ".join(f"{k}={v}" for k, v in sorted(s.quarantined.items())) or "none"
    rate = s.rows / s.duration_s if s.duration_s else 0.0
    tasks = getattr(s, "tasks", 0)
    return (f"batch {s.batch_id}: {s.rows} rows ({s.valid} aggregated; quarantined: {q}) "
            f"in {s.duration_s:.1f} s ({rate:,.0f} rows/s, {tasks} "
            f"task{'s' if tasks != 1 else ''}; driver CPU {s.driver_cpu_s:.2f} s), "
            f"watermark {_fmt_ms(s.watermark_ms)}")


#: the likely cause of a batch whose records mostly share one quarantine reason
_CAUSES = {
    "future_time": "event times run ahead of the batch's clock by more than [events] "
                   "max_future: a producer's clock, or events generated into the future "
                   "(give `produce` a --start-time in the past)",
    "late": "events older than the watermark: old events arriving after newer ones "
            "(a replay of an older log into a topic that already moved on?), or a "
            "watermark delay too short for this source",
    "invalid_json": "the records are not JSON objects: is the topic right, and its "
                    "format JSON?",
    "invalid_utf8": "the values are not UTF-8 text: is the topic right (Avro or another "
                    "binary format)?",
    "wrong_type": "a field's type differs from [events] fields: check the spec against "
                  "the records",
    "missing_time": "the records lack [events] time_field: check its name against the "
                    "records",
    "bad_time": "the time field does not parse as [events] time_format: check the format",
    "invalid_avro": "the values are not Avro of the spec's schemas: is the topic right, and "
                    "[events.avro] schema (bare values) or schemas (Confluent framing)?",
    "unknown_schema": "the producers write with a schema id [events.avro] schemas does not "
                      "list: add its .avsc",
}


def quarantine_alarm(s: Any) -> str | None:
    """One loud line when a batch quarantined more than half its records: the main
    reason, and its likely cause."""
    if not s.rows or 2 * sum(s.quarantined.values()) <= s.rows:
        return None
    reason, count = max(s.quarantined.items(), key=lambda kv: (kv[1], kv[0]))
    cause = _CAUSES.get(reason, "see the quarantine table's reason column")
    return (f"streamsketch: WARNING: batch {s.batch_id} quarantined "
            f"{sum(s.quarantined.values()):,} of {s.rows:,} records, {count:,} as "
            f"{reason}: {cause}")


def log_batch(log: Any, s: Any) -> None:
    """Log a finished batch's line, and :func:`quarantine_alarm`'s when it has one."""
    log(batch_line(s))
    alarm = quarantine_alarm(s)
    if alarm:
        log(alarm)


def process_age_s() -> float:
    """Seconds since this process started (the interpreter's own start-up included,
    where /proc says; else since this module was imported)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat") as f:  # the command name may hold spaces: split after it
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


class Phases:
    """What a command's start-up and end took, a line each (``run --verbose``): each
    phase's seconds and the time since the process started."""

    def __init__(self, enabled: bool, log: Any = info) -> None:
        self.enabled = enabled
        self.log = log
        self.t0 = time.monotonic() - process_age_s()
        self.last = self.t0

    def mark(self, what: str, *, took: float | None = None) -> None:
        """``what`` ended now (it took ``took`` seconds, or all since the last mark)."""
        now = time.monotonic()
        if self.enabled:
            spent = now - self.last if took is None else took
            self.log(f"phase: {what}: {spent:.2f} s (at {now - self.t0:.2f} s)")
        self.last = now


def serve_metrics(spark: Any, pipeline: Any, spec: Any) -> Any:
    """Attach Prometheus metrics to the pipeline and serve them, if the spec asks to."""
    if not spec.metrics.enabled:
        return None
    from streaming.observability.metrics import PipelineMetrics

    metrics = PipelineMetrics().attach(spark, pipeline)
    server = metrics.serve(spec.metrics.host, spec.metrics.port)
    info(f"metrics on http://{spec.metrics.host}:{server.server_port}/metrics")
    return server


def spark_setting(text: str) -> tuple[str, str]:
    """An argparse type: ``KEY=VALUE``, a Spark setting as ``spark-submit --conf`` takes it."""
    from streaming.spec.values import spark_setting_refused

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. "
                                         "spark.executor.memory=4g)")
    why = spark_setting_refused(key)
    if why:
        raise argparse.ArgumentTypeError(f"{key} {why}")
    return key, value


def spark_args(p: argparse.ArgumentParser) -> None:
    """The Spark options of a command that starts a session."""
    p.add_argument("--conf", type=spark_setting, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="a Spark setting, as spark-submit takes it (repeatable); applied "
                        "after streamsketch's own and the spec's [spark] table")


def spark_session(args: argparse.Namespace, spec: Any = None):
    """The Spark session a command's ``--master`` (and ``--ui``, ``--driver-memory``,
    ``--conf``) ask for, with the spec's ``[spark]`` settings (``--conf`` wins)."""
    from streaming.runtime.session import SparkOptions, build_session
    from streaming.spec.model import Secret

    options = SparkOptions(master=getattr(args, "master", "local[*]"),
                           ui=getattr(args, "ui", False))
    if getattr(args, "driver_memory", None):
        options = replace(options, driver_memory=args.driver_memory)
    conf = {k: v.reveal() if isinstance(v, Secret) else v
            for k, v in (getattr(spec, "spark", None) or ())}
    conf.update(getattr(args, "conf", None) or [])
    if conf:
        options = replace(options, conf=conf)
    return build_session(options, log=info)
