"""A table's batch as its data holds it: restores, lost commits and compactions (delta-rs only).

Found on the landed tree: a Delta RESTORE keeps each app's newest transaction, so a table
restored to an old version still claimed the newest batch, and a run went on after it
without a word. These tests build the histories with delta-rs and check the batch the
walk finds against the batch whose data the table really holds (its rows say).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from streaming.engine.agreement import check_at_start, tables_to_write
from streaming.engine.table_batches import commit_metadata, table_batch
from streaming.errors import CheckpointError

APP = "streamsketch-aggregates-test"


def _batch(path: str, b: int, *, ours: bool = True, app: str = APP) -> None:
    from deltalake import CommitProperties, Transaction, write_deltalake

    write_deltalake(path, pa.table({"batch": [b]}), mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app, b)],
                        custom_metadata=commit_metadata(app, b) if ours else None))


def _compact(path: str) -> None:
    """A rewrite that changes no value and carries no batch (like ``maintain``)."""
    from deltalake import DeltaTable, write_deltalake

    rows = DeltaTable(path).to_pyarrow_table()
    write_deltalake(path, rows, mode="overwrite")


def _rows_batch(path: str) -> int:
    from deltalake import DeltaTable

    return max(DeltaTable(path).to_pyarrow_table().column("batch").to_pylist())


def test_each_batch_commit_names_its_batch(tmp_path):
    path = str(tmp_path / "t")
    for b in range(5):
        _batch(path, b)
        assert table_batch(path, APP) == b == _rows_batch(path)


def test_a_restore_gives_the_batch_of_the_restored_version(tmp_path):
    from deltalake import DeltaTable

    path = str(tmp_path / "t")
    for b in range(6):
        _batch(path, b)
    DeltaTable(path).restore(2)  # versions 0..5 hold batches 0..5
    assert DeltaTable(path).transaction_version(APP) == 5, "Delta keeps the newest txn"
    assert table_batch(path, APP) == 2 == _rows_batch(path)
    _compact(path)  # compactions after the restore are passed over
    assert table_batch(path, APP) == 2 == _rows_batch(path)
    DeltaTable(path).restore(1)  # a restore of a restore
    assert table_batch(path, APP) == 1 == _rows_batch(path)
    _batch(path, 2)  # written again after the restore: the newest commit says
    assert table_batch(path, APP) == 2 == _rows_batch(path)


def test_a_lost_newest_commit_takes_the_table_back_a_batch(tmp_path):
    path = str(tmp_path / "t")
    for b in range(4):
        _batch(path, b)
    os.remove(tmp_path / "t" / "_delta_log" / f"{3:020d}.json")
    assert table_batch(path, APP) == 2 == _rows_batch(path)


def test_a_long_walk_past_many_compactions(tmp_path):
    path = str(tmp_path / "t")
    _batch(path, 0)
    _batch(path, 1)
    for _ in range(12):
        _compact(path)
    assert table_batch(path, APP) == 1


def test_tables_written_before_commits_named_their_batch_fall_back_to_the_txn(tmp_path):
    path = str(tmp_path / "t")
    for b in range(3):
        _batch(path, b, ours=False)
    assert table_batch(path, APP) == 2
    assert table_batch(path, "another-app") is None


def test_a_restore_to_a_point_in_time_gives_the_batch_then(tmp_path):
    import datetime as dt
    import time

    from deltalake import DeltaTable

    path = str(tmp_path / "t")
    for b in range(3):
        _batch(path, b)
        time.sleep(0.05)
    history = {h["version"]: h["timestamp"] for h in DeltaTable(path).history()}
    at = dt.datetime.fromtimestamp((history[1] + 1) / 1000, dt.UTC)
    DeltaTable(path).restore(at)
    assert DeltaTable(path).history(1)[0]["operationParameters"].get("datetime")
    assert table_batch(path, APP) == 1 == _rows_batch(path)


class _Spec:
    class sink:  # noqa: N801 - the attribute path a Spec has
        checkpoint = "ck"


def test_tables_behind_the_committed_batches_are_refused():
    paths = {"quarantine": "q", "aggregates": "a", "sketches": "s"}
    check_at_start(_Spec, paths, {"quarantine": 5, "aggregates": 5, "sketches": 6}, (5, 6), 0)
    with pytest.raises(CheckpointError, match=r"table a holds batches up to 2, but the "
                                              r"checkpoint committed batches up to 5"):
        check_at_start(_Spec, paths, {"quarantine": 5, "aggregates": 2, "sketches": 5},
                       (5, 5), 0)
    with pytest.raises(CheckpointError, match="table q holds no batch"):
        check_at_start(_Spec, paths, {"quarantine": -1, "aggregates": 5, "sketches": 5},
                       (5, 5), 0)
    with pytest.raises(CheckpointError, match="holds batch 7 of checkpoint ck"):
        check_at_start(_Spec, paths, {"quarantine": 7, "aggregates": 5, "sketches": 5},
                       (5, 6), 0)
    # a checkpoint an earlier version made: its tables lag where batches changed nothing
    check_at_start(_Spec, paths, {"quarantine": 1, "aggregates": 5, "sketches": 4},
                   (5, 5), 6)


def test_a_batch_writes_the_tables_that_lack_it_and_refuses_a_gap():
    paths = {"quarantine": "q", "aggregates": "a", "sketches": "s"}
    held = {"quarantine": 4, "aggregates": 5, "sketches": 9}
    assert tables_to_write(paths, held, 5, 0) == ["quarantine"]
    assert tables_to_write(paths, {n: 4 for n in paths}, 5, 0) == list(paths)
    with pytest.raises(CheckpointError, match="table q holds batches up to 2"):
        tables_to_write(paths, {"quarantine": 2, "aggregates": 4, "sketches": 4}, 5, 0)
    assert tables_to_write(paths, {"quarantine": 2, "aggregates": 4, "sketches": 4}, 5,
                           5) == list(paths)
