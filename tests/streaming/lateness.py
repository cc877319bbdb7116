"""Which events are late, decided from the events alone, whatever the batch boundaries.

The ground truth of the tests that check late decisions. The pipeline's watermark of a
batch (:mod:`streaming.engine.watermarks`, ``docs/spec.md``) is

    max(previous watermark, min over active input partitions of their latest event time - delay)

and an event earlier than it is late. Where the batches of a run begin and end is
Spark's choice (or the backfill's batch size), so a test cannot know each batch's
watermark; it can bound it if it feeds the pipeline in *runs*: every record of a run is
read after every record of the runs before it (the test produces a run's records, then
runs the pipeline until it has read them). For every batch of run ``r``:

* the watermark is at least ``floor - delay``, where ``floor`` is the least, over the
  input partitions that delivered event times before run ``r``, of the latest event time
  each delivered. Idle partitions only drop out of the minimum, which raises it, and the
  watermark never goes back, so the highest floor of the runs so far holds.
* It is at most ``ceiling - delay``, where ``ceiling`` is the latest event time of the
  runs up to and including ``r``.

An event earlier than the lower bound is late in any batch of its run; one not earlier
than the upper bound is on time in any batch. An event between the two would be late or
not depending on where batches end: :meth:`Runs.add` refuses it, so the test's data must
be built to leave none (e.g. a run spanning less than the delay, after a first run that
sets the floor). Event times must lie in the past: the pipeline caps a partition's latest
event time at its batch's time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable


def event_ms(ts: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 event time (``...Z`` or an offset)."""
    moment = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


class Runs:
    """The runs fed to one checkpoint so far, and the watermark bounds they imply."""

    def __init__(self, delay_s: float) -> None:
        self.delay_ms = int(delay_s * 1000)
        self.latest: dict[Hashable, int] = {}  # input partition -> latest event time
        self.floor: int | None = None          # highest floor of the runs so far
        self.ceiling: int | None = None
        #: bounds of the watermark of every batch of the last run added
        self.low_ms = 0
        self.high_ms = 0

    @property
    def next_low_ms(self) -> int | None:
        """What the watermark of every batch of the next run is at least (None: no bound)."""
        if not self.latest:
            return None
        floor = min(self.latest.values())
        return (floor if self.floor is None else max(self.floor, floor)) - self.delay_ms

    def add(self, events: Iterable[tuple[Hashable, int]]) -> list[bool]:
        """One run's events, (input partition, event time in ms): whether each is late.

        Raises:
            AssertionError: an event whose lateness depends on the batch boundaries.
        """
        events = list(events)
        low = self.next_low_ms
        if self.latest:
            self.floor = low + self.delay_ms
        times = [ms for _, ms in events]
        if times:
            self.ceiling = max(times) if self.ceiling is None else max(self.ceiling, max(times))
        high = None if self.ceiling is None else self.ceiling - self.delay_ms
        late = []
        for part, ms in events:
            if low is not None and ms < low:
                late.append(True)
            elif high is not None and ms >= high:
                late.append(False)
            else:
                raise AssertionError(
                    f"an event at {ms} ms in partition {part!r} is late or not depending on the "
                    f"batch boundaries: the watermark of its run lies in [{low}, {high}] ms")
        for part, ms in events:
            self.latest[part] = max(ms, self.latest.get(part, ms))
        self.low_ms = 0 if low is None else low
        self.high_ms = self.low_ms if high is None else high
        return late
