"""Defaults that don't surprise: generated event times, and a loud line for a bad batch."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from streaming.cli.common import quarantine_alarm
from streaming.cli.produce import event_start

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def test_as_fast_as_possible_with_a_count_ends_at_now():
    start = event_start(None, None, 1_000_000, 1000.0, NOW)
    assert start == NOW - dt.timedelta(seconds=1000)
    # the last event (index count - 1) is at or before now
    assert start + dt.timedelta(seconds=(1_000_000 - 1) / 1000.0) <= NOW


def test_a_given_start_a_paced_rate_or_no_count_keep_today_s_rule():
    given = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert event_start(given, None, 10, 1000.0, NOW) == given
    assert event_start(None, 500.0, 10, 500.0, NOW) is None
    assert event_start(None, None, None, 1000.0, NOW) is None


def _summary(rows: int, **quarantined: int) -> SimpleNamespace:
    return SimpleNamespace(batch_id=3, rows=rows, quarantined=quarantined)


def test_a_batch_mostly_quarantined_names_its_reason_and_cause():
    line = quarantine_alarm(_summary(1000, future_time=600, invalid_json=10))
    assert line is not None
    assert "batch 3 quarantined 610 of 1,000 records, 600 as future_time" in line
    assert "max_future" in line and "--start-time" in line
    line = quarantine_alarm(_summary(10, late=6))
    assert line is not None and "watermark" in line
    line = quarantine_alarm(_summary(10, corrupt=6))
    assert line is not None and "reason column" in line


def test_half_or_less_quarantined_is_quiet():
    assert quarantine_alarm(_summary(1000, future_time=500)) is None
    assert quarantine_alarm(_summary(0)) is None
    assert quarantine_alarm(_summary(1000)) is None


def test_phases_print_each_phase_and_the_time_since_the_process_started(monkeypatch):
    import re
    import subprocess
    import sys

    from streaming.cli import common

    # the process's age comes from /proc: a child that has slept 0.3 s before asking is
    # at least that old, and not much older
    age = float(subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.3); "
         "from streaming.cli.common import process_age_s; print(process_age_s())"],
        capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= age < 30

    clock = iter([100.0, 100.5, 102.0, 200.0, 200.1])
    monkeypatch.setattr(common, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(common, "process_age_s", lambda: 1.0)
    lines: list[str] = []
    phases = common.Phases(True, lines.append)  # started at 99.0
    phases.mark("JVM")                        # 100.5
    phases.mark("batch ran", took=0.25)       # 102.0
    assert lines == ["phase: JVM: 1.50 s (at 1.50 s)", "phase: batch ran: 0.25 s (at 3.00 s)"]
    assert all(re.fullmatch(r"phase: .+: \d+\.\d\d s \(at \d+\.\d\d s\)", ln) for ln in lines)

    quiet: list[str] = []
    common.Phases(False, quiet.append).mark("JVM")
    assert quiet == []
