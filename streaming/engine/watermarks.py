"""The event-time watermark: one per input partition, the batch's is their minimum.

Spark's own watermark is global: the latest event time over all partitions minus the
delay. Replaying a log through a topic of several partitions then makes the on-time
events of a partition that lags behind another "late". Here, as in Flink and Kafka
Streams, every input partition (a Kafka topic-partition, a backfill's log) keeps its
own latest event time, and the watermark of a batch is

    max(previous watermark, min over active partitions of (latest event time) - delay)

where a partition is *active* if it delivered records in the previous batch or within
``idle_timeout`` (batch time) of this one, so a partition that went quiet stops holding
the others back. A
backfill's log that has been read to its end is idle at once. With no active
partition the watermark stays where it was. An event ahead of its batch's time (a device
clock running fast, accepted within ``max_future``) is aggregated but does not count for
its partition's latest event time, and no latest event time counts beyond the batch's
own time: such an event can neither carry the watermark past the present nor make the
real-time events after it late.

A batch also finalises windows ahead of its own watermark: after batch N runs, every
later watermark is at least

    closing(N) = max(watermark of N, min over partitions not idle at batch N's time of
                     (latest event time, at most batch N's time) - delay)

(a partition idle at batch N's time is idle for batch N+1 too, the minimum over more
partitions is at most the one over fewer, and the batch time only grows), so a window
that ends by then can receive no more on-time events. Batch N writes such a window
once, final, instead of leaving it open for batch N+1 to rewrite: memory holds only
the windows the data has not yet passed, even when one batch spans months of event
time (a backfill, a first batch over a backlog). The next watermark is never below
``closing(N)`` (kept in the file), even if the clock went backwards, so a finalised
window never takes an on-time event.

The watermark of batch N is computed from the state after batch N-1 and written to
``<checkpoint>/watermarks/N.json`` before batch N runs; a re-run of batch N after a
crash reads it back, so it decides exactly as the first run did. After the batch,
the same file gets the partitions' new state. Files are replaced atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from streaming.errors import CheckpointError
from streaming.spec.model import Spec

#: watermark files kept behind the newest (older ones are deleted)
KEEP = 100


class WatermarkLog:
    """Per-batch watermarks of one checkpoint (see the module docstring)."""

    def __init__(self, folder: Path, spec: Spec) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.delay_ms = int(spec.events.watermark_s * 1000)
        self.idle_ms = int(spec.events.idle_timeout_s * 1000)

    def _path(self, batch_id: int) -> Path:
        return self.folder / f"{batch_id}.json"

    def _read(self, batch_id: int) -> dict[str, Any] | None:
        path = self._path(batch_id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            int(data["watermark_ms"])
            return data
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"watermark file {path} is damaged; refusing to guess the "
                                  "watermark of that batch. Restore it, or remove the "
                                  "checkpoint and the tables to start over") from None

    def _write(self, batch_id: int, data: dict[str, Any]) -> None:
        path = self._path(batch_id)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)

    def recorded(self, batch_id: int) -> bool:
        """Whether ``batch_id`` ran to its end with its watermark kept here."""
        data = self._read(batch_id)
        return data is not None and data.get("after") is not None

    def _previous(self, batch_id: int) -> dict[str, Any]:
        """The state after the newest batch before ``batch_id`` (nothing: a fresh start)."""
        ids = sorted(int(p.stem) for p in self.folder.glob("*.json") if p.stem.isdigit()
                     and int(p.stem) < batch_id)
        if not ids:
            return {"watermark_ms": 0, "partitions": {}, "timestamp_ms": None}
        prev = self._read(ids[-1]) or {}
        if prev.get("after") is None:
            raise CheckpointError(
                f"batch {ids[-1]} of {self.folder.parent} started but never recorded its end, "
                f"yet batch {batch_id} is running; refusing to guess the watermark")
        # files written before windows were finalised early have no closing watermark
        watermark = max(int(prev["watermark_ms"]), int(prev.get("closing_ms", 0)))
        return {"watermark_ms": watermark, "partitions": prev["after"],
                "timestamp_ms": prev.get("timestamp_ms")}

    def for_batch(self, batch_id: int, timestamp_ms: int, *,
                  finished: frozenset[str] = frozenset()) -> int:
        """The watermark of ``batch_id``: read back if fixed already, else fixed now.

        ``finished`` names input partitions that will deliver nothing more (a
        backfill's logs read to the end).
        """
        fixed = self._read(batch_id)
        if fixed is not None:
            return int(fixed["watermark_ms"])
        prev = self._previous(batch_id)
        watermark = int(prev["watermark_ms"])
        # an event time ahead of the batch's own time (a device clock running fast) never
        # carries the watermark past it: the real-time events that follow stay on time
        last = prev["timestamp_ms"]
        active = [min(p["latest_ms"], timestamp_ms) for name, p in prev["partitions"].items()
                  if name not in finished and (p["active_ms"] == last
                                               or timestamp_ms - p["active_ms"] <= self.idle_ms)]
        if active:
            watermark = max(watermark, min(active) - self.delay_ms)
        self._write(batch_id, {"watermark_ms": watermark, "timestamp_ms": timestamp_ms,
                               "after": None})
        return watermark

    def _fixed(self, batch_id: int) -> dict[str, Any]:
        fixed = self._read(batch_id)
        if fixed is None:
            raise CheckpointError(f"batch {batch_id} ran without a fixed watermark")
        return fixed

    def _after(self, batch_id: int, fixed: dict[str, Any], summary: Any) -> dict[str, Any]:
        """The partitions' state after ``batch_id`` (from its :class:`BatchSummary`)."""
        prev = self._previous(batch_id)
        parts = {k: dict(v) for k, v in prev["partitions"].items()}
        ts = int(fixed["timestamp_ms"])
        for name in summary.partitions:
            entry = parts.setdefault(name, {"latest_ms": None, "active_ms": ts})
            entry["active_ms"] = ts
        for name, latest in summary.partition_event_ms.items():
            entry = parts.setdefault(name, {"latest_ms": latest, "active_ms": ts})
            if entry["latest_ms"] is None or latest > entry["latest_ms"]:
                entry["latest_ms"] = latest
        # a partition that delivered only records without an event time has no latest yet
        return {k: v for k, v in parts.items() if v["latest_ms"] is not None}

    def _closing(self, fixed: dict[str, Any], parts: dict[str, Any]) -> int:
        ts = int(fixed["timestamp_ms"])
        closing = int(fixed["watermark_ms"])
        # a partition already idle at this batch's time stays idle for the next watermark
        # unless it delivers in this batch (then its active_ms is this batch's time)
        latest = [min(p["latest_ms"], ts) for p in parts.values()
                  if p["active_ms"] == ts or ts - p["active_ms"] <= self.idle_ms]
        if latest:
            closing = max(closing, min(latest) - self.delay_ms)
        return closing

    def closing(self, batch_id: int, summary: Any) -> int:
        """The watermark every batch after ``batch_id`` will have at least (see above)."""
        fixed = self._fixed(batch_id)
        return self._closing(fixed, self._after(batch_id, fixed, summary))

    def record(self, batch_id: int, summary: Any) -> None:
        """Store the partitions' state after ``batch_id`` (from its :class:`BatchSummary`)."""
        fixed = self._fixed(batch_id)
        parts = self._after(batch_id, fixed, summary)
        self._write(batch_id, dict(fixed, after=parts, closing_ms=self._closing(fixed, parts)))
        for old in self.folder.glob("*.json"):
            if old.stem.isdigit() and int(old.stem) < batch_id - KEEP:
                old.unlink(missing_ok=True)
