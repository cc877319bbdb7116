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
