"""How fast can the required components go? The pipeline's ceiling, stage by stage.

    python -m benchmarks.bench_ceiling [--events 1000000] [--rounds 2]
        [--stages source,parse,aggregates,delta,pipeline,jvm]
        [--configs project,trigger1m,unlimited,...] [--driver-memory 3g]
        [--bootstrap-servers HOST:PORT [--topic NAME]]

Over one pre-loaded topic (the clickstream generator with bench_pipeline's settings:
seed 1, 5 % out of order, 0.1 % late, 0.1 % malformed, 2 partitions), every stage is
one ``--available-now`` query from the earliest offset with a fresh checkpoint, timed
from start to termination (events/s = records read / wall seconds):

``source``      Spark's Kafka source, every column, to the ``noop`` sink;
``parse``       + the pipeline's parse (``from_json`` with the spec's schema, the
                quarantine reason, the event-time column, the watermark) to ``noop``;
``aggregates``  + both windows' exact aggregates of the valid rows (the pipeline's
                per-batch ``groupBy``), collected to the driver in ``foreachBatch``;
``delta``       the same aggregates appended to a Delta table instead: one commit per
                batch, idempotent by ``txnAppId``/``txnVersion``;
``pipeline``    the full pipeline (:class:`streaming.pipeline.Pipeline`);
``jvm``         the full pipeline with Spark's own sketch functions
                (``benchmarks.bench_pipeline.JvmSketchPipeline``).

Each stage runs under each tuning config of ``--configs``; a config is names joined by
``+`` (e.g. ``trigger1m+shuffle1``), see :data:`TUNINGS`. ``project`` is the project's
own settings (``streaming/session.py``, the spec's 200,000 offsets per trigger). Settings
that need a new JVM (driver memory) are a command-line option: run twice to compare.
A warm-up query runs first, and the order of stage x config alternates between rounds;
every round is reported, with the best per row.

For the two pipelines, each batch's phases (``BatchSummary.phase_s``) are printed: Kafka
read + parse (``read``), ``aggregates``, ``sketches`` (partials through mapInArrow), the
Delta commits (``quarantine``, ``write_aggregates``, ``write_sketches``), the rest of the
``foreachBatch`` call (``other``) and the query's own per-batch work outside it (offset
and commit logs, planning: ``trigger - batch``).

The machine may be shared, so next to the wall-clock events/s every run records the
load average at its start and the CPU seconds of this process and its children (Spark's
JVM, its Python workers, a broker started here; an outside broker with ``--broker-pid``):
``cores`` is how many cores the run kept busy on average, and ``all-core bound`` is
events per CPU second times the machine's cores, what the same work would reach with
every core to itself and perfect parallelism (an upper bound, not a measurement).

To try tunings without re-loading the topic, keep a broker running and pass
``--bootstrap-servers`` and ``--topic`` of a topic loaded with the same generator settings.

Figures are printed and written to ``benchmarks/results/ceiling.json``; nothing here
fails on a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streaming import aggregates as agg
from streaming.generator import GeneratorConfig, produce
from streaming.kafka_broker import LocalKafka, free_port
from streaming.parse import parse_records, with_watermark
from streaming.pipeline import Pipeline
from streaming.session import SparkOptions, build_session
from streaming.source import kafka_options
from streaming.spec import default_spec_path, load_spec

RESULTS = Path(__file__).parent / "results"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and its reaped children), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[1] = ppid; [11..14] = utime, stime, cutime, cstime (clock ticks)
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK)
    return table


def cpu_seconds(roots: list[int]) -> float:
    """CPU time used so far by ``roots`` and all their descendants (Linux; 0 elsewhere)."""
    if not os.path.isdir("/proc"):
        return 0.0
    table = _proc_table()
    wanted = set(roots)
    total = 0.0
    for pid, (_, cpu) in table.items():
        p, seen = pid, 0
        while p and seen < 64:
            if p in wanted:
                total += cpu
                break
            p = table.get(p, (0, 0.0))[0]
            seen += 1
    return total


@dataclass(frozen=True)
class Tuning:
    """One knob: offsets per trigger (0 = unlimited), Kafka source options, Spark SQL conf."""

    per_trigger: int | None = None
    source: dict[str, str] = field(default_factory=dict)
    conf: dict[str, str] = field(default_factory=dict)


#: the tuning knobs a config combines (``+``); conf values are set on the running
#: session before the query starts and restored after it
TUNINGS: dict[str, Tuning] = {
    "project": Tuning(),
    "trigger1m": Tuning(per_trigger=1_000_000),
    "unlimited": Tuning(per_trigger=0),
    "minpart1": Tuning(source={"minPartitions": "1"}),
    "minpart4": Tuning(source={"minPartitions": "4"}),
    "minpart8": Tuning(source={"minPartitions": "8"}),
    # bigger consumer fetches: fewer round trips to the broker per batch
    "fetch": Tuning(source={"kafka.max.poll.records": "20000",
                            "kafka.max.partition.fetch.bytes": str(16 << 20),
                            "kafka.fetch.max.bytes": str(64 << 20)}),
    "shuffle1": Tuning(conf={"spark.sql.shuffle.partitions": "1"}),
    "shuffle4": Tuning(conf={"spark.sql.shuffle.partitions": "4"}),
    "shuffle8": Tuning(conf={"spark.sql.shuffle.partitions": "8"}),
    "aqe": Tuning(conf={"spark.sql.adaptive.enabled": "true"}),
    "arrow10k": Tuning(conf={"spark.sql.execution.arrow.maxRecordsPerBatch": "10000"}),
    "arrow1m": Tuning(conf={"spark.sql.execution.arrow.maxRecordsPerBatch": "1000000"}),
    # Delta: no checksum file and no stats collection on the write path
    "deltalean": Tuning(conf={"spark.databricks.delta.writeChecksumFile.enabled": "false",
                              "spark.databricks.delta.stats.collect": "false"}),
}

STAGES = ("source", "parse", "aggregates", "delta", "pipeline", "jvm")


def combine(config: str) -> Tuning:
    per_trigger, source, conf = None, {}, {}
    for name in config.split("+"):
        if name not in TUNINGS:
            raise SystemExit(f"unknown tuning {name!r}; known: {', '.join(TUNINGS)}")
        t = TUNINGS[name]
        per_trigger = t.per_trigger if t.per_trigger is not None else per_trigger
        source.update(t.source)
        conf.update(t.conf)
    return Tuning(per_trigger, source, conf)


def make_spec(topic: str, bootstrap: str, root: Path, per_trigger: int | None):
    spec = load_spec(default_spec_path())
    source = spec.source
    if per_trigger is not None:
        source = replace(source, max_offsets_per_trigger=per_trigger or None)
    return replace(spec,
                   source=replace(source, topic=topic, bootstrap_servers=bootstrap),
                   sink=replace(spec.sink, path=str(root / "delta"),
                                checkpoint=str(root / "ck")))


def raw(spark, spec, extra: dict[str, str]):
    """The pipeline's raw Kafka stream (same options and columns), plus ``extra`` options."""
    from pyspark.sql import functions as F

    reader = spark.readStream.format("kafka")
    for k, v in {**kafka_options(spec), **extra}.items():
        reader = reader.option(k, v)
    return reader.load().select(
        F.col("key").alias("_key"), F.col("value").alias("_value"),
        F.col("topic").alias("_topic"), F.col("partition").alias("_partition"),
        F.col("offset").alias("_offset"), F.col("timestamp").alias("_source_ts"))


