"""Per-partition watermarks, without a JVM: the minimum over active partitions, fixed
before a batch runs and read back by its re-run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from streaming.engine.watermarks import WatermarkLog
from streaming.errors import CheckpointError
from streaming.spec.model import default_spec_path, load_spec

DELAY_MS = 120_000  # the bundled spec's 2 minutes
IDLE_MS = 30_000
NOW = 1_800_000_000_000  # batch times: the event times below are all in the past


@dataclass
class Summary:
    partitions: list[str]
    partition_event_ms: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def log(tmp_path):
    spec = load_spec(default_spec_path())
    spec = replace(spec, events=replace(spec.events, idle_timeout_s=IDLE_MS / 1000))
    return WatermarkLog(tmp_path / "wm", spec)


def run(log, batch, ts, latest, *, finished=frozenset()):
    wm = log.for_batch(batch, NOW + ts, finished=finished)
    log.record(batch, Summary(sorted(latest), latest))
    return wm


def test_the_slowest_active_partition_holds_the_watermark(log):
    assert run(log, 0, 1_000, {"t:0": 10_000_000, "t:1": 5_000_000}) == 0
    assert run(log, 1, 2_000, {"t:0": 11_000_000, "t:1": 6_000_000}) == 5_000_000 - DELAY_MS
    # the watermark never goes back, even if the minimum does (a new partition appears)
    assert run(log, 2, 3_000, {"t:2": 1_000_000}) == 6_000_000 - DELAY_MS


def test_an_idle_partition_stops_holding_it_back(log):
    run(log, 0, 0, {"t:0": 10_000_000, "t:1": 5_000_000})
    # t:1 delivers nothing more; within idle_timeout it still holds the watermark
    assert run(log, 1, IDLE_MS, {"t:0": 12_000_000}) == 5_000_000 - DELAY_MS
    assert run(log, 2, IDLE_MS + 1, {"t:0": 13_000_000}) == 12_000_000 - DELAY_MS


def test_finished_partitions_are_idle_at_once(log):
    run(log, 0, 0, {"a:0": 5_000_000})
    run(log, 1, 1, {"b:1": 9_000_000})
    assert log.for_batch(2, NOW + 2, finished=frozenset({"a:0"})) == 9_000_000 - DELAY_MS


def test_a_rerun_reads_back_the_fixed_watermark(log, tmp_path):
    run(log, 0, 0, {"t:0": 10_000_000})
    first = log.for_batch(1, NOW + 5)
    assert first == 10_000_000 - DELAY_MS
    # the same batch after a crash, even with other inputs, decides identically
    again = WatermarkLog(log.folder, load_spec(default_spec_path()))
    assert again.for_batch(1, NOW + 99_999_999, finished=frozenset({"t:0"})) == first


def test_a_damaged_file_is_a_loud_error(log):
    run(log, 0, 0, {"t:0": 10_000_000})
    (log.folder / "0.json").write_text("{")
    with pytest.raises(CheckpointError, match="damaged"):
        log.for_batch(1, NOW + 5)


def test_a_batch_that_never_recorded_its_end_is_refused(log):
    log.for_batch(0, NOW)
    with pytest.raises(CheckpointError, match="never recorded its end"):
        log.for_batch(1, NOW + 5)


def test_an_event_from_a_clock_running_ahead_does_not_carry_the_watermark(log):
    # one event 23 h ahead of the batch time: the watermark stops at the batch time
    run(log, 0, 0, {"t:0": NOW + 23 * 3_600_000})
    assert log.for_batch(1, NOW + 1_000) == NOW + 1_000 - DELAY_MS


def test_closing_is_what_the_next_watermark_will_be_at_least(log):
    """Windows that end by ``closing`` are final after the batch: no later batch may take
    an on-time event for them. Checked against the next batch's real watermark over
    random histories: partitions appearing, going idle, delivering again."""
    import random

    rng = random.Random(7)
    for trial in range(40):
        wm_log = WatermarkLog(log.folder.parent / f"trial{trial}", log_spec(log))
        ts, latest = 0, {}
        for batch in range(12):
            ts += rng.choice([1, 1_000, IDLE_MS // 2, IDLE_MS + 1])
            wm = wm_log.for_batch(batch, NOW + ts)
            got = {}
            for p in rng.sample(["t:0", "t:1", "t:2"], rng.randint(0, 3)):
                latest[p] = latest.get(p, 0) + rng.randint(-DELAY_MS, 3 * DELAY_MS)
                got[p] = max(latest[p], 0)
            summary = Summary(sorted(got), got)
            closing = wm_log.closing(batch, summary)
            assert closing >= wm
            wm_log.record(batch, summary)
            nxt = wm_log.for_batch(batch + 1, NOW + ts + rng.choice([0, 1, IDLE_MS]))
            assert nxt >= closing, (trial, batch)
            # for_batch fixed batch + 1's watermark; run it as the next batch
            wm_log.folder.joinpath(f"{batch + 1}.json").unlink()


def test_closing_passes_a_batch_that_spans_months(log):
    # one partition, events over 90 days in a single batch: the windows it passed close
    day = 86_400_000
    assert log.for_batch(0, NOW) == 0
    closing = log.closing(0, Summary(["t:0"], {"t:0": 90 * day}))
    assert closing == 90 * day - DELAY_MS
    # a partition idle at the batch's time does not hold it back; one within the
    # idle timeout does
    log.record(0, Summary(["t:0", "t:1"], {"t:0": 90 * day, "t:1": day}))
    log.for_batch(1, NOW + IDLE_MS + 1)
    assert log.closing(1, Summary(["t:0"], {"t:0": 91 * day})) == 91 * day - DELAY_MS
    log.record(1, Summary(["t:0"], {"t:0": 91 * day}))
    log.for_batch(2, NOW + IDLE_MS + 2)
    assert log.closing(2, Summary(["t:0"], {"t:0": 92 * day})) == 92 * day - DELAY_MS


def test_the_next_watermark_never_falls_below_closing(log):
    # the batch clock going backwards would lower the cap on the latest event times;
    # the next watermark still keeps the windows the previous batch finalised closed
    log.for_batch(0, NOW + 10_000_000)
    log.record(0, Summary(["t:0"], {"t:0": NOW + 9_000_000}))
    closing = max(0, NOW + 9_000_000 - DELAY_MS)
    assert log.for_batch(1, NOW) >= closing


def log_spec(log):
    spec = load_spec(default_spec_path())
    return replace(spec, events=replace(spec.events, idle_timeout_s=IDLE_MS / 1000,
                                        watermark_s=log.delay_ms / 1000))
