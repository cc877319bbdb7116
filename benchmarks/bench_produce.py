#!/usr/bin/env python
"""Throughput of the clickstream generator, alone and producing into a real Kafka broker.

Run from the repository root::

    python -m benchmarks.bench_produce                          # 1 M events, local broker
    python -m benchmarks.bench_produce --count 200000 --bootstrap-servers 127.0.0.1:9092

Rows:

* ``generate``: :func:`streaming.kafka.generator.generate_batches` alone (events/s,
  MB/s of key + value bytes), the ceiling for producing.
* ``produce.<compression>``: :func:`streaming.kafka.generator.produce` as fast as
  possible (no rate limit) with the producer settings it uses, into a fresh
  topic with 2 partitions; the time includes the final flush, and the topic's
  end offsets are checked to hold every record. ``auto`` runs on ``--count``
  events; the other codecs (``--compare``) on ``--compare-count`` events, to
  show why ``auto`` picks what it picks.

Without ``--bootstrap-servers`` a local KRaft broker is started in a temporary
folder on a free port and stopped at the end. Results go to
``benchmarks/results/produce.json``; every figure is measured in the run that
wrote it. The broker shares the machine's cores with the producer, and
kafka-python is pure Python, so figures from a busy machine are lower: the JSON
records the load average and CPU seconds per event to tell.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_produce.py`` without an install
    sys.path.append(str(_REPO_ROOT))

from streaming.kafka.admin import producer_settings  # noqa: E402
from streaming.kafka.generator import GeneratorConfig, generate_batches  # noqa: E402
from streaming.kafka.producer import produce  # noqa: E402

DEFAULT_OUT = _HERE / "results" / "produce.json"
START = _dt.datetime(2026, 11, 23, 10, 0, tzinfo=_dt.UTC)


def _config(seed: int) -> GeneratorConfig:
    # The demo's mix of defects, so the bytes are what a real run sends.
    return GeneratorConfig(seed=seed, start_time=START, out_of_order=0.05, late=0.002,
                           malformed=0.001)


def bench_generate(count: int, seed: int) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    n = nbytes = 0
    for batch in generate_batches(_config(seed), count, 4096):
        n += len(batch)
        nbytes += sum(len(r.key) + len(r.value or b"") for r in batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"key": "generate", "events": n, "bytes": nbytes, "seconds": wall,
            "cpu_seconds": cpu, "events_per_s": n / wall, "mb_per_s": nbytes / wall / 1e6,
            "cpu_us_per_event": cpu / n * 1e6, "note": "generate_batches(batch_size=4096)"}


def end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def bench_produce(bootstrap: str, count: int, seed: int, compression: str) -> dict[str, Any]:
    topic = f"bench-produce-{compression}-{int(time.time() * 1000)}"
    settings = producer_settings(compression)  # type: ignore[arg-type]
    c0 = time.process_time()
    stats = produce(bootstrap, topic, _config(seed), count=count, partitions=2,
                    compression=compression)  # type: ignore[arg-type]
    cpu = time.process_time() - c0
    stored = end_offsets(bootstrap, topic)
    wall = stats.elapsed_seconds
    return {"key": f"produce.{compression}", "events": stats.sent, "bytes": stats.bytes,
            "seconds": wall, "cpu_seconds": cpu, "events_per_s": stats.sent / wall,
            "mb_per_s": stats.bytes / wall / 1e6, "cpu_us_per_event": cpu / stats.sent * 1e6,
            "failed": stats.failed, "stored": stored, "all_stored": stored == count,
            "compression": stats.compression, "topic": topic,
            "settings": {k: v for k, v in settings.items()},
            "note": f"as fast as possible, compression {stats.compression}"}


def machine() -> dict[str, Any]:
    from kafka.codec import has_lz4
    from kafka.record import util

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": {n: version(n) for n in ("kafka-python", "numpy", "streamsketch")},
            "kafka_python_crc32c_in_c": getattr(util, "crc32c_c", None) is not None,
            "kafka_python_has_lz4": bool(has_lz4())}


def table(rows: list[dict[str, Any]], key_width: int = 18) -> str:
    """The rows as a text table: events, seconds, rates and CPU per event (also bench_replay's)."""
    w = key_width
    head = f"{'row':<{w}} {'events':>10} {'seconds':>8} {'events/s':>10} {'MB/s':>7} " \
           f"{'CPU us/ev':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['key']:<{w}} error: {r['error']}")
            continue
        lines.append(f"{r['key']:<{w}} {r['events']:>10,} {r['seconds']:>8.1f} "
                     f"{r['events_per_s']:>10,.0f} {r['mb_per_s']:>7.2f} "
                     f"{r['cpu_us_per_event']:>9.1f}  {r['note']}"
                     + ("" if r.get("all_stored", True) else "  NOT ALL STORED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="events (default: %(default)s)")
    ap.add_argument("--bootstrap-servers", default=None,
                    help="an existing broker (default: start a local one)")
    ap.add_argument("--compare", default="none,gzip",
                    help="other codecs to time on --compare-count events ('' for none)")
    ap.add_argument("--compare-count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "produce", "schema_version": 1,
                              "created_utc": _dt.datetime.now(_dt.UTC).isoformat(),
                              "count": args.count, "compare_count": args.compare_count,
                              "seed": args.seed, "machine": machine()}
    rows = [bench_generate(args.count, args.seed)]
    print(table(rows), flush=True)

    broker = None
    home = Path(tempfile.mkdtemp(prefix="streamsketch-bench-kafka-"))
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        from streaming.kafka.broker import LocalKafka, free_port

        broker = LocalKafka(home, port=free_port(), heap="1g")
        print(f"starting a local broker on {broker.bootstrap_servers} ...", flush=True)
        broker.start(timeout=120)
        bootstrap = broker.bootstrap_servers
    report["broker"] = "local (started by the benchmark)" if broker else "given"
    try:
        plan = [("auto", args.count)] + [(c, args.compare_count)
                                         for c in args.compare.split(",") if c]
        for compression, count in plan:
            try:
                rows.append(bench_produce(bootstrap, count, args.seed, compression))
            except Exception as exc:  # noqa: BLE001 - a failed row is reported, not fatal
                rows.append({"key": f"produce.{compression}", "error": f"{type(exc).__name__}: "
                                                                       f"{exc}"})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(home, ignore_errors=True)

    report["rows"] = rows
    report["elapsed_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(table(rows))
    print(f"\nload average at start {report['machine']['loadavg_at_start']}, "
          f"crc32c in C: {report['machine']['kafka_python_crc32c_in_c']}, "
          f"lz4: {report['machine']['kafka_python_has_lz4']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
