"""Fault injection for the crash tests, in one place the write path calls.

``STREAMSKETCH_CRASH_AT=<point>@<batch_id>`` makes the driver SIGKILL its own
process group at that point of that batch. The ``in_*`` points arm a timer when
that table's write starts, so the kill lands inside it after
``STREAMSKETCH_CRASH_DELAY_MS`` (default 300; a delta-rs commit may finish sooner,
and the kill then lands in whatever follows). Unset, :func:`maybe_crash` costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal
import threading

CRASH_ENV = "STREAMSKETCH_CRASH_AT"
CRASH_DELAY_ENV = "STREAMSKETCH_CRASH_DELAY_MS"
CRASH_POINTS = ("batch_start", "after_quarantine", "after_aggregates", "after_sketches",
                "in_quarantine", "in_aggregates", "in_sketches")


def _kill_now() -> None:
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_crash(point: str, batch_id: int) -> None:
    """Kill the process here if the environment asks for ``point`` of ``batch_id``."""
    target = os.environ.get(CRASH_ENV)
    if not target or target != f"{point}@{batch_id}":
        return
    if point.startswith("in_"):
        delay = float(os.environ.get(CRASH_DELAY_ENV, "300")) / 1000
        timer = threading.Timer(delay, _kill_now)
        timer.daemon = True
        timer.start()
        return
    _kill_now()
