"""A batch's writes behind Spark's next batch: the driver's work overlaps the next pass.

Spark commits a micro-batch's offsets when ``foreachBatch`` returns, and plans the
next batch only then. A batch's driver work (merging its partials into the open
windows, the Delta writes) would keep the Python workers and most of the JVM idle
for its whole length. So a batch whose pass output is small is handed over instead:

1. its pass output (the partial rows and the quarantined records) is written to
   ``<checkpoint>/pending/<batch>.arrow`` (Arrow IPC, replaced atomically);
2. ``foreachBatch`` returns, Spark commits the batch and runs the next one's pass,
   while a thread merges and writes this one, then deletes the file.

At most one batch is behind: the next batch waits for it before handing itself
over, and a batch with a large output (one spanning months of a backfilled log)
is finished in place, so that two batches' partials never share the memory.

The file is what makes this exactly once. Once Spark has committed a batch it will
not run it again; if the process dies before the batch's writes end, the restart
finishes the batch from its file before the query starts. Its writes are idempotent
like a re-run's (each carries the batch id, and a window that already holds the
batch is left alone), so the file may also be finished twice: when Spark had not
yet committed the batch, it re-runs it too, and that run changes nothing. A failed
write stops the query at the next batch, or at its end, as :class:`BatchWriteError`.

Durability is that of Spark's own checkpoint logs on the same file system: the
file is complete once renamed, and survives the death of the process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

#: the largest pass output (bytes in Arrow) handed over; a larger batch is finished in
#: place, so that its merge does not add to the next batch's pass in memory
OVERLAP_MAX_BYTES = 32 << 20


class BatchWriteError(Exception):
    """A batch's writes failed after Spark committed it; a restart finishes it from its
    pending file."""

    def __init__(self, batch_id: int, cause: BaseException) -> None:
        text = str(cause).strip().splitlines()
        what = f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__
        super().__init__(f"batch {batch_id}: {what}")
        self.batch_id = batch_id


class WriteBehind:
    """The pending batches of one checkpoint and the thread that finishes them."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._thread: threading.Thread | None = None
        self._failure: BatchWriteError | None = None

    def _path(self, batch_id: int) -> Path:
        return self.folder / f"{batch_id}.arrow"

    def pending(self) -> list[int]:
        """Batch ids with a pending file, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem) for p in self.folder.glob("*.arrow") if p.stem.isdigit())

    def save(self, batch_id: int, table: pa.Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(batch_id)
        tmp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)

    def load(self, batch_id: int) -> pa.Table:
        with pa.OSFile(str(self._path(batch_id)), "rb") as source:
            return ipc.open_file(source).read_all()

    def drop(self, batch_id: int) -> None:
        self._path(batch_id).unlink(missing_ok=True)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def check(self) -> None:
        """Raise the failure of a batch finished behind, if one failed."""
        if self._failure is not None:
            raise self._failure

    def wait(self) -> None:
        """Wait for the batch behind, if any, and raise its failure."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        self.check()

    def submit(self, batch_id: int, finish: Callable[[], object]) -> None:
        """Finish ``batch_id`` (saved already) in the background, after the one behind."""
        self.wait()

        def run() -> None:
            try:
                finish()
                self.drop(batch_id)
            except BaseException as exc:  # noqa: BLE001 - handed to the query's thread
                self._failure = BatchWriteError(batch_id, exc)
                self._failure.__cause__ = exc

        self._thread = threading.Thread(target=run, name=f"streamsketch-batch-{batch_id}",
                                        daemon=True)
        self._thread.start()
