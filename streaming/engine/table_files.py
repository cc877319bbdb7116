"""Files of the result tables: written by the tasks that merge, committed by the driver.

The merge stage (:mod:`streaming.engine.reduce`) writes each of its slices as Parquet
files straight into the table's folder, where it runs, and hands back a small row per
file: its path, size, partition and statistics (what a Delta ``add`` action holds).
The driver then commits every file of a batch to a table in one delta-rs transaction,
together with the removal of the files the batch compacted and the batch's
transaction id (:func:`commit_files`): a commit's cost follows files, not rows. A file
no commit names (a task re-run, a batch cut short by a crash) is never read, and
``streamsketch maintain --vacuum-hours`` deletes it.

``aggregates`` and ``sketches`` are partitioned by ``final``: ``final=false/`` holds
the rows of windows the watermark has not closed, one per batch that touched them
(merged on read), ``final=true/`` one row per closed window. Which ``final=false``
files a batch compacts is decided from the files' statistics (the least window end
they hold), without reading them (:func:`select_files`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from streaming.engine.table_batches import commit_metadata

#: the partition column of ``aggregates`` and ``sketches``
PARTITION = "final"
#: the Parquet footer key naming the process that wrote a file (``host:pid``): an
#: executor's Python worker for a batch's files (see docs/architecture.md)
WRITER_KEY = b"streamsketch.writer"
#: columns whose least and greatest values a file's statistics carry
STATS_COLUMNS = ("window_name", "window_start", "window_end", "group_key", "last_batch")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _stat_value(value: Any, typ: pa.DataType) -> Any:
    if pa.types.is_timestamp(typ):
        moment = _EPOCH + dt.timedelta(microseconds=int(value))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def file_stats(table: pa.Table) -> str:
    """A file's Delta statistics (JSON): rows, and least/greatest of the key columns."""
    import pyarrow.compute as pc

    lo: dict[str, Any] = {}
    hi: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in STATS_COLUMNS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        typ = col.type
        nulls[name] = col.null_count
        if col.null_count == len(col):
            continue
        values = col.cast(pa.int64()) if pa.types.is_timestamp(typ) else col
        mm = pc.min_max(values)
        lo[name] = _stat_value(mm["min"].as_py(), typ)
        hi[name] = _stat_value(mm["max"].as_py(), typ)
    return orjson.dumps({"numRecords": table.num_rows, "minValues": lo, "maxValues": hi,
                         "nullCount": nulls}).decode()


@dataclass(frozen=True)
class WrittenFile:
    """A file a task wrote into a table's folder, not yet committed."""

    table: str  #: the table's name (``aggregates``, ``sketches``, ``quarantine``)
    path: str  #: relative to the table's folder
    size: int
    rows: int
    final: bool | None  #: its partition (None: the table is not partitioned)
    stats: str