def parsed(spark, spec, extra):
    return with_watermark(parse_records(raw(spark, spec, extra), spec), spec)


def _offsets(value) -> dict[str, int]:
    if isinstance(value, str):
        value = json.loads(value)
    return {f"{t}/{p}": int(o) for t, parts in (value or {}).items() for p, o in parts.items()}


def _progress(query) -> list[dict]:
    """Per batch: records in its offset range (a plan that scans its input twice counts
    it twice in ``numInputRows``), the trigger's and the batch's (sink's) seconds."""
    out = []
    for p in query.recentProgress:
        rows = 0
        for src in p.get("sources") or []:
            start, end = _offsets(src.get("startOffset")), _offsets(src.get("endOffset"))
            rows += sum(o - start.get(k, 0) for k, o in end.items())
        if rows == 0:
            continue
        d = p.get("durationMs") or {}
        out.append({"rows": rows, "rows_scanned": int(p.get("numInputRows") or 0),
                    "trigger_s": d.get("triggerExecution", 0) / 1000,
                    "batch_s": d.get("addBatch", 0) / 1000})
    return out


def run_query(spark, spec, stage: str, extra: dict[str, str]) -> dict:
    """One stage as an available-now query; events and per-batch durations from its progress."""
    from pyspark.sql import functions as F

    ck = Path(spec.sink.checkpoint)
    df = raw(spark, spec, extra) if stage == "source" else parsed(spark, spec, extra)
    writer = df.writeStream.trigger(availableNow=True).option("checkpointLocation", str(ck))
    if stage in ("source", "parse"):
        writer = writer.format("noop")
    else:
        target = str(Path(spec.sink.path) / "aggregates")

        def batch(bdf, batch_id):
            # like the pipeline: the batch is cached once, then each window reads the cache
            valid = bdf.where(F.col("_reason").isNull()).persist()
            try:
                result = agg.batch_aggregates(valid, spec)
                if stage == "aggregates":
                    result.collect()
                else:
                    (result.write.format("delta").mode("append")
                     .option("txnAppId", "bench-ceiling").option("txnVersion", batch_id)
                     .save(target))
            finally:
                valid.unpersist()

        writer = writer.foreachBatch(batch)
    t0 = time.monotonic()
    query = writer.start()
    query.awaitTermination()
    seconds = time.monotonic() - t0
    batches = _progress(query)
    events = sum(b["rows"] for b in batches)
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds,
            "batches": len(batches), "per_batch": batches}


