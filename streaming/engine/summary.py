"""What one micro-batch did: :class:`BatchSummary`, built from the pass's bookkeeping rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class BatchSummary:
    batch_id: int
    watermark_ms: int
    batch_timestamp_ms: int
    rows: int = 0
    valid: int = 0
    late: int = 0
    #: late rows folded into their (closed) windows under ``late = "update"``; also
    #: counted in ``valid``
    late_absorbed: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    #: per (window name, sketch name): (start of the newest window the batch touched,
    #: the sketch's kind, this batch's sketch of that window, every group merged)
    views: dict[tuple[str, str], tuple[int, str, Any]] = field(default_factory=dict)
    #: per (window name, window start) still open after the batch: the window's end (µs),
    #: the partial sketch rows the batch wrote there and their bytes
    open_windows: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    #: CPU seconds the driver process spent on the batch (all its threads; the
    #: executors' Python workers and the JVM are other processes)
    driver_cpu_s: float = 0.0
    #: source (Kafka) timestamps of the batch's records, in 100 ms buckets:
    #: {bucket start in ms: records}; filled when the pipeline tracks latency
    source_ts_hist: dict[int, int] = field(default_factory=dict)
    committed_at: float = 0.0
    #: the latest event time of the batch's parsed records (late ones included), in ms
    max_event_ms: int | None = None
    #: per input partition, the latest event time of its parsed records, in ms
    partition_event_ms: dict[str, int] = field(default_factory=dict)
    #: the input partitions the batch read
    partitions: list[str] = field(default_factory=list)
    #: passes that ran (one per input partition with records), and the distinct
    #: processes (host:pid) that ran them
    tasks: int = 0
    workers: list[str] = field(default_factory=list)
    #: Kafka offsets in the batch's range that delivered no record (data aged out by
    #: retention or deleted, with failOnDataLoss off; also transaction markers or
    #: compaction, which lose nothing), and partitions whose offsets went backwards
    offset_gap: int = 0
    offset_resets: int = 0
    #: the watermark every later batch will have at least: windows ending by then
    #: are final after this batch (see :meth:`WatermarkLog.closing`)
    closing_ms: int = 0


def summarize(stats_rows: list[bytes], batch_id: int, watermark_ms: int, timestamp_ms: int,
              *, offsets_expected: int = -1, offset_resets: int = 0) -> BatchSummary:
    """The summary of a batch from its passes' ``kind = "p"`` rows (JSON).

    ``offsets_expected``: the records the batch's offset ranges hold (-1: unknown).
    """
    summary = BatchSummary(batch_id, watermark_ms, timestamp_ms)
    codes: dict[str, int] = {}
    latest: dict[str, int] = {}
    seen: set[str] = set()
    workers: set[str] = set()
    for r in stats_rows:
        st = orjson.loads(r)
        summary.tasks += 1
        workers.add(st.get("worker", "?"))
        summary.rows += int(st["rows"])
        summary.valid += int(st["valid"])
        summary.late_absorbed += int(st.get("late_absorbed", 0))
        for k, v in st["codes"].items():
            codes[k] = codes.get(k, 0) + int(v)
        for p, us in st["latest"].items():
            latest[p] = max(latest.get(p, us), us)
        seen.update(st["partitions"])
        for b, n in st.get("hist", {}).items():
            summary.source_ts_hist[int(b)] = summary.source_ts_hist.get(int(b), 0) + n
    summary.quarantined = dict(sorted(codes.items()))
    summary.late = codes.get("late", 0) + summary.late_absorbed
    summary.partition_event_ms = {p: us // 1000 for p, us in sorted(latest.items())}
    summary.partitions = sorted(seen)
    summary.workers = sorted(workers)
    summary.max_event_ms = max(summary.partition_event_ms.values(), default=None)
    summary.offset_resets = offset_resets
    if offsets_expected >= 0:
        summary.offset_gap = max(0, offsets_expected - summary.rows)
    return summary
