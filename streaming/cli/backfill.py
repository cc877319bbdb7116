"""``streamsketch run`` of a files spec and ``streamsketch replay --backfill``: a backfill.

The work is :func:`streaming.logs.backfill.backfill`; this module turns the
command's options into its arguments and prints its batches and totals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from streaming.cli.common import log_batch
from streaming.logs.backfill import (
    DEFAULT_RECORDS_PER_BATCH,
    backfill,
    backfill_spec,
    log_files,
)
from streaming.spec.model import Spec, load_spec


def run_files_spec(args: Any, log: Callable[[str], None]) -> int:
    """``streamsketch run`` of a spec whose source is files: a backfill of them."""
    spec = load_spec(args.spec)
    logs = log_files(spec)
    stats = backfill(None, spec, logs,
                     records_per_batch=spec.source.max_offsets_per_trigger
                     or DEFAULT_RECORDS_PER_BATCH,
                     log_format=spec.source.format, on_batch=lambda s: log_batch(log, s))
    print("\n".join(stats.lines()))
    return 0


def replay_spec(spec: Spec, logs: list[Path], sink: Path | None) -> Spec:
    """The spec ``replay LOG... --backfill [--sink DIR]`` runs (and ``recover`` recovers)."""
    if sink is not None:
        spec = replace(spec, sink=replace(spec.sink, path=str(Path(sink) / "delta"),
                                          checkpoint=str(Path(sink) / "checkpoints")))
    return backfill_spec(spec, logs)


def cmd_backfill(args: Any, log: Callable[[str], None]) -> int:
    """``streamsketch replay LOG... --spec S --backfill``."""
    spec = replay_spec(load_spec(args.spec), args.logs, args.sink)
    if getattr(args, "master", None):
        log(f"backfill: --master {args.master} is ignored: a backfill runs in this process, "
            "without Spark")
    per_batch = args.records_per_batch or spec.source.max_offsets_per_trigger \
        or DEFAULT_RECORDS_PER_BATCH
    log(f"backfill of {len(args.logs)} log(s) into {spec.sink.path} (checkpoint "
        f"{spec.sink.checkpoint}), {per_batch:,} records per batch")
    stats = backfill(None, spec, args.logs, records_per_batch=per_batch,
                     log_format=args.format,
                     on_batch=None if args.quiet else (lambda s: log_batch(log, s)))
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print("\n".join(stats.lines()))
    return 0
