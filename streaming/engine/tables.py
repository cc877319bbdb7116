"""The Delta tables a pipeline writes, their schemas, their binding to a checkpoint, their I/O.

``aggregates``  one row per window x group: exact metrics, ``final`` once the
                watermark has passed the window end.
``sketches``    one row per window x group x sketch: the sketch bytes (the
                ``sketches`` package's versioned format) plus its estimate, bounds,
                top-k and stats.
``quarantine``  every record that was not aggregated: malformed, or later than
                the watermark, with its raw key/value, topic, partition, offset and
                the reason.

The pipeline writes all three with delta-rs (the ``deltalake`` package) from the
driver: a commit of a few hundred rows costs milliseconds there, where delta-spark
spends one to three seconds of driver CPU on it. Spark reads the tables as any Delta
table. One engine writes a table, maintenance included (two engines committing to
one table are not safe), so ``streamsketch maintain`` uses delta-rs too.

Every table carries the id of the checkpoint that writes it (table property
``streamsketch.checkpoint_id``): a table written under another checkpoint is
refused, because batch ids, the basis of idempotent writes, restart with a new
checkpoint. Each commit of a batch records ``(app id, batch id)`` as a Delta
transaction, so a re-run of a batch can tell it already committed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from streaming.errors import CheckpointError
from streaming.spec.model import Spec

if TYPE_CHECKING:
    from deltalake import DeltaTable

CHECKPOINT_PROPERTY = "streamsketch.checkpoint_id"
TABLES = ("aggregates", "sketches", "quarantine")
_TS = pa.timestamp("us", tz="UTC")
_ARROW_METRIC = {"long": pa.int64(), "double": pa.float64(), "decimal": pa.decimal128(38, 9)}


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


_KEY_FIELDS = [_f("window_name", pa.string(), False), _f("window_start", _TS, False),
               _f("window_end", _TS, False), _f("group_key", pa.string(), False),
               _f("group", pa.map_(pa.string(), pa.string()))]


def aggregates_schema(spec: Spec) -> pa.Schema:
    return pa.schema(_KEY_FIELDS + [_f(c, _ARROW_METRIC[t]) for c, t in spec.metric_columns()]
                     + [_f("late_rows", pa.int64()), _f("final", pa.bool_(), False),
                        _f("last_batch", pa.int64(), False), _f("updated_at", _TS)])


SKETCHES_SCHEMA = pa.schema(_KEY_FIELDS + [
    _f("sketch_name", pa.string(), False), _f("kind", pa.string(), False),
    _f("field", pa.string(), False), _f("bytes", pa.binary(), False),
    _f("estimate", pa.float64()), _f("lower_bound", pa.float64()),
    _f("upper_bound", pa.float64()),
    _f("top_k", pa.list_(pa.struct([("item", pa.string()), ("count", pa.int64())]))),
    _f("stats", pa.map_(pa.string(), pa.float64())),
    _f("final", pa.bool_(), False), _f("last_batch", pa.int64(), False),
    _f("updated_at", _TS)])

QUARANTINE_SCHEMA = pa.schema([
    _f("key", pa.binary()), _f("value", pa.binary()), _f("topic", pa.string()),
    _f("partition", pa.int32()), _f("offset", pa.int64()), _f("source_timestamp", _TS),
    _f("reason_code", pa.string(), False), _f("reason", pa.string(), False),
    _f("event_time", _TS), _f("batch_id", pa.int64(), False), _f("quarantined_at", _TS)])


@dataclass(frozen=True)
class TablePaths:
    root: Path

    @property
    def aggregates(self) -> str:
        return str(self.root / "aggregates")

    @property
    def sketches(self) -> str:
        return str(self.root / "sketches")

    @property
    def quarantine(self) -> str:
        return str(self.root / "quarantine")

    def all(self) -> dict[str, str]:
        return {"aggregates": self.aggregates, "sketches": self.sketches,
                "quarantine": self.quarantine}


def table_paths(spec: Spec) -> TablePaths:
    return TablePaths(Path(spec.sink.path))


def is_delta(path: str) -> bool:
    return (Path(path) / "_delta_log").is_dir()


_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(?:\.\d+\.\d+)?\.parquet$")


def _commit_problem(data: bytes) -> str | None:
    """What is wrong with the text of a commit file, or None: one JSON action per line."""
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if not lines:
        return "is empty"
    for i, line in enumerate(lines, 1):
        try:
            action = orjson.loads(line)
        except orjson.JSONDecodeError:
            return f"is not valid JSON (line {i}; cut short or overwritten)"
        if not isinstance(action, dict) or len(action) != 1:
            return f"has a line that is no Delta action (line {i})"
    return None


def check_log(path: str) -> None:
    """Refuse a table whose ``_delta_log`` has a commit that is empty or not JSON.

    delta-rs takes an empty commit file for a commit without actions: the table then
    silently loses that commit's added and removed files (rows vanish, or appear
    twice). A writer never leaves one (a commit appears whole, by rename), but a power
    loss after an unsynced write can, and so can a failing disk or a hand edit. The
    commits after the newest Delta checkpoint are the ones read, so those are checked
    (at start: a few hundred small files at most).

    Raises:
        CheckpointError: naming the table and the commit.
    """
    log = Path(path) / "_delta_log"
    commits: dict[int, str] = {}
    newest_checkpoint = -1
    with os.scandir(log) as entries:
        for entry in entries:
            if m := _COMMIT_FILE.match(entry.name):
                commits[int(m.group(1))] = entry.name
            elif m := _CHECKPOINT_FILE.match(entry.name):
                newest_checkpoint = max(newest_checkpoint, int(m.group(1)))
    read = sorted(v for v in commits if v > newest_checkpoint)
    for version in range(newest_checkpoint + 1, read[-1] if read else 0):
        if version not in commits:
            problem, name = "is missing", f"{version:020d}.json"
            break
    else:
        problem = None
        for version in read:
            name = commits[version]
            problem = _commit_problem((log / name).read_bytes())
            if problem is not None:
                break
    if problem is not None:
        raise CheckpointError(
            f"table {path} is damaged: commit {version} of its _delta_log ({name}) "
            f"{problem}; reading on would silently drop or double rows. Restore the table "
            "and the checkpoint together from a copy, or delete both to start fresh")


def _open_existing(path: str) -> DeltaTable:
    """An existing table, checked (:func:`check_log`); a log delta-rs cannot read is one line."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    check_log(path)
    try:
        return DeltaTable(path)
    except DeltaError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"table {path} cannot be read ({first}): its _delta_log is damaged or "
            "incomplete. Restore the table and the checkpoint together from a copy, or "
            "delete both to start fresh") from None


