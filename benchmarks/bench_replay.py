#!/usr/bin/env python
"""Throughput of ``streamsketch replay``: a generated event log into a real Kafka broker.

Run from the repository root::

    python -m benchmarks.bench_replay                        # 5 M events, local broker
    python -m benchmarks.bench_replay --count 1000000 --bootstrap-servers 127.0.0.1:9092

Rows:

* ``read``: :class:`streaming.logs.reader.LogReader` alone over the log (split, JSON
  decode, key field), the ceiling for a replay.
* ``send``: kafka-python's ``KafkaProducer.send()`` alone, with the replay's
  producer settings and explicit partitions, on ``--send-count`` records held in
  memory, then ``flush()``: the ceiling of the per-record producer API, which
  replay no longer uses (kept as the baseline the batch producer replaced).
* ``batch``: :class:`streaming.kafka.batch_producer.BatchProducer` alone, the producer
  replay uses, with the replay's settings, on the same records in memory, then
  ``flush()``: its ceiling in this process.
* ``replay``: :func:`streaming.logs.replay.replay` (what ``streamsketch replay``
  runs) of the whole log as fast as possible into a fresh topic (2 partitions),
  state checkpoints included; the time includes the final flush, and the
  topic's end offsets are checked to hold every record.

The target line compares the ``replay`` row with 100,000 events/s.

The log (plain events from :func:`streaming.kafka.generator.generate`, one per line,
the demo's mix of defects) is written once to
``benchmarks/results/replay-<count>-seed<seed>.jsonl`` and reused. Without
``--bootstrap-servers`` a local KRaft broker is started in a temporary folder
on a free port and stopped at the end. Results go to
``benchmarks/results/replay.json``; every figure is measured in the run that
wrote it. The broker shares the machine's cores with the replay: the JSON
records the load average before and after, and CPU seconds per event.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_replay.py`` without an install
    sys.path.append(str(_REPO_ROOT))

from benchmarks.bench_produce import end_offsets, machine, table  # noqa: E402
from streaming.kafka.admin import producer_settings  # noqa: E402
from streaming.kafka.generator import GeneratorConfig, generate  # noqa: E402
from streaming.logs.reader import LogReader, ReadOptions  # noqa: E402
from streaming.logs.replay import ReplayConfig, replay  # noqa: E402

RESULTS = _HERE / "results"
START = _dt.datetime(2026, 11, 23, 10, 0, tzinfo=_dt.UTC)
READ = ReadOptions(key_field="user_id")
TARGET = 100_000  # events/s for ``replay`` as fast as possible


def ensure_log(count: int, seed: int) -> tuple[Path, float | None]:
    """The log of ``count`` lines, written unless already there; seconds spent writing."""
    path = RESULTS / f"replay-{count}-seed{seed}.jsonl"
    if path.exists():
        return path, None
    RESULTS.mkdir(parents=True, exist_ok=True)
    cfg = GeneratorConfig(seed=seed, start_time=START, out_of_order=0.05, late=0.002,
                          malformed=0.001)
    part = path.with_name(path.name + ".part")
    t0 = time.perf_counter()
    written = 0
    with open(part, "wb", buffering=1 << 20) as f:
        for r in generate(cfg, None):
            if not r.value:  # a null or empty value is no line of a log
                continue
            f.write(r.value + b"\n")
            written += 1
            if written == count:
                break
    part.rename(path)  # complete, so a later run may reuse it
    return path, time.perf_counter() - t0


def _row(key: str, events: int, nbytes: int, wall: float, cpu: float, note: str,
         **extra: Any) -> dict[str, Any]:
    return {"key": key, "events": events, "bytes": nbytes, "seconds": wall, "cpu_seconds": cpu,
            "events_per_s": events / wall, "mb_per_s": nbytes / wall / 1e6,
            "cpu_us_per_event": cpu / events * 1e6, "note": note, **extra}


def bench_read(path: Path) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    n = nbytes = 0
    with LogReader(path, READ) as reader:
        for rec in reader:
            n += 1
            nbytes += len(rec.value or b"") + len(rec.key or b"")
    return _row("read", n, nbytes, time.perf_counter() - t0, time.process_time() - c0,
                "LogReader, key_field=user_id", bad=reader.bad.counts)


def _records(path: Path, count: int) -> list[tuple[bytes | None, bytes | None, int]]:
    """The first ``count`` records of the log as (key, value, line), read before timing."""
    records = []
    with LogReader(path, READ) as reader:
        for rec in reader:
            records.append((rec.key, rec.value, rec.line))
            if len(records) == count:
                break
    return records


def bench_send(bootstrap: str, path: Path, count: int) -> dict[str, Any]:
    from kafka import KafkaAdminClient, KafkaProducer

    from streaming.kafka.admin import ensure_topic
    from streaming.logs.pacing import Partitioner

    records = _records(path, count)
    topic = f"bench-send-{int(time.time() * 1000)}"
    part = Partitioner(ensure_topic(KafkaAdminClient, bootstrap, topic, 2, 30.0))
    producer = KafkaProducer(bootstrap_servers=bootstrap, **producer_settings())
    try:
        producer.partitions_for(topic)
        send = producer.send
        t0, c0 = time.perf_counter(), time.process_time()
        for key, value, line in records:
            send(topic, key=key, value=value, partition=part(key, line))
        producer.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        producer.close(timeout=5)
    nbytes = sum(len(k or b"") + len(v or b"") for k, v, _ in records)
    return _row("send", len(records), nbytes, wall, cpu,
                "KafkaProducer.send() + flush, records in memory", topic=topic,
                compression=producer_settings()["compression_type"] or "none")


def bench_batch(bootstrap: str, path: Path, count: int) -> dict[str, Any]:
    from kafka import KafkaAdminClient

    from streaming.kafka.admin import ensure_topic
    from streaming.kafka.batch_producer import BatchProducer
    from streaming.logs.pacing import Partitioner

    records = _records(path, count)
    topic = f"bench-batch-{int(time.time() * 1000)}"
    n_parts = ensure_topic(KafkaAdminClient, bootstrap, topic, 2, 30.0)
    part = Partitioner(n_parts)
    settings = producer_settings()
    producer = BatchProducer.connect(bootstrap, topic, n_parts,
                                     batch_size=settings["batch_size"],
                                     linger=settings["linger_ms"] / 1000,
                                     compression=settings["compression_type"],
                                     delivery_timeout=settings["delivery_timeout_ms"] / 1000)
    try:
        targets = [(part(key, line), key, value) for key, value, line in records]
        send = producer.send
        t0, c0 = time.perf_counter(), time.process_time()
        for p, key, value in targets:
            send(p, key, value)
        delivered = producer.flush(settings["delivery_timeout_ms"] / 1000)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        producer.close(timeout=5)
    nbytes = sum(len(k or b"") + len(v or b"") for k, v, _ in records)
    return _row("batch", len(records), nbytes, wall, cpu,
                "BatchProducer.send() + flush, records in memory", topic=topic,
                delivered=delivered, requests=producer.requests, retries=producer.retries,
                compression=settings["compression_type"] or "none")


def bench_replay(bootstrap: str, path: Path, state_dir: Path) -> dict[str, Any]:
    topic = f"bench-replay-{int(time.time() * 1000)}"
    config = ReplayConfig(topic=topic, bootstrap_servers=bootstrap, read=READ, partitions=2,
                          state_path=state_dir / "bench.replay-state.json", restart=True)
    c0 = time.process_time()
    stats = replay([path], config)
    cpu = time.process_time() - c0
    stored = end_offsets(bootstrap, topic)
    return _row("replay", stats.records, stats.bytes, stats.elapsed_seconds, cpu,
                "replay as fast as possible, 2 partitions, checkpoints every 2 s",
                failed=stats.failed, stored=stored, all_stored=stored == stats.records,
                topic=topic, bad={k: v["count"] for k, v in stats.logs[0]["bad"].items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5_000_000, help="events (default: %(default)s)")
    ap.add_argument("--send-count", type=int, default=500_000,
                    help="records for the send() row (default: %(default)s)")
    ap.add_argument("--bootstrap-servers", default=None,
                    help="an existing broker (default: start a local one)")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    path, gen_seconds = ensure_log(args.count, args.seed)
    print(f"log: {path.name}, {path.stat().st_size / 1e6:,.0f} MB"
          + (f" (written in {gen_seconds:.0f} s)" if gen_seconds else " (reused)"), flush=True)
    report: dict[str, Any] = {"benchmark": "replay", "schema_version": 1,
                              "created_utc": _dt.datetime.now(_dt.UTC).isoformat(),
                              "count": args.count, "seed": args.seed,
                              "log": {"name": path.name, "bytes": path.stat().st_size},
                              "machine": machine()}
    rows = [bench_read(path)]
    print(table(rows, key_width=8), flush=True)

    broker = None
    home = Path(tempfile.mkdtemp(prefix="streamsketch-bench-replay-"))
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        from streaming.kafka.broker import LocalKafka, free_port

        broker = LocalKafka(home / "kafka", port=free_port(), heap="1g")
        print(f"starting a local broker on {broker.bootstrap_servers} ...", flush=True)
        broker.start(timeout=120)
        bootstrap = broker.bootstrap_servers
    report["broker"] = "local (started by the benchmark)" if broker else "given"
    try:
        in_memory = min(args.send_count, args.count)
        for run in (lambda: bench_send(bootstrap, path, in_memory),
                    lambda: bench_batch(bootstrap, path, in_memory),
                    lambda: bench_replay(bootstrap, path, home)):
            rows.append(run())
            print(table(rows[-1:], key_width=8).splitlines()[-1], flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(home, ignore_errors=True)

    report["rows"] = rows
    replayed = next(r for r in rows if r["key"] == "replay")
    read = next(r for r in rows if r["key"] == "read")
    report["target"] = {"target": "replay >= 100,000 events/s",
                        "status": "PASS" if replayed["events_per_s"] >= TARGET else "MISS",
                        "events_per_s": replayed["events_per_s"],
                        "replay_over_read": replayed["events_per_s"] / read["events_per_s"]}
    report["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["elapsed_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(table(rows, key_width=8))
    t = report["target"]
    print(f"\n{t['target']}: {t['status']} ({t['events_per_s']:,.0f} events/s, "
          f"{t['replay_over_read']:.2f}x the reader alone)")
    print(f"load average at start {report['machine']['loadavg_at_start']}, "
          f"at end {report['loadavg_at_end']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
