"""``streamsketch demo``: the whole pipeline on one machine, with a live summary.

Starts the embedded Kafka broker (unless one already runs in the home folder),
the clickstream generator at a steady rate in a child process, and the pipeline
with the bundled spec, all state under one folder. Its topic is its own
(:data:`DEMO_TOPIC`), so the README's tour on the same broker starts clean after it.
Ctrl-C (or ``--duration``) stops the generator, the query and the broker it started,
in that order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from streaming.spec.model import Spec, default_spec_path, load_spec

#: the demo's own topic: the README's tour produces to the bundled spec's (``clickstream``)
#: on the same broker, and the demo's real-time events there would make the tour's late
DEMO_TOPIC = "clickstream-demo"


def demo_spec(home: Path, bootstrap: str) -> Spec:
    spec = load_spec(default_spec_path())
    data = home / "demo"
    return replace(spec,
                   source=replace(spec.source, bootstrap_servers=bootstrap, topic=DEMO_TOPIC,
                                  max_offsets_per_trigger=100_000),
                   sink=replace(spec.sink, path=str(data / "delta"),
                                checkpoint=str(data / "checkpoints")))


def query_hint(spec: Spec) -> str:
    """The commands that ask about the demo's own tables (printed at start and on exit)."""
    from streaming.query.questions import shown

    tables = shown(Path(spec.sink.path))
    return (f"ask about this data: streamsketch query distinct --window minutely "
            f"--tables {tables}\n  (any query; or streamsketch serve --tables {tables} "
            "for the HTTP API)")


def _summary(s: Any) -> str:
    from streaming.cli.common import batch_line

    lines = [batch_line(s)]
    # this batch's events of the newest minute it touched
    latest: dict[str, tuple[int, Any]] = {
        sketch: (start, value) for (window, sketch), (start, _, value) in s.views.items()
        if window == "minutely"}
    if "users" in latest:
        hll = latest["users"][1]
        lines.append(f"  latest minute: ~{hll.estimate():,.0f} distinct users "
                     f"({hll.lower_bound(2):,.0f}..{hll.upper_bound(2):,.0f})")
    if "pages" in latest:
        top = ", ".join(f"{item} ({count})" for item, count in latest["pages"][1].top(3))
        lines.append(f"  top pages: {top}")
    return "\n".join(lines)


def run_demo(*, home: Path, port: int, rate: float, duration: float | None) -> int:
    from streaming.cli.signals import StopSignals, jvm_ignores_stop_signals
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.broker import LocalKafka
    from streaming.runtime.session import SparkOptions, build_session

    home = home.expanduser().resolve()
    broker = LocalKafka(home / "kafka", port=port)
    status = broker.status()
    started_broker = False
    if not status.running:
        print(f"starting Kafka on 127.0.0.1:{port} (logs: {broker.log_file})", flush=True)
        broker.start()
        started_broker = True
    bootstrap = broker.status().bootstrap_servers or broker.bootstrap_servers
    spec = demo_spec(home, bootstrap)
    print(f"demo folder: {home / 'demo'}  (Delta tables in delta/, checkpoints in "
          "checkpoints/)", flush=True)
    print(query_hint(spec), flush=True)
    log = (home / "demo" / "produce.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    producer = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "produce", "--bootstrap-servers", bootstrap,
         "--topic", str(spec.source.topic), "--rate", str(rate), "--out-of-order", "0.05",
         "--late", "0.002", "--malformed", "0.001"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    pipeline = None
    server = None
    try:
        from streaming.cli.common import serve_metrics

        spark_log = home / "demo" / "spark.log"
        print(f"Spark's own log lines go to {spark_log}", flush=True)
        with jvm_ignores_stop_signals():
            spark = build_session(SparkOptions(app_name="streamsketch-demo",
                                               log_file=spark_log))
        pipeline = Pipeline(spark, spec, on_batch=lambda s: print(_summary(s), flush=True))
        server = serve_metrics(spark, pipeline, spec)
        with StopSignals() as stop:
            query = pipeline.start()
            print(f"pipeline running (trigger {spec.sink.trigger_s:g} s); Ctrl-C stops",
                  flush=True)
            deadline = time.monotonic() + duration if duration else None
            while query.isActive and not pipeline.failed and not stop.event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if producer.poll() is not None:
                    print(f"the generator exited with code {producer.returncode}; see {log}")
                    break
                query.awaitTermination(1.0)
            if stop.event.is_set():
                print(f"\nstopping once the running batch has committed ({stop.name} again "
                      "to stop now) ...", flush=True)
            if query.exception() is not None:
                print(f"the query failed: {query.exception()}", file=sys.stderr)
                return 1
            pipeline.stop()
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C (or one during start-up)
        print("\nstopping now ...", flush=True)
        if pipeline is not None:
            pipeline.stop(grace_s=0.0)
        return 0
    finally:
        if producer.poll() is None:
            os.killpg(producer.pid, signal.SIGINT)
            try:
                producer.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(producer.pid, signal.SIGKILL)
        if pipeline is not None:
            pipeline.stop()
        if server is not None:
            server.shutdown()
        if started_broker:
            broker.stop()
        print("stopped", flush=True)
        print(query_hint(spec), flush=True)