PHASES = ("read", "quarantine", "aggregates", "write_aggregates", "sketches", "write_sketches")


def run_pipeline(spark, spec, stage: str, extra: dict[str, str]) -> dict:
    base: type[Pipeline] = Pipeline
    if stage == "jvm":
        from benchmarks.bench_pipeline import JvmSketchPipeline
        base = JvmSketchPipeline

    class Tuned(base):  # type: ignore[misc, valid-type]
        def stream(self):
            return parsed(self.spark, self.spec, extra)

    summaries = []
    pipeline = Tuned(spark, spec, on_batch=summaries.append)
    t0 = time.monotonic()
    pipeline.run(available_now=True)
    seconds = time.monotonic() - t0
    progress = _progress(pipeline.query) if pipeline.query is not None else []
    per_batch = []
    for i, s in enumerate(summaries):
        phases = {k: s.phase_s.get(k, 0.0) for k in PHASES}
        phases["other"] = s.duration_s - sum(phases.values())
        row: dict[str, Any] = {"batch_id": s.batch_id, "rows": s.rows, "batch_s": s.duration_s,
                               "phase_s": phases}
        if i < len(progress) and progress[i]["rows"] == s.rows:
            row["trigger_s"] = progress[i]["trigger_s"]
            row["outside_batch_s"] = progress[i]["trigger_s"] - s.duration_s
        per_batch.append(row)
    events = sum(s.rows for s in summaries)
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds,
            "batches": len(summaries), "per_batch": per_batch}


def run_stage(spark, stage: str, config: str, topic: str, bootstrap: str, root: Path,
              cpu_roots: list[int]) -> dict:
    tuning = combine(config)
    spec = make_spec(topic, bootstrap, root, tuning.per_trigger)
    saved = {k: spark.conf.get(k, None) for k in tuning.conf}
    for k, v in tuning.conf.items():
        spark.conf.set(k, v)
    load = os.getloadavg()[0]
    cpu0 = cpu_seconds(cpu_roots)
    try:
        if stage in ("pipeline", "jvm"):
            out = run_pipeline(spark, spec, stage, tuning.source)
        else:
            out = run_query(spark, spec, stage, tuning.source)
    finally:
        for k, v in saved.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
        shutil.rmtree(root, ignore_errors=True)
    cpu = cpu_seconds(cpu_roots) - cpu0
    out.update({"stage": stage, "config": config, "load1_at_start": load,
                "per_trigger": spec.source.max_offsets_per_trigger, "cpu_s": cpu,
                # cores this run kept busy on average, and what the same CPU work would
                # give on all cores of the machine with nothing else running (a bound)
                "cores_used": cpu / out["seconds"],
                "events_per_cpu_s": out["events"] / cpu if cpu else None,
                "events_per_s_all_cores_bound": (out["events"] / cpu * (os.cpu_count() or 1)
                                                 if cpu else None)})
    return out


