"""``streamsketch maintain``: compact (and optionally vacuum) a spec's Delta tables.

Every micro-batch rewrites the windows it changed in ``aggregates`` and ``sketches``
and appends to ``quarantine``, so a long-running job leaves many small files
behind. ``maintain`` runs Delta's ``OPTIMIZE`` (bin-packing compaction) on the three
tables and, with ``--vacuum-hours H``, ``VACUUM`` with that retention. It uses
delta-rs, the engine that writes the tables: two engines committing to one table
are not safe. No JVM is started.

It is safe while the pipeline runs: compaction only rearranges files
(``dataChange = false``), the pipeline's overwrite retries when it loses a race
with a compaction, and a compaction that loses a race with a batch's commit is
retried here a few times. A retention below Delta's safety default (168 h) can
delete files that a running query or a time-travel read still needs, so it is
refused unless ``--force-retention`` says so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from streaming.errors import ConfigError

#: Delta's default minimum retention for VACUUM (``delta.deletedFileRetentionDuration``)
SAFE_RETENTION_HOURS = 168.0
#: tries of one operation that hits a concurrent-modification conflict
ATTEMPTS = 5

T = TypeVar("T")


@dataclass
class TableReport:
    """What maintenance did to one table."""

    name: str
    files_before: int
    files_after: int
    attempts: int
    vacuumed: int | None = None

    def line(self) -> str:
        text = (f"{self.name}: {self.files_before} files -> {self.files_after} "
                f"(compaction, {self.attempts} attempt{'s' if self.attempts != 1 else ''})")
        if self.vacuumed is not None:
            text += f"; vacuum removed {self.vacuumed} unreferenced files"
        return text


def check_retention(hours: float | None, force: bool) -> None:
    """Refuse a VACUUM retention that Delta considers unsafe, unless forced."""
    if hours is None:
        if force:
            raise ConfigError("--force-retention only applies with --vacuum-hours")
        return
    if not hours >= 0 or hours == float("inf"):
        raise ConfigError(f"--vacuum-hours must be a non-negative number of hours, got {hours}")
    if hours < SAFE_RETENTION_HOURS and not force:
        raise ConfigError(
            f"--vacuum-hours {hours:g} is below Delta's safety retention of "
            f"{SAFE_RETENTION_HOURS:g} h: files a running query or a time-travel read still "
            "needs could be deleted; add --force-retention if that is intended")


def with_retries(fn: Callable[[], T], *, attempts: int = ATTEMPTS,
                 pause_s: float = 0.5) -> tuple[T, int]:
    """Run ``fn``; on a Delta concurrent-modification conflict run it again.

    Returns the result and the number of attempts it took.
    """
    conflicts = conflict_exceptions()
    for attempt in range(1, attempts + 1):
        try:
            return fn(), attempt
        except conflicts:
            # a pipeline batch committed to the same files first; the operation reads
            # the new snapshot when run again
            if attempt == attempts:
                raise
            time.sleep(pause_s * attempt)
    raise AssertionError("unreachable")


def conflict_exceptions() -> tuple[type[BaseException], ...]:
    """delta-rs's exception for a commit that lost a race with another commit."""
    from deltalake.exceptions import CommitFailedError

    return (CommitFailedError,)


def _num_files(path: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(path).file_uris())


def _data_files_on_disk(path: str) -> int:
    return sum(1 for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts)


def maintain_table(name: str, path: str, *, vacuum_hours: float | None = None) -> TableReport:
    """Compact one table (and vacuum it when ``vacuum_hours`` is given)."""
    from deltalake import DeltaTable

    before = _num_files(path)
    _, attempts = with_retries(lambda: DeltaTable(path).optimize.compact())
    report = TableReport(name, before, _num_files(path), attempts)
    if vacuum_hours is not None:
        on_disk = _data_files_on_disk(path)
        with_retries(lambda: DeltaTable(path).vacuum(
            retention_hours=int(vacuum_hours), dry_run=False,
            enforce_retention_duration=vacuum_hours >= SAFE_RETENTION_HOURS))
        report.vacuumed = on_disk - _data_files_on_disk(path)
    return report


def maintain(tables: dict[str, str], *, vacuum_hours: float | None = None,
             force_retention: bool = False,
             on_table: Callable[[TableReport], None] | None = None) -> list[TableReport]:
    """Compact (and vacuum) each of ``tables`` ({name: path}); one report per table."""
    check_retention(vacuum_hours, force_retention)
    reports = []
    for name, path in tables.items():
        report = maintain_table(name, path, vacuum_hours=vacuum_hours)
        if on_table is not None:
            on_table(report)
        reports.append(report)
    return reports


def _cmd_maintain(args: argparse.Namespace) -> int:
    from streaming.engine.tables import table_paths
    from streaming.spec.model import load_spec

    check_retention(args.vacuum_hours, args.force_retention)
    spec = load_spec(args.spec)
    paths = table_paths(spec).all()
    missing = [name for name, path in paths.items() if not (Path(path) / "_delta_log").is_dir()]
    if missing:
        raise ConfigError(f"no {', '.join(missing)} table under {spec.sink.path}; "
                          "run the pipeline first")
    maintain(paths, vacuum_hours=args.vacuum_hours, force_retention=args.force_retention,
             on_table=lambda r: print(r.line(), flush=True))
    return 0


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of hours: {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("maintain",
                       help="compact (OPTIMIZE) a spec's Delta tables, optionally VACUUM them; "
                            "safe while the pipeline runs")
    p.add_argument("--spec", type=Path, required=True, help="pipeline spec (TOML)")
    p.add_argument("--vacuum-hours", type=_hours, default=None, metavar="H",
                   help="also VACUUM, deleting unreferenced files older than H hours "
                        f"(at least {SAFE_RETENTION_HOURS:g} unless --force-retention)")
    p.add_argument("--force-retention", action="store_true",
                   help="allow --vacuum-hours below Delta's safety retention")
    p.set_defaults(func=_cmd_maintain)
