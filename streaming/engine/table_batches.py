"""Which batch of a checkpoint a table's data holds, whatever happened to the table since.

Every batch commits to every table of its checkpoint, carrying the batch in two places:
the Delta transaction (``txn``: app id and batch id, what Delta writers use to skip a
write they already made) and the commit's own metadata (:data:`APP_KEY`,
:data:`BATCH_KEY`). The transaction alone cannot be trusted: a Delta ``RESTORE`` (by
Spark or delta-rs) brings the data of an old version back but keeps the newest
transaction of each app, so a restored table claims batches it no longer holds. So the
table's batch is read from its history, newest commit first:

* a commit of ours names its batch;
* a ``RESTORE`` sends the walk on from the version it restored;
* any other commit (a compaction by ``maintain`` or at the end of a run, which changes
  no value) is passed over.

Tables written before commits carried the metadata fall back to the transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from streaming.errors import CheckpointError

APP_KEY = "streamsketch.app"
BATCH_KEY = "streamsketch.batch"

#: commits read first; a longer walk (a RESTORE, many compactions) reads up to the long one
_SHORT, _LONG = 8, 2000


def commit_metadata(app_id: str, batch_id: int) -> dict[str, str]:
    """The commit metadata a batch's commit carries (see the module docstring)."""
    return {APP_KEY: app_id, BATCH_KEY: str(batch_id)}


def _restored_version(info: dict[str, Any], path: str,
                      history: list[dict[str, Any]]) -> int:
    """The version a RESTORE commit restored: given as a version, or as a time (delta-rs:
    ``datetime``, epoch ms; Spark: ``timestamp``), the newest commit at or before it."""
    params = info.get("operationParameters") or {}
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return int(params["version"])
    at_ms = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        at_ms = int(params["datetime"])
    if at_ms is None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            when = dt.datetime.fromisoformat(str(params["timestamp"]).strip('"'))
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            at_ms = int(when.timestamp() * 1000)
    restore = int(info.get("version", -1))
    before = [int(h["version"]) for h in history
              if at_ms is not None and -1 < int(h.get("version", -1)) < restore
              and int(h.get("timestamp", 1 << 62)) <= at_ms]
    if not before:
        raise CheckpointError(
            f"table {path} was restored (version {restore}) to a point this tool cannot "
            f"find in its history ({params}); restore it by version "
            "(RESTORE TABLE ... TO VERSION AS OF N)")
    return max(before)


def _walk(history: list[dict[str, Any]], app_id: str, path: str) -> tuple[bool, Any]:
    """(resolved, batch) from the newest commits; unresolved: (False, version to read the
    transaction at, or None for the newest)."""
    cursor: int | None = None
    for info in history:
        version = int(info.get("version", -1))
        if cursor is not None and version > cursor:
            continue  # undone by a RESTORE
        if info.get(APP_KEY) == app_id and info.get(BATCH_KEY) is not None:
            return True, int(info[BATCH_KEY])
        if info.get("operation") == "RESTORE":
            cursor = _restored_version(info, path, history)
    return False, cursor


def table_batch(path: str, app_id: str) -> int | None:
    """The last batch of ``app_id`` the data of the table at ``path`` holds (None: none)."""
    from deltalake import DeltaTable

    table = DeltaTable(path)
    resolved, found = _walk(table.history(_SHORT), app_id, path)
    if not resolved and table.version() >= _SHORT:
        resolved, found = _walk(table.history(_LONG), app_id, path)
    if resolved:
        return found
    at = table if found is None else DeltaTable(path, version=found)
    version = at.transaction_version(app_id)
    return None if version is None else int(version)
