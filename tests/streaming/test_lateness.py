"""The late-event oracle of the pipeline tests (``lateness.py``) is sound.

Whatever the batch boundaries, whether partitions go idle, and in what order the
partitions' records interleave, the watermark the service computes
(:class:`streaming.watermarks.WatermarkLog`) makes exactly the events the oracle calls
late late; and the oracle refuses an event whose fate depends on the batches.
"""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
from lateness import Runs, event_ms

from streaming.engine.watermarks import WatermarkLog
from streaming.spec.model import default_spec_path, load_spec

DELAY_S = 120
NOW_MS = 1_900_000_000_000  # batch times: after every event time


def _batches(rng: random.Random, run: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    """A random cut of a run into batches: each partition's records in order, any split."""
    by_part: dict[str, list[tuple[str, int]]] = {}
    for e in run:
        by_part.setdefault(e[0], []).append(e)
    n = rng.randint(1, 4)
    out: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    for events in by_part.values():
        cuts = sorted(rng.randint(0, len(events)) for _ in range(n - 1))
        for b, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(events)], strict=True)):
            out[b] += events[lo:hi]
    return [b for b in out if b]


def _late_by_the_service(tmp_path, rng: random.Random, runs: list[list[tuple[str, int]]],
                         idle_s: float) -> list[list[bool]]:
    spec = load_spec(default_spec_path())
    spec = replace(spec, events=replace(spec.events, watermark_s=DELAY_S, idle_timeout_s=idle_s))
    log = WatermarkLog(tmp_path / f"wm-{rng.random()}", spec)
    batch_id, now = 0, NOW_MS
    late: dict[tuple[str, int], bool] = {}
    for run in runs:
        for batch in _batches(rng, run):
            now += rng.choice((100, 1_000, 60_000))  # some gaps longer than the idle timeout
            watermark = log.for_batch(batch_id, now)
            latest: dict[str, int] = {}
            for part, ms in batch:
                late[(part, ms)] = ms < watermark
                latest[part] = max(ms, latest.get(part, ms))
            log.record(batch_id, SimpleNamespace(partitions=sorted(latest),
                                                 partition_event_ms=latest))
            batch_id += 1
    return [[late[e] for e in run] for run in runs]


def _random_runs(rng: random.Random) -> list[list[tuple[str, int]]]:
    base = 1_790_000_000_000
    runs = []
    for r in range(rng.randint(1, 4)):
        start = base + r * 200_000
        on_time = [(rng.choice("ab"), start + rng.randrange(100_000)) for _ in range(6)]
        # mostly older than any watermark of the run; some close enough to be undecided
        old = [(rng.choice("ab"), start - rng.randrange(150_000, 800_000))
               for _ in range(rng.randint(0, 3) if r else 0)]
        runs.append(rng.sample(on_time + old, len(on_time) + len(old)))
    return runs


@pytest.mark.parametrize("idle_s", [3600.0, 30.0])
def test_the_oracle_agrees_with_the_watermark_under_any_batches(tmp_path, idle_s):
    rng = random.Random(5)
    decided = refused = late_seen = 0
    for _ in range(120):
        runs = _random_runs(rng)
        oracle = Runs(DELAY_S)
        try:
            expected = [oracle.add(run) for run in runs]
        except AssertionError:
            refused += 1
            continue
        decided += 1
        late_seen += sum(map(sum, expected))
        for _ in range(3):
            assert _late_by_the_service(tmp_path, rng, runs, idle_s) == expected, runs
    assert decided > 40 and refused > 10 and late_seen > 80, (decided, refused, late_seen)


def _after_one_run() -> Runs:
    runs = Runs(DELAY_S)
    assert runs.add([("a", 1_000_000), ("b", 1_000_000)]) == [False, False]
    assert (runs.low_ms, runs.high_ms) == (0, 880_000)
    return runs


def test_the_bounds_are_tight_and_an_undecided_event_is_refused():
    # every watermark of the next run is at least 880,000: just below it is late
    assert _after_one_run().add([("a", 879_999), ("b", 1_100_000)]) == [True, False]
    # the ceiling is 1,200,000, so no watermark exceeds 1,080,000: at it is on time
    assert _after_one_run().add([("a", 1_200_000), ("a", 1_080_000)]) == [False, False]
    # 1 ms earlier it is late if a batch before it held the 1,200,000 event, else not
    with pytest.raises(AssertionError, match="depending on the batch boundaries"):
        _after_one_run().add([("a", 1_200_000), ("a", 1_079_999)])
    # a partition that first delivers an old event does not take the watermark back
    runs = _after_one_run()
    assert runs.add([("c", 500_000)]) == [True]
    assert runs.next_low_ms == 880_000


def test_event_ms():
    assert event_ms("1970-01-01T00:00:01.250Z") == 1250
    assert event_ms("1970-01-01T01:00:00+01:00") == 0
