#!/usr/bin/env python
"""Throughput of `streamsketch produce` and `replay` into a real Kafka broker, same run.

Run from the repository root::

    python -m benchmarks.bench_produce                          # 1 M events, local broker
    python -m benchmarks.bench_produce --count 200000 --bootstrap-servers 127.0.0.1:9092

Rows:

* ``generate``: the records ``produce`` sends, built alone
  (:func:`streaming.kafka.generator.wire_chunks`): the ceiling for producing.
* ``produce`` (the README figure, the median of ``--rounds`` runs): the command as
  shipped, ``streamsketch produce --count N --rate 0 --json``, in a process of its own,
  into a fresh topic with 2 partitions; its rate is the one it prints (connected to
  flushed; the process's whole time is kept too), and the topic's end offsets are
  checked to hold every record.
* ``replay``: ``streamsketch replay LOG --topic T`` of the same N events, written first as
  a JSON Lines log, into another fresh topic, likewise.
* ``produce.<codec>`` (``--compare``): the library's :func:`produce` with another
  compression, on ``--compare-count`` events, to show why ``auto`` picks what it picks.

Without ``--bootstrap-servers`` a local KRaft broker is started in a temporary
folder on a free port and stopped at the end; 200,000 events into a warm-up topic come
first (a broker's first records run through a cold JIT). Results go to
``benchmarks/results/produce.json``; every figure is measured in the run that
wrote it. The broker shares the machine's cores with the producer, so figures from a
busy machine are lower: the JSON records the load average and CPU seconds per event.
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
from streaming.kafka.generator import GeneratorConfig, generate, wire_chunks  # noqa: E402
from streaming.kafka.producer import produce  # noqa: E402

DEFAULT_OUT = _HERE / "results" / "produce.json"
START = _dt.datetime(2026, 11, 23, 10, 0, tzinfo=_dt.UTC)


def _config(seed: int) -> GeneratorConfig:
    # The demo's mix of defects, so the bytes are what a real run sends.
    return GeneratorConfig(seed=seed, start_time=START, out_of_order=0.05, late=0.002,
                           malformed=0.001)


def _args(config: GeneratorConfig) -> list[str]:
    """``produce`` flags that generate ``config``'s events."""
    assert config.start_time is not None
    return ["--seed", str(config.seed), "--start-time", config.start_time.isoformat(),
            "--out-of-order", str(config.out_of_order), "--late", str(config.late),
            "--malformed", str(config.malformed)]


def bench_generate(count: int, seed: int) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    n = nbytes = 0
    import pyarrow.compute as pc

    for chunk in wire_chunks(_config(seed)):
        take = min(len(chunk.keys), count - n)
        n += take
        nbytes += sum(pc.sum(pc.binary_length(a.slice(0, take))).as_py() or 0
                      for a in (chunk.keys, chunk.values))
        if n >= count:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"key": "generate", "events": n, "bytes": nbytes, "seconds": wall,
            "cpu_seconds": cpu, "events_per_s": n / wall, "mb_per_s": nbytes / wall / 1e6,
            "cpu_us_per_event": cpu / n * 1e6, "note": "wire_chunks(), what produce sends"}


def _command(argv: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run ``streamsketch ARGV --json``: its JSON, wall seconds, CPU seconds of the process."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", *argv, "--json", "--quiet"],
                          cwd=_REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout), wall, cpu


def _median(rounds: int, run: Any) -> dict[str, Any]:
    """The round with the median rate of ``rounds`` runs, all rounds' rates kept."""
    rows = [run() for _ in range(rounds)]
    rows.sort(key=lambda r: r["events_per_s"])
    out = dict(rows[len(rows) // 2])
    out["rounds_events_per_s"] = [round(r["events_per_s"], 1) for r in rows]
    out["all_stored"] = all(r["all_stored"] for r in rows)
    return out


def bench_produce_command(bootstrap: str, count: int, seed: int) -> dict[str, Any]:
    topic = f"bench-produce-{int(time.time() * 1000)}"
    stats, wall, cpu = _command(["produce", "--bootstrap-servers", bootstrap, "--topic", topic,
                                 "--count", str(count), "--rate", "0", "--partitions", "2",
                                 *_args(_config(seed))])
    stored = end_offsets(bootstrap, topic)
    seconds = stats["elapsed_seconds"]
    return {"key": "produce", "events": stats["sent"], "bytes": stats["bytes"],
            "seconds": seconds, "process_seconds": wall, "cpu_seconds": cpu,
            "events_per_s": stats["sent"] / seconds, "mb_per_s": stats["bytes"] / seconds / 1e6,
            "cpu_us_per_event": cpu / stats["sent"] * 1e6, "failed": stats["failed"],
            "stored": stored, "all_stored": stored == count, "topic": topic,
            "compression": stats["compression"],
            "note": f"streamsketch produce --rate 0, compression {stats['compression']}"}


def bench_replay_command(bootstrap: str, count: int, seed: int, folder: Path) -> dict[str, Any]:
    log = folder / f"events-{count}.jsonl"
    with log.open("wb") as fh:
        for r in generate(_config(seed), count):
            if r.value is not None and b"\n" not in r.value:
                fh.write(r.value + b"\n")
    lines = sum(1 for line in log.open("rb") if line.strip())  # replay skips blank lines
    topic = f"bench-replay-{int(time.time() * 1000)}"
    stats, wall, cpu = _command(["replay", str(log), "--topic", topic, "--partitions", "2",
                                 "--bootstrap-servers", bootstrap,
                                 "--state", str(folder / f"{topic}.state.json")])
    stored = end_offsets(bootstrap, topic)
    seconds = stats["elapsed_seconds"]
    return {"key": "replay", "events": stats["records"], "bytes": stats["bytes"],
            "seconds": seconds, "process_seconds": wall, "cpu_seconds": cpu,
            "events_per_s": stats["records"] / seconds,
            "mb_per_s": stats["bytes"] / seconds / 1e6,
            "cpu_us_per_event": cpu / stats["records"] * 1e6, "failed": stats["failed"],
            "stored": stored, "all_stored": stored == lines, "topic": topic,
            "note": "streamsketch replay of the same events as JSON Lines"}


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
    ap.add_argument("--compare", default="",
                    help="codecs to time the library's produce() with, on --compare-count "
                         "events, e.g. none,gzip (default: none)")
    ap.add_argument("--compare-count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of produce and of replay; the median is the figure")
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
        # a broker just started runs its first records through a cold JIT: a warm-up
        # topic first, as a broker that has been up for a minute would be
        bench_produce_command(bootstrap, min(args.count, 200_000), args.seed + 1)
        plan: list[tuple[str, Any]] = [
            ("produce", lambda: _median(args.rounds, lambda: bench_produce_command(
                bootstrap, args.count, args.seed))),
            ("replay", lambda: _median(args.rounds, lambda: bench_replay_command(
                bootstrap, args.count, args.seed, home)))]
        plan += [(f"produce.{c}", lambda c=c: bench_produce(bootstrap, args.compare_count,
                                                             args.seed, c))
                 for c in args.compare.split(",") if c]
        for key, run in plan:
            try:
                rows.append(run())
            except Exception as exc:  # noqa: BLE001 - a failed row is reported, not fatal
                rows.append({"key": key, "error": f"{type(exc).__name__}: {exc}"})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(home, ignore_errors=True)

    report["rows"] = rows
    report["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
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
