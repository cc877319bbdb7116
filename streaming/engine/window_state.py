"""Open windows: the driver's copy of the result tables' non-final rows, and their writes.

The ``aggregates`` and ``sketches`` tables hold one row per window x group (x
sketch). A window is *open* until the watermark passes its end; then its rows
are flagged ``final`` and never change again (later events are quarantined as
late). So the rows a batch can change are exactly the open ones: a few windows
per window spec, however long the stream has run.

A pipeline loads the open rows of each table once (``NOT final``) when it
starts and keeps them in driver memory. A batch folds its partials into copies
of the rows it touches, flags the rows whose window end the watermark has
passed, and rewrites the windows it changed with one Delta overwrite of exactly
those windows (``window_name = w AND window_start IN (...)``), tagged with the
transaction (table and checkpoint, batch id). The memory copy is replaced only
after the commit succeeds. Windows the batch neither touched nor finalised are
not rewritten, so a commit's cost follows the batch, not the table's age.

Why this is exactly once:

* values are absolute (the whole row), and every row remembers the last batch
  folded into it (``last_batch``). After a crash the restarted pipeline reloads
  the open rows, and the re-run of batch N skips the rows that already contain
  it, so nothing is counted twice;
* before writing, the pipeline asks the table for the last batch this checkpoint
  committed to it: the re-run of a batch that had committed writes nothing, and a
  table that is *ahead* of the batch (its checkpoint was deleted or restored) stops
  the job with an error instead of being silently skipped
  (:func:`streaming.engine.tables.commit`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa

from streaming.spec.model import Spec
from streaming.units import US
from streaming.units import sql_str as _sql_str


class WindowKey(NamedTuple):
    """A row of ``aggregates``: one window of one group."""

    window: str  #: the window's name in the spec
    start_us: int  #: window start, epoch microseconds
    group: str  #: the group key (canonical JSON of the group-by values)


class SketchKey(NamedTuple):
    """A row of ``sketches``: one sketch of one window of one group."""

    window: str
    start_us: int
    group: str
    sketch: str  #: the sketch's name in the spec


Key = WindowKey | SketchKey


@dataclass(slots=True)
class OpenRow:
    """One open row: its live value (metrics or a sketch) and the row to store.

    ``record`` holds the table columns of the row without ``final``, in the table
    schema's order (a tuple: a window of a year holds many rows); it is built when
    the row changes, so untouched rows are rewritten without re-serialising them.
    """

    value: Any
    last_batch: int
    record: tuple


@dataclass
class BatchWrite:
    """What a batch writes to one table: the rows of the windows it rewrites."""

    rows: dict[Key, OpenRow]
    final: set[Key]
    touched: set[Key]
    #: (window name, window start) of every window the write replaces
    windows: set[tuple[str, int]]

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

    def closed(self, keys: Iterable[Key], watermark_ms: int) -> set[tuple[str, int]]:
        """The windows among ``keys`` that the watermark has closed and memory does not hold.

        Only late rows folded in (``late = "update"``) reach such windows; their rows are
        read back from the table to be updated.
        """
        cutoff = watermark_ms * 1000
        return {(k.window, k.start_us) for k in keys
                if k.start_us + self.sizes_us[k.window] <= cutoff and k not in self.rows}

    def plan(self, updates: dict[Key, OpenRow], watermark_ms: int,
             closed: dict[Key, OpenRow] | None = None) -> BatchWrite:
        """The rows to write after ``updates``, with the rows the watermark finalises.

        ``closed`` holds the rows of closed windows read back for late rows; they are
        rewritten (still final) with the rest of their window.
        """
        cutoff = watermark_ms * 1000
        final = {k for k in self.rows if k.start_us + self.sizes_us[k.window] <= cutoff}
        final |= {k for k in updates if k.start_us + self.sizes_us[k.window] <= cutoff}
        windows = {(k.window, k.start_us) for k in updates}
        windows |= {(k.window, k.start_us) for k in final}
        rows = {k: v for k, v in self.rows.items() if (k.window, k.start_us) in windows}
        for k, v in (closed or {}).items():
            if (k.window, k.start_us) in windows:
                rows[k] = v
                final.add(k)
        rows.update(updates)
        return BatchWrite(rows, final, set(updates), windows)

    def commit(self, write: BatchWrite) -> None:
        """Adopt a written batch: finalised rows leave memory for good."""
        self.rows.update({k: v for k, v in write.rows.items() if k not in write.final})
        for k in write.final:
            self.rows.pop(k, None)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


def epoch_us(value: dt.datetime) -> int:
    """A timestamp read back from a table (aware, or naive in UTC) as epoch microseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _ONE_US


def rows_table(write: BatchWrite, schema: pa.Schema) -> pa.Table:
    """The rows of a write as a table of ``schema`` (records in its order, ``final`` added)."""
    names = schema.names
    at = names.index("final")
    records = [row.record for row in write.rows.values()]
    columns = list(zip(*records, strict=True)) if records else [() for _ in range(len(names) - 1)]
    final = [key in write.final for key in write.rows]
    columns.insert(at, final)
    return pa.table([pa.array(col, type=schema.field(i).type)
                     for i, col in enumerate(columns)], schema=schema)


def record_of(row: dict[str, Any], schema: pa.Schema) -> tuple:
    """A row read back from a table (or built as a dict) as a record tuple."""
    return tuple(row.get(c) for c in schema.names if c != "final")


def timestamp_literal(us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return f"'{moment.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z'"


def closed_predicate(windows: Iterable[tuple[str, int]]) -> str:
    """The final rows of these windows (to read back and update with late rows)."""
    return f"final AND ({windows_predicate(windows)})"


def windows_predicate(windows: Iterable[tuple[str, int]]) -> str:
    """The overwrite predicate of exactly these (window name, window start) windows."""
    starts: dict[str, list[int]] = {}
    for name, ws in windows:
        starts.setdefault(name, []).append(ws)
    parts = []
    for name, values in sorted(starts.items()):
        # IN, not a chain of ORs: DataFusion tests a set, the cost stays flat in its size
        any_start = ", ".join(timestamp_literal(us) for us in sorted(values))
        parts.append(f"(window_name = {_sql_str(name)} AND window_start IN ({any_start}))")
    return " OR ".join(parts)
