"""Pipeline subcommands: ``run``, ``query``, ``demo`` (and ``produce`` from its module)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from streaming.cli.common import (
    Phases,
    local_dir,
    log_batch,
    serve_metrics,
    spark_args,
    spark_session,
)
from streaming.cli.common import info as _info
from streaming.cli.common import port as _port
from streaming.cli.signals import StopSignals, jvm_ignores_stop_signals
from streaming.errors import ConfigError
from streaming.runtime.home import default_home


def _spec_arg(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    from streaming.spec.model import default_spec_path

    p.add_argument("--spec", type=Path, default=None if required else default_spec_path(),
                   required=required,
                   help="pipeline spec (TOML); default: the bundled clickstream spec")


def jvm_size(text: str) -> str:
    """A JVM memory size as Spark takes it: ``512m``, ``1g``, ``2G``."""
    if not re.fullmatch(r"[1-9][0-9]*[kKmMgGtT]", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JVM memory size such as 512m or 2g")
    return text.strip().lower()


# -- run -------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    from streaming.engine.pipeline import Pipeline
    from streaming.spec.model import load_spec

    phases = Phases(args.verbose)
    spec = load_spec(args.spec)
    if spec.source.kind == "files":
        from streaming.cli.backfill import run_files_spec

        return run_files_spec(args, _info)
    phases.mark("Python started, spec read")
    with jvm_ignores_stop_signals():
        spark = spark_session(args, spec)
    phases.mark("JVM and Spark session")
    committed: list[int] = []

    def on_batch(s: Any) -> None:
        if not committed:
            phases.mark("first batch planned (Kafka offsets, offset log)",
                        took=time.monotonic() - phases.last - s.duration_s)
            phases.mark(f"first batch ran ({s.rows} rows)", took=s.duration_s)
        committed.append(s.batch_id)
        log_batch(_info, s)
        if args.verbose:
            _info(f"batch {s.batch_id} phases: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in s.phase_s.items()))

    pipeline = Pipeline(spark, spec, on_batch=on_batch)
    server = serve_metrics(spark, pipeline, spec)
    from pyspark.errors import PySparkException, StreamingQueryException

    try:
        with StopSignals() as term:
            pipeline.prepare()
            _info(f"tables under {spec.sink.path}, checkpoint {spec.sink.checkpoint}")
            phases.mark("checkpoint and tables checked")
            terminated = term.event.is_set()
            try:
                if not terminated:
                    query = pipeline.start(available_now=args.available_now)
                    phases.mark("query started")
                    # wake up each second to see a signal (its handler only sets a flag)
                    while not (terminated := term.event.is_set()):
                        if query.awaitTermination(1.0) or pipeline.failed:
                            break
                    phases.mark("query ended")
            finally:
                if terminated:
                    again = " (Ctrl-C again to stop now)" if term.signum == signal.SIGINT else ""
                    _info(f"streamsketch: {term.name}: stopping once the running batch has "
                          f"committed{again} ...")
                pipeline.stop()
                phases.mark("stopped (closed windows compacted)")
        if terminated:
            last = f"batch {committed[-1]}" if committed else "no batch"
            _info(f"streamsketch: stopped on {term.name} ({last} committed by this run); "
                  "a restart resumes from the checkpoint")
            return 128 + int(term.signum or signal.SIGTERM)
    except KeyboardInterrupt:  # a second Ctrl-C: the running batch re-runs on restart
        _info("streamsketch: stopping now; the batch in progress re-runs on restart")
        pipeline.stop(grace_s=0.0)
        return 130
    except (StreamingQueryException, PySparkException) as exc:
        _info(f"streamsketch: the query failed: {query_failure(exc)}")
        return 1
    finally:
        if server is not None:
            server.shutdown()
            phases.mark("metrics server stopped")
    return 0


#: a JVM exception line, as py4j quotes it inside a foreachBatch failure
_JVM_EXCEPTION = re.compile(r"^(?::\s*|Caused by:\s*)?(?:[A-Za-z_$][\w$]*\.)+"
                            r"([A-Z][\w$]*(?:Exception|Error)): (.*)$")


#: messages of JVM exceptions that only wrap the real cause
_WRAPPERS = ("Exception thrown in awaitResult",)


def _jvm_cause(text: str) -> str | None:
    """The first JVM exception (not py4j's wrapper) of a failure raised in foreachBatch.

    An error while the batch function reads its DataFrame (e.g. Kafka data loss)
    reaches the query as "An exception was raised by the Python Proxy" followed by
    a Python traceback and the JVM exception it wraps; that exception, with its
    message lines joined, is the useful line.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _JVM_EXCEPTION.match(line.strip())
        if m is None or line.strip().lstrip(": ").startswith(("py4j.", "org.apache.spark.api.")):
            continue
        if m.group(2).strip().startswith(_WRAPPERS):
            continue  # a wrapper whose cause follows ("Caused by: ...")
        message = [m.group(2).strip()]
        for more in lines[i + 1:]:
            more = more.strip()
            if not more or more.startswith(("at ", "...", "Caused by:")):
                break
            message.append(more)
        return f"{m.group(1)}: {' '.join(message)}"
    return None


#: a Python exception line, as a traceback ends (``OSError: ...``, ``pkg.mod.SomeError: ...``)
_PY_EXCEPTION = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.*)$")


