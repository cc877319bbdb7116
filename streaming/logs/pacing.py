"""When replay sends each record: its pace.

(Where to: :class:`streaming.kafka.batch_producer.Partitioner`.)
"""

from __future__ import annotations

from collections.abc import Iterable


class Pacer:
    """When each record is due, in seconds after the first, for a speed and/or a rate cap.

    Event time is taken relative to the first record that has one and never
    goes backwards (the largest seen so far), so out-of-order records go out
    at once instead of sleeping backwards; records without a time go out with
    the one before.
    """

    def __init__(self, speed: float | None = None, max_rate: float | None = None) -> None:
        self.speed, self.max_rate = speed, max_rate
        self._first: int | None = None
        self._high = 0
        self._count = 0

    def due(self, time_ms: int | None) -> float:
        at = 0.0
        if self.speed is not None and time_ms is not None:
            if self._first is None:
                self._first = self._high = time_ms
            elif time_ms > self._high:
                self._high = time_ms
            at = (self._high - self._first) / 1000.0 / self.speed
        elif self.speed is not None and self._first is not None:
            at = (self._high - self._first) / 1000.0 / self.speed
        if self.max_rate is not None:
            at = max(at, self._count / self.max_rate)
        self._count += 1
        return at


def pace_schedule(times_ms: Iterable[int | None], speed: float | None = None,
                  max_rate: float | None = None) -> list[float]:
    """Seconds after the start at which each record is due (the replay's own math).

    >>> pace_schedule([1000, 3000, 2000, 7000], speed=2.0)
    [0.0, 1.0, 1.0, 3.0]
    >>> pace_schedule([0, 0, 0], max_rate=10)
    [0.0, 0.1, 0.2]
    """
    pacer = Pacer(speed, max_rate)
    return [pacer.due(t) for t in times_ms]
