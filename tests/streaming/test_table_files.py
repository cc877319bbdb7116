"""A batch's commit against a table another writer compacted meanwhile (delta-rs only)."""

from __future__ import annotations

import pyarrow as pa
import pytest


def test_a_commit_that_replaces_a_file_another_writer_replaced_is_refused(tmp_path):
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from streaming.engine.table_files import commit_files, write_file

    path = str(tmp_path / "t")
    schema = pa.schema([("window_name", pa.string()), ("count", pa.int64())])
    write_deltalake(path, pa.table({"window_name": ["a"], "count": [1]}, schema=schema))
    write_deltalake(path, pa.table({"window_name": ["b"], "count": [2]}, schema=schema),
                    mode="append")
    selected = {a["path"]: a["size_bytes"] for a in
                pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()}
    assert len(selected) == 2
    DeltaTable(path).optimize.compact()  # `maintain`, between the selection and the commit
    merged = write_file("t", path, pa.table({"window_name": ["a", "b"], "count": [1, 2]},
                                            schema=schema), batch_id=3, final=None)
    with pytest.raises(CommitFailedError, match="replaced by another writer"):
        commit_files(path, schema, [merged], selected, app_id="x", batch_id=3,
                     partitioned=False)
    rows = DeltaTable(path).to_pyarrow_table()
    assert sorted(rows.column("count").to_pylist()) == [1, 2]  # nothing counted twice
    # selected again from the table as it is now, the same commit goes through
    now = {a["path"]: a["size_bytes"] for a in
           pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()}
    commit_files(path, schema, [merged], now, app_id="x", batch_id=3, partitioned=False)
    assert sorted(DeltaTable(path).to_pyarrow_table().column("count").to_pylist()) == [1, 2]
