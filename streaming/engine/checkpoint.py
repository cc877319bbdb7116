"""The checkpoint folder: what it was made for, who holds it, what a batch saw.

Layout::

    CHECKPOINT/streamsketch.json   checkpoint id + the spec fingerprint it was made with
    CHECKPOINT/.lock               held (flock) by the one job running on it
    CHECKPOINT/query/              Spark's own checkpoint (offsets, commits, ...)

A checkpoint is bound to one spec: starting with a spec whose windows, groups,
sketch parameters, source or ``[events]`` settings differ is refused with a message
saying what changed, since mixing state (or late and quarantine decisions) from two
specs would give numbers that are neither. A damaged ``streamsketch.json`` or a
damaged offset-log entry is a loud error, never a silent fresh start.

A checkpoint made by an earlier version lacks the fingerprint keys added since
(:data:`streaming.spec.FINGERPRINT_ADDED`): they are accepted as they are at that
first start and recorded, with the time, under ``recorded_later``; from then on a
change of them is refused like any other.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming.errors import CheckpointError
from streaming.spec.model import FINGERPRINT_ADDED, Spec

_META = "streamsketch.json"
#: the first batch that committed to every table (see :func:`every_batch_from`)
_EVERY = "tables_hold_every_batch_from"


@dataclass(frozen=True)
class CheckpointInfo:
    root: Path
    checkpoint_id: str

    @property
    def query_dir(self) -> Path:
        return self.root / "query"


def _describe_changes(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub} added")
            elif k not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_describe_changes(old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(_describe_changes(a, b, f"{path}[{i}]"))
        return out
    if old != new:
        return [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]
    return []


def _fill_unrecorded(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Copy into ``stored`` the added keys it lacks (an earlier version's checkpoint)."""
    filled = []
    for *parents, key in FINGERPRINT_ADDED:
        old, new = stored, current
        for name in parents:
            old, new = old.get(name), new.get(name)
            if not isinstance(old, dict) or not isinstance(new, dict):
                break
        else:
            if key not in old and key in new:
                old[key] = new[key]
                filled.append(".".join((*parents, key)))
    return filled


def _write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, meta_path)


def open_checkpoint(spec: Spec, *, create: bool = True) -> CheckpointInfo:
    """Check (or create) the checkpoint's binding to ``spec``.

    Raises:
        CheckpointError: the spec changed, the metadata is damaged, or Spark state
            exists without streamsketch metadata.
    """
    root = Path(spec.sink.checkpoint)
    meta_path = root / _META
    fingerprint = json.loads(json.dumps(spec.state_fingerprint()))
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            stored = meta["fingerprint"]
            cid = str(meta["checkpoint_id"])
            if not isinstance(stored, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(
                f"{meta_path} is damaged (empty or not valid JSON); refusing to start fresh over "
                "existing state. Restore it, or remove the checkpoint and the tables to start "
                "over") from None
        unrecorded = _fill_unrecorded(stored, fingerprint)
        changes = _describe_changes(stored, fingerprint)
        if changes:
            shown = "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else "")
            raise CheckpointError(
                f"the spec changed since checkpoint {root} was made ({shown}). State from the "
                "old spec cannot be reused: point [sink] checkpoint and path at new folders, "
                "or delete both to start fresh")
        check_spark_state(root / "query")
        if unrecorded:
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            recorded = meta.get("recorded_later")
            recorded = dict(recorded) if isinstance(recorded, dict) else {}
            _write_meta(meta_path, {**meta, "fingerprint": fingerprint,
                                    "recorded_later": {**recorded,
                                                       **dict.fromkeys(unrecorded, now)}})
            print(f"streamsketch: checkpoint {root} was made by an earlier version that did "
                  f"not record {', '.join(unrecorded)}; recorded them as this spec has them, "
                  "and a change of them will be refused from now on", file=sys.stderr,
                  flush=True)
        return CheckpointInfo(root, cid)
    if (root / "query").exists() and any((root / "query").iterdir()):
        raise CheckpointError(
            f"{root} holds Spark state but no {_META}; it was not made by this spec's pipeline "
            "or its metadata was deleted. Refusing to guess: restore it or use a new folder")
    if not create:
        raise CheckpointError(f"no checkpoint at {root}")
    root.mkdir(parents=True, exist_ok=True)
    cid = uuid.uuid4().hex
    _write_meta(meta_path, {"checkpoint_id": cid, "fingerprint": fingerprint, _EVERY: 0})
    return CheckpointInfo(root, cid)


def every_batch_from(info: CheckpointInfo, committed: int) -> int:
    """The first batch from which every batch of the checkpoint commits to every table.

    Earlier versions committed a table only when a batch changed it, so a table's last
    batch could lag the checkpoint's without anything missing; a checkpoint they made
    records, at its first start by this version, that its tables can be compared
    with its batches after ``committed`` only.
    """
    meta_path = info.root / _META
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta.get(_EVERY), int):
        meta[_EVERY] = committed + 1
        _write_meta(meta_path, meta)
    return int(meta[_EVERY])