def _python_cause(text: str) -> str | None:
    """The exception the batch function raised itself (the last one its traceback names)."""
    found = None
    for line in text.splitlines():
        m = _PY_EXCEPTION.match(line.strip())
        if m is not None and not m.group(1).startswith(("py4j.", "pyspark.")):
            found = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
    return found


def query_failure(exc: BaseException) -> str:
    """The first meaningful line of a Spark streaming failure (the plan dump is left out)."""
    text = str(exc)
    if "Python Proxy" in text:
        cause = _jvm_cause(text) or _python_cause(text)
        if cause is not None:
            return cause[:500]
    for marker in ("Reason: ", "terminated with exception: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if not ln.startswith(("File ", "at ", "^", "Traceback"))]
    return (tail[-1] if tail and "Error" in tail[-1] else lines[0] if lines else text)[:500]


# -- query -----------------------------------------------------------------------
def _cmd_query(args: argparse.Namespace) -> int:
    from streaming.query import questions as q

    spec = q.load_query_spec(args.spec, args.tables,
                             table="aggregates" if args.what == "aggregate" else "sketches")
    question = q.question(spec, args.what, window=args.window, start=args.start, end=args.end,
                          groups=args.group, sketch=args.sketch, k=args.k, value=args.value,
                          vs_start=args.vs_from, vs_end=args.vs_to, qs=args.qs,
                          vs_groups=args.vs_group)
    if args.engine == "spark":
        source: Any = q.SparkSource(spark_session(args), spec)
    else:
        source = q.DeltaSource(spec)
    result = q.ask(source, spec, question)
    result = {"query": args.what, "window": question.sel.window.name, "from": args.start,
              "to": args.end, "group": question.sel.groups, **result}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(_render(result))
    return 0


def _render(r: dict[str, Any]) -> str:
    what = r["query"]
    if what == "distinct":
        return (f"distinct ≈ {r['estimate']:,.0f}  (95%: {r['lower_bound']:,.0f} .. "
                f"{r['upper_bound']:,.0f}; {r['windows_merged']} sketches merged)")
    if what == "topk":
        lines = [f"top {len(r['top'])} of {r['total']:,} (each count may be over by at most "
                 f"{r['error_bound']:,.1f}):"]
        lines += [f"  {i + 1:>3}. {t['item']}  {t['count']:,}" for i, t in enumerate(r["top"])]
        return "\n".join(lines)
    if what == "contains":
        verdict = "probably present" if r["probably_present"] else "definitely absent"
        return f"{r['value']}: {verdict} (false-positive rate {r['expected_fpr']:.4%})"
    if what == "similarity":
        return f"jaccard ≈ {r['jaccard']:.4f}"
    if what == "overlap":
        names = {"a": "A", "b": "B", "union": "A or B", "intersection": "A and B",
                 "a_not_b": "A not B", "b_not_a": "B not A"}
        return "\n".join(f"{label:<8} ≈ {r[key]['estimate']:,.0f}  (95%: "
                         f"{r[key]['lower_bound']:,.0f} .. {r[key]['upper_bound']:,.0f})"
                         for key, label in names.items())
    if what == "quantile":
        lines = [f"{r['count']:,} values (each quantile within {r['relative_error']:.2%} of the "
                 f"exact one; {r['windows_merged']} sketches merged):"]
        lines += [f"  p{q['q'] * 100:g}: {q['value']:,.6g}  ({q['lower_bound']:,.6g} .. "
                  f"{q['upper_bound']:,.6g})" if q["value"] is not None else
                  f"  p{q['q'] * 100:g}: no values" for q in r["quantiles"]]
        return "\n".join(lines)
    lines = []
    for row in r["rows"]:
        head = ", ".join(f"{k}={v}" for k, v in row["group"].items()) or "all"
        body = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("group",))
        lines.append(f"{head}: {body}")
    return "\n".join(lines) or "no windows in range"


