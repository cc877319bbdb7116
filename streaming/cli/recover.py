"""``streamsketch recover``: bring tables that fell behind their checkpoint back to it.

When a run stops because its tables hold fewer batches than its checkpoint committed
(restored from a backup, Delta ``RESTORE``, a lost newest commit), this writes the
missing batches again as they first ran (:mod:`streaming.engine.recovery`): from Kafka
for a Kafka spec; for a backfill, by rewinding its journal so that the next backfill
(the same ``run`` or ``replay --backfill`` command) runs them again. Afterwards the
tables equal those of a run without the incident, and ``run`` goes on as usual.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streaming.cli.common import info as _info
from streaming.cli.common import local_dir, log_batch, spark_args, spark_session


def _describe(held: dict[str, int]) -> str:
    return ", ".join(f"{name} at batch {b}" if b >= 0 else f"{name} empty"
                     for name, b in held.items())


def _cmd_recover(args: argparse.Namespace) -> int:
    from streaming.engine.checkpoint import last_batches
    from streaming.engine.pipeline import Pipeline
    from streaming.engine.recovery import plan_recovery, recover_kafka, rewind_backfill
    from streaming.spec.model import load_spec

    spec = load_spec(args.spec)
    if args.logs or args.sink is not None:
        from streaming.cli.backfill import replay_spec

        if not args.logs:
            from streaming.errors import ConfigError

            raise ConfigError("--sink names a `replay --backfill` output: give its logs too")
        spec = replay_spec(spec, args.logs, args.sink)
    if spec.source.kind == "files":
        from streaming.logs.backfill import journal_batches

        pipeline = Pipeline(None, spec)
        planned = journal_batches(Path(spec.sink.checkpoint))
        pipeline.prepare(planned=planned, recovering=True)
        try:
            rec = plan_recovery(pipeline, planned[0])
            if rec.batches:
                rewind_backfill(pipeline, rec)
        finally:
            pipeline.lock.release()
        if not rec.batches:
            print(f"nothing to recover: the tables hold batch {planned[0]}, as the "
                  "checkpoint")
            return 0
        print(f"the tables held {_describe(rec.held)}; the checkpoint, batch {rec.last}. "
              f"Rewound the backfill's journal to batch {rec.first - 1}: run the backfill "
              f"again (the same command) and it writes batches {rec.first}..{rec.last} "
              "again, as planned, then goes on")
        return 0

    spark = spark_session(args, spec)
    pipeline = Pipeline(spark, spec, on_batch=lambda s: log_batch(_info, s))
    pipeline.prepare(recovering=True)
    try:
        assert pipeline.checkpoint is not None
        committed, _ = last_batches(pipeline.checkpoint.query_dir)
        rec = plan_recovery(pipeline, committed)
        if not rec.batches:
            print(f"nothing to recover: the tables hold batch {committed}, as the checkpoint")
            return 0
        _info(f"the tables hold {_describe(rec.held)}; the checkpoint committed batch "
              f"{committed}: writing batches {rec.first}..{rec.last} again from "
              f"{spec.source.topic}")
        recover_kafka(spark, pipeline, rec)
        pipeline.compact()
    finally:
        pipeline.lock.release()
    print(f"recovered: batches {rec.first}..{rec.last} written again; the tables hold batch "
          f"{committed}, as the checkpoint, and `streamsketch run` goes on from there")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from streaming.spec.model import default_spec_path

    p = sub.add_parser("recover", help="write again the batches tables lost behind their "
                                       "checkpoint (after a restore)")
    p.add_argument("--spec", type=Path, default=default_spec_path(),
                   help="pipeline spec (TOML) of the job; default: the bundled one")
    p.add_argument("logs", nargs="*", type=local_dir, metavar="LOG",
                   help="for a `replay --backfill` job: its logs, as given to it")
    p.add_argument("--sink", type=local_dir, default=None, metavar="DIR",
                   help="for a `replay --backfill --sink DIR` job: its DIR")
    p.add_argument("--master", default="local[*]", help="Spark master URL (Kafka specs)")
    spark_args(p)
    p.set_defaults(func=_cmd_recover)
