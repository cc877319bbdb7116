"""The pending-batch files and the one writer thread of streaming.engine.write_behind."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from streaming.engine.write_behind import BatchWriteError, WriteBehind


def _table(n: int) -> pa.Table:
    return pa.table({"kind": ["m"] * n, "b": [bytes([i % 256]) * 3 for i in range(n)]})


def test_a_saved_batch_reads_back_identical_and_is_listed_in_order(tmp_path):
    behind = WriteBehind(tmp_path / "pending")
    assert behind.pending() == []  # no folder yet
    for batch_id in (12, 3, 7):
        behind.save(batch_id, _table(batch_id))
    assert behind.pending() == [3, 7, 12]
    assert behind.load(7).equals(_table(7))
    behind.drop(7)
    assert behind.pending() == [3, 12]
    # no temporary file is left behind, and none is taken for a batch
    assert sorted(p.name for p in (tmp_path / "pending").iterdir()) == ["12.arrow", "3.arrow"]


def test_a_finished_batch_drops_its_file_and_batches_finish_in_order(tmp_path):
    behind = WriteBehind(tmp_path / "pending")
    done: list[tuple[str, int]] = []
    release = threading.Event()

    def finish(batch_id: int):
        def run() -> None:
            done.append(("start", batch_id))
            if batch_id == 0:
                release.wait(5)  # batch 1 must not start before batch 0 ends
            done.append(("end", batch_id))
        return run

    behind.save(0, _table(1))
    behind.submit(0, finish(0))
    behind.save(1, _table(1))
    timer = threading.Timer(0.2, release.set)
    timer.start()
    behind.submit(1, finish(1))  # waits for batch 0 first
    assert ("end", 0) in done
    behind.wait()
    assert done == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    assert behind.pending() == []
    timer.join()


def test_a_failed_batch_keeps_its_file_and_fails_the_next_wait_in_one_line(tmp_path):
    behind = WriteBehind(tmp_path / "pending")
    behind.save(4, _table(2))

    def fail() -> None:
        raise OSError(28, "No space left on device")

    behind.submit(4, fail)
    with pytest.raises(BatchWriteError) as caught:
        behind.wait()
    assert str(caught.value) == "batch 4: OSError: [Errno 28] No space left on device"
    assert isinstance(caught.value.__cause__, OSError)
    assert behind.failed and behind.pending() == [4]  # a restart finishes it
    with pytest.raises(BatchWriteError):
        behind.check()  # and every later batch is refused
    with pytest.raises(BatchWriteError):
        behind.submit(5, lambda: None)