def ensure_tables(spec: Spec, checkpoint_id: str) -> TablePaths:
    """Create missing tables; refuse damaged ones and tables bound to another checkpoint."""
    from deltalake import DeltaTable

    paths = table_paths(spec)
    schemas = {"aggregates": aggregates_schema(spec), "sketches": SKETCHES_SCHEMA,
               "quarantine": QUARANTINE_SCHEMA}
    for name, path in paths.all().items():
        partitioned = name != "quarantine"
        if is_delta(path):
            meta = _open_existing(path).metadata()
            bound = meta.configuration.get(CHECKPOINT_PROPERTY)
            if partitioned and list(meta.partition_columns) != ["final"]:
                raise CheckpointError(
                    f"table {path} has the layout of an earlier streamsketch (one row per "
                    "window, not partitioned by final): this version appends partial rows "
                    "and compacts them. Rebuild it: delete the tables and the checkpoint, "
                    "then run again (or replay --backfill the recorded logs)")
            if bound != checkpoint_id:
                raise CheckpointError(
                    f"table {path} was written under another checkpoint ({bound}); its batch "
                    "ids would clash with this one's. Use a new [sink] path with a new "
                    "checkpoint, or delete both to start fresh")
            continue
        Path(path).mkdir(parents=True, exist_ok=True)
        DeltaTable.create(path, schemas[name], partition_by=["final"] if partitioned else None,
                          configuration={
            CHECKPOINT_PROPERTY: checkpoint_id,
            "delta.appendOnly": "true" if name == "quarantine" else "false"},
            raise_if_key_not_exists=False)
    return paths


def read_table(path: str, where: str | None = None, *, raw: bool = False) -> pa.Table:
    """A table's rows (optionally filtered by a SQL condition), read without a JVM.

    Rows of ``aggregates`` and ``sketches`` come one per cell, the partial rows of an
    open window merged (:mod:`streaming.engine.cells`); ``raw`` gives them as stored.
    """
    from deltalake import DeltaTable, QueryBuilder

    sql = "SELECT * FROM t" + (f" WHERE {where}" if where else "")
    # QueryBuilder (DataFusion) rather than to_pyarrow_table(): the latter's dataset
    # threads abort the interpreter at exit with pyarrow 26.
    reader = QueryBuilder().register("t", DeltaTable(path)).execute(sql)
    rows = pa.table(reader)
    if raw:
        return rows
    from streaming.engine.cells import merged_cells

    return merged_cells(rows)
