"""Open windows: the driver's copy of the result tables' non-final rows, and their writes.

The ``aggregates`` and ``sketches`` tables hold one row per window x group (x
sketch). A window is *open* until the watermark passes its end; then its rows
are flagged ``final`` and never change again (later events are quarantined as
late). So the rows a batch can change are exactly the open ones: a few windows
per window spec, however long the stream has run.

A pipeline loads the open rows of each table once (``NOT final``) when it
starts and keeps them in driver memory. A batch folds its partials into copies
of the rows it touches, flags the rows whose window end the watermark has
passed, and writes the open set back with one Delta overwrite restricted to the
open windows, tagged ``txnAppId``/``txnVersion`` = table and checkpoint / batch
id. The memory copy is replaced only after the commit succeeds.

Why this is exactly once:

* values are absolute (the whole row), and every row remembers the last batch
  folded into it (``last_batch``). After a crash the restarted pipeline reloads
  the open rows, and the re-run of batch N skips the rows that already contain
  it, so nothing is counted twice; Delta skips the commit itself if it exists.
* the overwrite predicate ``window_name = w AND window_start >= s_w``, with
  ``s_w`` the oldest open (or new) window of ``w``, matches precisely the open
  rows: windows of one spec share a size, so if the window starting at ``s_w``
  is open, every later one is too (it ends later, under the same watermark).
  Final rows are never rewritten, except the ones this batch finalises.

One commit per table per batch and no read of the table: that is what makes
the write path cheap (a Delta MERGE costs a join with the target table).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streaming.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

US = 1_000_000
#: tries of one table write that lost a race with a concurrent compaction
WRITE_ATTEMPTS = 5

#: (window name, window start in epoch microseconds, group key[, sketch name])
Key = tuple


@dataclass
class OpenRow:
    """One open row: its live value (metrics or a sketch) and the row to store.

    ``record`` holds the staging columns of the row (see the owners'
    ``STAGING`` schemas) without the ``final`` flag; it is built when the row
    changes, so untouched rows are rewritten without re-serialising them.
    """

    value: Any
    last_batch: int
    record: tuple


@dataclass
class BatchWrite:
    """What a batch writes to one table: the new open set and the rows it finalises."""

    rows: dict[Key, OpenRow]
    final: set[Key]
    touched: set[Key]

    def __bool__(self) -> bool:
        return bool(self.touched or self.final)


class OpenWindows:
    """The open rows of one result table, in driver memory."""

    def __init__(self, spec: Spec) -> None:
        self.sizes_us = {w.name: w.size_s * US for w in spec.windows}
        self.rows: dict[Key, OpenRow] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Key) -> OpenRow | None:
        return self.rows.get(key)

    def plan(self, updates: dict[Key, OpenRow], watermark_ms: int) -> BatchWrite:
        """The open set after ``updates``, with the rows the watermark finalises."""
        rows = dict(self.rows)
        rows.update(updates)
        cutoff = watermark_ms * 1000
        final = {k for k in rows if k[1] + self.sizes_us[k[0]] <= cutoff}
        return BatchWrite(rows, final, set(updates))

    def commit(self, write: BatchWrite) -> None:
        """Adopt a written batch: finalised rows leave memory for good."""
        self.rows = {k: v for k, v in write.rows.items() if k not in write.final}


def timestamp_literal(us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return f"TIMESTAMP '{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00'"


def _sql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_predicate(keys: Iterable[Key]) -> str:
    """``replaceWhere`` for the open windows among ``keys`` (see the module docstring)."""
    oldest: dict[str, int] = {}
    for k in keys:
        oldest[k[0]] = min(oldest.get(k[0], k[1]), k[1])
    return " OR ".join(f"(window_name = {_sql_str(w)} AND window_start >= "
                       f"{timestamp_literal(us)})" for w, us in sorted(oldest.items()))


def write_batch(spark: SparkSession, path: str, write: BatchWrite, staging_ddl: str,
                to_table: Callable[[DataFrame], DataFrame], app_id: str,
                batch_id: int) -> None:
    """Overwrite the open windows of the table at ``path`` with ``write``, once per batch id."""
    conflicts = conflict_exceptions()
    records = [(*row.record, key in write.final) for key, row in write.rows.items()]
    frame = to_table(spark.createDataFrame(records, staging_ddl)).coalesce(1)
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            (frame.write.format("delta").mode("overwrite")
             .option("replaceWhere", open_predicate(write.rows))
             .option("txnAppId", app_id).option("txnVersion", batch_id)
             .save(path))
            return
        except conflicts:
            # a compaction (``streamsketch maintain``) rewrote files this overwrite
            # replaces; the write is absolute and idempotent, so simply do it again
            if attempt == WRITE_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)


def conflict_exceptions() -> tuple[type[BaseException], ...]:
    """Delta's commit-conflict exceptions as Python raises them.

    In delta-spark's Python API the specific conflicts (``ConcurrentAppendException``,
    ``ConcurrentDeleteReadException``, ...) are *not* subclasses of
    ``DeltaConcurrentModificationException`` (unlike on the JVM), so all are listed.
    """
    from delta import exceptions as dx

    return (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException,
            dx.ConcurrentAppendException, dx.ConcurrentDeleteReadException,
            dx.ConcurrentDeleteDeleteException, dx.MetadataChangedException,
            dx.ProtocolChangedException, dx.ConcurrentTransactionException)


def load_open_rows(spark: SparkSession, path: str) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(path).where(~F.col("final"))