def _fmt_phases(b: dict) -> str:
    ph = " ".join(f"{k}={v:.2f}" for k, v in b["phase_s"].items())
    tail = f" trigger-batch={b['outside_batch_s']:.2f}" if "outside_batch_s" in b else ""
    return f"    batch {b['batch_id']}: {b['rows']:,} rows in {b['batch_s']:.2f} s: {ph}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--configs", default="project,trigger1m",
                    help="comma list of configs; a config joins tunings with '+' "
                         f"({', '.join(TUNINGS)})")
    ap.add_argument("--pipeline-configs", default=None,
                    help="configs for the pipeline and jvm stages (default: --configs)")
    ap.add_argument("--driver-memory", default=SparkOptions().driver_memory)
    ap.add_argument("--bootstrap-servers")
    ap.add_argument("--topic", help="an existing, pre-loaded topic (with --bootstrap-servers)")
    ap.add_argument("--broker-pid", type=int,
                    help="pid of the --bootstrap-servers broker, to count its CPU time too")
    ap.add_argument("--out", type=Path, default=RESULTS / "ceiling.json")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    for s in stages:
        if s not in STAGES:
            raise SystemExit(f"unknown stage {s!r}; known: {', '.join(STAGES)}")
    configs = [c for c in args.configs.split(",") if c]
    pipe_configs = ([c for c in args.pipeline_configs.split(",") if c]
                    if args.pipeline_configs is not None else configs)
    for c in set(configs) | set(pipe_configs):
        combine(c)
    runs = [(s, c) for s in stages for c in (pipe_configs if s in ("pipeline", "jvm")
                                             else configs)]

    work = Path(tempfile.mkdtemp(prefix="streamsketch-ceiling-"))
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        broker = LocalKafka(work / "kafka", port=free_port())
        broker.start()
        bootstrap = broker.bootstrap_servers
    # CPU time of this process and its children (Spark's JVM, its Python workers, a broker
    # started here), and of an outside broker if its pid is given
    cpu_roots = [os.getpid()] + ([args.broker_pid] if args.broker_pid else [])
    try:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_at_start": os.getloadavg()},
            "driver_memory": args.driver_memory, "runs": []}
        topic = args.topic
        if topic is None:
            topic = f"ceiling-{os.getpid()}"
            t0 = time.monotonic()
            stats = produce(bootstrap, topic, GeneratorConfig(
                seed=1, rate=2_000, start_time=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
                out_of_order=0.05, late=0.001, malformed=0.001), count=args.events)
            results["preload"] = {"events": stats.sent, "seconds": time.monotonic() - t0}
            print(f"pre-loaded {stats.sent:,} events into {topic} in "
                  f"{results['preload']['seconds']:.1f} s", flush=True)
        results["topic"] = topic
        spark = build_session(SparkOptions(app_name="streamsketch-ceiling",
                                           driver_memory=args.driver_memory))
        import pyspark
        results["machine"]["pyspark"] = pyspark.__version__
        results["project_conf"] = {k: spark.conf.get(k, None) for k in (
            "spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled",
            "spark.sql.execution.arrow.maxRecordsPerBatch", "spark.driver.memory")}
        print(f"session: {json.dumps(results['project_conf'])}", flush=True)
        # Warm the JVM (JIT, class loading) and the Python workers first.
        for stage in ("parse", "pipeline"):
            run_stage(spark, stage, "trigger1m", topic, bootstrap, work / "warmup", cpu_roots)
        print(f"{'stage':<11} {'config':<28} {'events/s':>10} {'events':>10} {'s':>6} "
              f"{'batches':>7} {'load1':>5} {'cpu s':>6} {'cores':>5} {'ev/cpu-s':>9} "
              f"{'all-core bound':>14}", flush=True)
        for rnd in range(args.rounds):
            for stage, config in (runs if rnd % 2 == 0 else runs[::-1]):
                out = run_stage(spark, stage, config, topic, bootstrap, work / "run", cpu_roots)
                out["round"] = rnd
                results["runs"].append(out)
                print(f"{stage:<11} {config:<28} {out['events_per_s']:>10,.0f} "
                      f"{out['events']:>10,} {out['seconds']:>6.1f} {out['batches']:>7} "
                      f"{out['load1_at_start']:>5.2f} {out['cpu_s']:>6.1f} "
                      f"{out['cores_used']:>5.2f} {out['events_per_cpu_s'] or 0:>9,.0f} "
                      f"{out['events_per_s_all_cores_bound'] or 0:>14,.0f}", flush=True)
                if stage in ("pipeline", "jvm"):
                    for b in out["per_batch"]:
                        print(_fmt_phases(b), flush=True)
        best: dict[str, dict] = {}
        for r in results["runs"]:
            key = f"{r['stage']} {r['config']}"
            if key not in best or r["events_per_s"] > best[key]["events_per_s"]:
                best[key] = r
        results["best"] = {k: {"events_per_s": v["events_per_s"], "round": v["round"],
                               "events_per_s_all_cores_bound":
                                   v["events_per_s_all_cores_bound"]}
                           for k, v in best.items()}
        print("best of rounds (events/s; bound if the run had every core to itself):")
        for k, v in best.items():
            print(f"  {k:<40} {v['events_per_s']:>10,.0f}   bound "
                  f"{v['events_per_s_all_cores_bound'] or 0:>10,.0f}")
        results["machine"]["loadavg_at_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