# -- digest ----------------------------------------------------------------------
def _cmd_digest(args: argparse.Namespace) -> int:
    from streaming.engine.tables import table_paths
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    spec = load_spec(args.spec)
    missing = [name for name, path in table_paths(spec).all().items()
               if not (Path(path) / "_delta_log").exists()]
    if missing:
        raise ConfigError(f"no {', '.join(missing)} table under {spec.sink.path}; "
                          "run the pipeline first")
    result = digest(spark_session(args, spec), spec)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        tables = ", ".join(f"{n} {t['rows']} rows" for n, t in result["tables"].items())
        print(f"{result['digest']}  ({tables})")
    return 0


# -- demo ------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from streaming.cli.demo import run_demo

    return run_demo(home=args.home, port=args.port, rate=args.rate, duration=args.duration)


def _register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline of a spec (Kafka -> Delta)")
    _spec_arg(p, required=True)
    p.add_argument("--available-now", action="store_true",
                   help="process what the source holds now, then exit")
    p.add_argument("--master", default="local[*]", help="Spark master URL")
    p.add_argument("--ui", action="store_true", help="start Spark's web UI")
    p.add_argument("--driver-memory", type=jvm_size, metavar="SIZE",
                   help="JVM heap of the Spark driver, e.g. 2g (default: 1g; the windows "
                        "live in Python, not in the JVM)")
    spark_args(p)
    p.add_argument("--verbose", action="store_true",
                   help="print what each phase of start-up and stop took, and each "
                        "batch's phases")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("query", help="answer from the stored windows (any time range)")
    p.add_argument("what", choices=["aggregate", "distinct", "topk", "contains", "similarity",
                                    "quantile", "overlap"])
    _spec_arg(p)
    p.add_argument("--tables", type=local_dir, default=None, metavar="DIR",
                   help="folder holding the tables (default: the spec's [sink] path), "
                        "e.g. .streamsketch/demo/delta for the demo's")
    p.add_argument("--window", help="window name from the spec")
    p.add_argument("--sketch", help="sketch name (default: the window's sketch of that kind)")
    p.add_argument("--from", dest="start", help="range start, ISO-8601 (UTC if no zone)")
    p.add_argument("--to", dest="end", help="range end, ISO-8601, exclusive")
    p.add_argument("--group", action="append", metavar="KEY=VALUE",
                   help="only this group (repeatable); default: all groups merged")
    p.add_argument("--k", type=int, default=10, help="how many heavy hitters (topk)")
    p.add_argument("--value", help="the value to test (contains)")
    p.add_argument("--q", dest="qs", metavar="Q[,Q...]",
                   help="quantiles to answer, in [0, 1] (quantile; default 0.5,0.95,0.99)")
    p.add_argument("--vs-from", help="second range start (similarity, overlap)")
    p.add_argument("--vs-to", help="second range end (similarity, overlap)")
    p.add_argument("--vs-group", action="append", metavar="KEY=VALUE",
                   help="the second group (overlap; repeatable); default: --group's")
    p.add_argument("--engine", choices=["delta", "spark"], default="delta",
                   help="delta: read the tables with delta-rs, no JVM (default); "
                        "spark: through Spark SQL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("digest", help="one stable digest of a spec's output tables")
    _spec_arg(p, required=True)
    spark_args(p)
    p.add_argument("--json", action="store_true", help="per-table digests and row counts")
    p.set_defaults(func=_cmd_digest)

    p = sub.add_parser("demo", help="embedded broker + generator + pipeline, live summary")
    p.add_argument("--home", type=Path, default=default_home(),
                   help="state folder (broker, tables, checkpoints); default %(default)s")
    p.add_argument("--port", type=_port, default=9092, help="broker port on 127.0.0.1")
    p.add_argument("--rate", type=float, default=2000.0, help="generated events per second")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=_cmd_demo)


def _registrars() -> list:
    regs = [_register]
    from streaming.cli import maintain, recover
    from streaming.cli import produce as produce_cmd
    from streaming.cli import replay as replay_cmd

    regs.append(produce_cmd.register)
    regs.append(replay_cmd.register)
    regs.append(maintain.register)
    regs.append(recover.register)
    return regs


REGISTRARS = _registrars()