def _log_ids(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def check_spark_state(query_dir: Path) -> None:
    """Refuse Spark checkpoint files a restart would misread.

    Spark reads its ``metadata`` and the latest ``offsets``/``commits`` entries when
    a query starts; an empty or missing one fails deep inside Spark (a traceback or
    a misleading "concurrent update" error) or, worse, is taken for a new query.
    A missing ``commits/N`` next to ``offsets/N`` is the normal state after a crash
    (batch N re-runs) and is accepted.

    Raises:
        CheckpointError: naming the damaged or missing file.
    """
    if not query_dir.is_dir():
        return
    logs = {name: _log_ids(query_dir / name) for name in ("offsets", "commits")}
    for name, ids in logs.items():
        for i in ids[-2:]:
            entry = query_dir / name / str(i)
            if entry.stat().st_size == 0:
                raise CheckpointError(
                    f"{entry} is empty (damaged); refusing to start over existing state. "
                    "Restore it, or remove the checkpoint and the tables to start over")
    meta = query_dir / "metadata"
    if meta.exists():
        try:
            ok = "id" in json.loads(meta.read_text())
        except (OSError, ValueError, TypeError):
            ok = False
        if not ok:
            raise CheckpointError(
                f"{meta} is damaged (empty or not valid JSON); refusing to start over existing "
                "state. Restore it, or remove the checkpoint and the tables to start over")
    elif logs["offsets"] or logs["commits"]:
        raise CheckpointError(
            f"{meta} is missing but {query_dir} holds offsets and commits; refusing to guess. "
            "Restore it, or remove the checkpoint and the tables to start over")
    offsets, commits = logs["offsets"], logs["commits"]
    if commits and (not offsets or commits[-1] > offsets[-1]):
        missing = query_dir / "offsets" / str(commits[-1])
        raise CheckpointError(
            f"offset log entry {missing} is missing but batch {commits[-1]} was committed; "
            "refusing to re-run committed batches. Restore it, or remove the checkpoint and "
            "the tables to start over")


class CheckpointLock:
    """An exclusive lock on a checkpoint folder, held while a job runs on it."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / ".lock"
        self._fh: Any = None

    def acquire(self) -> CheckpointLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise CheckpointError(
                f"checkpoint {self.path.parent} is in use by {holder}; two jobs on one "
                "checkpoint would corrupt it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class BatchMeta:
    """What Spark recorded for a micro-batch before running it."""

    batch_id: int
    watermark_ms: int
    timestamp_ms: int
    #: the source's end offsets for the batch: {topic: {partition: offset}} (Kafka)
    end_offsets: dict[str, dict[str, int]] | None = None


def batch_meta(query_dir: Path, batch_id: int) -> BatchMeta:
    """Read the watermark and batch time Spark wrote to the offset log for ``batch_id``.

    They are fixed before the batch runs, so a re-run of the same batch after a
    crash sees the same values and makes the same decisions.
    """
    path = Path(query_dir) / "offsets" / str(batch_id)
    try:
        lines = path.read_text().splitlines()
        meta = json.loads(lines[1])
        offsets = json.loads(lines[2]) if len(lines) > 2 and lines[2].startswith("{") else None
        return BatchMeta(batch_id, int(meta.get("batchWatermarkMs", 0)),
                         int(meta["batchTimestampMs"]),
                         offsets if isinstance(offsets, dict) else None)
    except (OSError, IndexError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"offset log entry {path} is missing or damaged: {exc}") from None


def offset_gap(previous: BatchMeta | None, current: BatchMeta) -> tuple[int, int]:
    """Offsets a batch covers, and partitions whose offsets went backwards.

    Returns ``(offsets, resets)``: ``offsets`` is how many Kafka offsets lie
    between the previous batch's end and this one's (what the batch should hold
    if no record is missing); a partition whose end went backwards (the topic was
    deleted and recreated) counts as a reset and from offset 0: Spark resumes it at
    its new end, so the records the new topic held by then are a gap. With no
    previous batch, ``(-1, 0)``: the start is unknown.
    """
    if previous is None or previous.end_offsets is None or current.end_offsets is None:
        return -1, 0
    total = resets = 0
    for topic, parts in current.end_offsets.items():
        before = previous.end_offsets.get(topic, {})
        for part, end in parts.items():
            start = int(before.get(part, 0))
            if int(end) < start:
                resets += 1
                start = 0
            total += int(end) - start
    return total, resets


def start_offsets(query_dir: Path) -> dict[str, dict[str, int]]:
    """The offsets Spark's Kafka source started the first batch from."""
    path = query_dir / "sources" / "0" / "0"
    try:
        lines = path.read_bytes().lstrip(b"\0").decode().splitlines()
        found = json.loads(next(ln for ln in lines if ln.startswith("{")))
        return {t: {p: int(o) for p, o in parts.items()} for t, parts in found.items()}
    except (OSError, StopIteration, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} (the first batch's start offsets) is missing or "
                              f"damaged ({exc})") from None


def last_batches(query_dir: Path) -> tuple[int, int]:
    """(last batch committed, last batch planned) in Spark's logs; -1 where there is none."""
    commits = _log_ids(Path(query_dir) / "commits")
    offsets = _log_ids(Path(query_dir) / "offsets")
    committed = commits[-1] if commits else -1
    planned = max(offsets[-1] if offsets else -1, committed)
    return committed, planned