def write_file(table_name: str, root: str, rows: pa.Table, *, batch_id: int,
               final: bool | None, bucket: tuple[int, int] | None = None) -> WrittenFile:
    """Write ``rows`` as a new Parquet file under the table folder ``root``, flushed to the
    disk; its footer names the writing process (:data:`WRITER_KEY`) and the batch.

    ``bucket`` = (p, n): every row's cell is one Spark's shuffle sends to merge task p of
    n; the name says so (:func:`file_bucket`), so that a later compaction with n tasks
    lets task p read the file itself instead of shuffling its rows."""
    folder = "" if final is None else f"{PARTITION}={'true' if final else 'false'}/"
    tag = "" if bucket is None else f"b{bucket[0]}of{bucket[1]}-"
    name = f"{folder}part-{max(batch_id, 0):08d}-{tag}{uuid.uuid4().hex}.parquet"
    target = os.path.join(root, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    meta = dict(rows.schema.metadata or {})
    meta[WRITER_KEY] = f"{socket.gethostname()}:{os.getpid()}".encode()
    meta[b"streamsketch.batch"] = str(batch_id).encode()
    pq.write_table(rows.replace_schema_metadata(meta), target, compression="snappy")
    fsync_path(target)
    fsync_path(os.path.dirname(target))
    return WrittenFile(table_name, name, os.path.getsize(target), rows.num_rows, final,
                       file_stats(rows))


def fsync_path(path: str) -> None:
    """Flush a written file (or a folder's new entry) to the disk: a commit names only
    files that a power loss after it cannot take back."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_BUCKET = re.compile(r"/?part-\d+-b(\d+)of(\d+)-[0-9a-f]+\.parquet$")


def file_bucket(path: str) -> tuple[int, int] | None:
    """(p, n) of a file written by merge task p of n (see :func:`write_file`), else None."""
    m = _BUCKET.search(path)
    return (int(m[1]), int(m[2])) if m else None


@dataclass
class Selection:
    """The ``final=false`` files of a table a batch compacts, and what it must know."""

    #: the files to read and replace (relative paths), with their sizes
    files: dict[str, int]
    #: windows ending by then may already hold a final row: a late row folded into one
    #: is written as a partial row, and the next compaction reads the final row back
    final_before_ms: int


def _stat_us(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // dt.timedelta(microseconds=1)
    return int(value)


def table_files(path: str) -> list[dict[str, Any]]:
    """Every live file of a table: path, size, partition, least/greatest window bounds."""
    from deltalake import DeltaTable

    actions = pa.table(DeltaTable(path).get_add_actions(flatten=True))
    names = actions.column_names

    def col(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in names else [None] * len(actions)

    out = []
    for p, size, final, lo_end, hi_end, lo_start in zip(
            col("path"), col("size_bytes"), col(f"partition.{PARTITION}"),
            col("min.window_end"), col("max.window_end"), col("min.window_start"),
            strict=True):
        out.append({"path": p, "size": size, "final": final, "min_end": _stat_us(lo_end),
                    "max_end": _stat_us(hi_end), "min_start": _stat_us(lo_start)})
    return out


def select_files(path: str, watermark_ms: int) -> Selection:
    """The files a batch with this watermark compacts (see the module docstring).

    A ``final=false`` file is taken when it holds a window the watermark has closed
    (its least window end is at most the watermark; a file without statistics is
    taken). Windows ending by the greatest end among ``final=true`` files may already
    hold their final row; a ``final=false`` file holding such a window (a late row
    folded in, ``late = "update"``) brings along the ``final=true`` files whose windows
    overlap it, so that the window is merged into one row again.
    """
    files = table_files(path)
    cutoff = watermark_ms * 1000
    final_before = max((f["max_end"] for f in files if f["final"] and f["max_end"] is not None),
                       default=-(1 << 62))
    chosen: dict[str, int] = {}
    reopened: list[tuple[int, int]] = []
    for f in files:
        if f["final"]:
            continue
        if f["min_end"] is None or f["min_end"] <= cutoff:
            chosen[f["path"]] = f["size"]
            if f["min_end"] is None or f["min_end"] <= final_before:
                reopened.append((f["min_start"] if f["min_start"] is not None else -(1 << 62),
                                 f["max_end"] if f["max_end"] is not None else 1 << 62))
    if reopened:
        for f in files:
            if not f["final"]:
                continue
            lo = f["min_start"] if f["min_start"] is not None else -(1 << 62)
            hi = f["max_end"] if f["max_end"] is not None else 1 << 62
            if any(lo < r_hi and r_lo < hi for r_lo, r_hi in reopened):
                chosen[f["path"]] = f["size"]
    return Selection(chosen, final_before // 1000 if final_before > -(1 << 62) else
                     -(1 << 62) // 1000)


def commit_files(path: str, schema: pa.Schema, added: list[WrittenFile],
                 removed: dict[str, int], *, app_id: str | None, batch_id: int | None,
                 partitioned: bool) -> None:
    """One delta-rs transaction: the files added, the files removed, the batch's txn and
    metadata (:mod:`streaming.engine.table_batches`); with nothing added or removed, a
    batch's commit still records that the table holds the batch."""
    from deltalake import CommitProperties, DeltaTable, Transaction
    from deltalake.transaction import AddAction, RemoveAction

    now_ms = int(time.time() * 1000)
    actions: list[Any] = []
    for f in added:
        parts = {} if f.final is None else {PARTITION: "true" if f.final else "false"}
        actions.append(AddAction(f.path, f.size, parts, now_ms, True, f.stats))
    for p, size in removed.items():
        final = "final=true/" in p
        parts = {PARTITION: "true" if final else "false"} if partitioned else None
        actions.append(RemoveAction(p, True, now_ms, size, parts))
    ours = app_id is not None and batch_id is not None
    props = CommitProperties(
        app_transactions=[Transaction(app_id, batch_id)] if ours else None,
        custom_metadata=commit_metadata(app_id, batch_id) if ours else None)  # type: ignore[arg-type]
    table = DeltaTable(path)
    if removed:
        # Files another writer replaced since they were selected (``maintain``'s
        # compaction) hold rows that its new files hold too: removing them again and
        # adding this batch's merge of them would count those rows twice. The commit is
        # refused, and the caller merges again from the table as it is now; the commit
        # below is based on the version checked here, so a writer in between is a
        # conflict delta-rs reports the same way.
        live = set(pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist())
        gone = sorted(set(removed) - live)
        if gone:
            from deltalake.exceptions import CommitFailedError

            raise CommitFailedError(f"{len(gone)} file(s) this commit replaces were replaced "
                                    f"by another writer since, e.g. {gone[0]}")
    try:
        table.create_write_transaction(
            actions, "append", schema, partition_by=[PARTITION] if partitioned else None,
            commit_properties=props)
    except OSError as exc:
        raise _with_reason(exc, path) from exc


def _with_reason(exc: OSError, path: str) -> OSError:
    """delta-rs reports a failed local write without the system's reason ("Generic
    LocalFileSystem error"): a small probe write next to the log gets it (a full disk
    says "No space left on device"), else the error stays as it is."""
    probe = os.path.join(path, "_delta_log", f".probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * (1 << 16))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as reason:
        return OSError(reason.errno, f"{reason.strerror}: the commit to {path} failed ({exc})")
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass
    return exc
