"""Counting the cells a query merges, from rows as DataFusion hands them over."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from streaming.query.window_counts import CellCount

T = [dt.datetime(2026, 11, 23, 10, m, tzinfo=dt.UTC) for m in range(4)]


@pytest.mark.parametrize("views", [False, True], ids=["plain", "views"])
def test_closed_windows_count_once_and_open_ones_once_per_cell(views):
    # two closed cells (a row each), two open cells (10:02 in two batches, 10:03 in one)
    starts = [T[0], T[1], T[2], T[2], T[3]]
    groups = ["a", "a", "a", "a", "b"]
    blobs = [b"\x01" * 40, b"\x02", b"\x03" * 9, b"\x04", b"\x05" * 70]
    final = [True, True, False, False, None]
    rows = pa.table({
        "bytes": pa.array(blobs, pa.binary_view() if views else pa.binary()),
        "window_start": pa.array(starts, pa.timestamp("us", tz="UTC")),
        "group_key": pa.array(groups, pa.string_view() if views else pa.string()),
        "final": pa.array(final, pa.bool_())})
    cells = CellCount()
    cells.add(rows.slice(0, 3))
    cells.add(rows.slice(3))
    assert (cells.final, len(cells.open), cells.count) == (2, 2, 4)


def test_all_closed_windows_need_no_filter():
    rows = pa.table({"bytes": pa.array([b"x", b"y"], pa.binary_view()),
                     "window_start": pa.array(T[:2], pa.timestamp("us", tz="UTC")),
                     "group_key": pa.array(["", ""], pa.string_view()),
                     "final": pa.array([True, True])})
    cells = CellCount()
    cells.add(rows)
    assert cells.count == 2
