"""Fault injection for the fault tests, in one place the write path and the pass call.

``STREAMSKETCH_CRASH_AT=<point>@<batch_id>`` makes the driver SIGKILL its own
process group at that point of that batch. The ``in_*`` points arm a timer when
that table's write starts, so the kill lands inside it after
``STREAMSKETCH_CRASH_DELAY_MS`` (default 300; a delta-rs commit may finish sooner,
and the kill then lands at the next crash point, which waits for it: always in the
batch it names, however fast the batches after it would run).

``STREAMSKETCH_FAIL_AT=<point>@<batch_id>`` raises an ``OSError`` there instead (a
write that fails), once: only if it creates the file ``STREAMSKETCH_FAIL_MARKER``.

``STREAMSKETCH_PAUSE_AT=<point>@<batch_id>`` instead holds the batch there, after
one line on stderr that says so, until the file ``STREAMSKETCH_PAUSE_RESUME``
exists or ``STREAMSKETCH_PAUSE_S`` seconds (default 30) have passed: a test can
act on the process (signal it, fill its disk) while it is inside a batch, between
two writes.

``STREAMSKETCH_KILL_WORKER=<offset>`` makes the Python worker running the pass
over the input partition that holds Kafka offset ``<offset>`` SIGKILL itself
after reading its input, once: only on the task's first attempt, and only if it
creates the marker file ``STREAMSKETCH_KILL_WORKER_MARKER`` (required; it
records which worker died), so Spark's retry of the task, and any later run,
survive.

Unset, each hook costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

CRASH_ENV = "STREAMSKETCH_CRASH_AT"
CRASH_DELAY_ENV = "STREAMSKETCH_CRASH_DELAY_MS"
PAUSE_ENV = "STREAMSKETCH_PAUSE_AT"
PAUSE_S_ENV = "STREAMSKETCH_PAUSE_S"
PAUSE_RESUME_ENV = "STREAMSKETCH_PAUSE_RESUME"
FAIL_ENV = "STREAMSKETCH_FAIL_AT"
FAIL_MARKER_ENV = "STREAMSKETCH_FAIL_MARKER"
KILL_WORKER_ENV = "STREAMSKETCH_KILL_WORKER"
KILL_WORKER_MARKER_ENV = "STREAMSKETCH_KILL_WORKER_MARKER"
CRASH_POINTS = ("batch_start", "written", "after_quarantine",
                "after_aggregates", "after_sketches", "in_quarantine", "in_aggregates",
                "in_sketches")


def _kill_now() -> None:
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


#: set once an ``in_*`` kill is armed: every later crash point waits for it
_armed = threading.Event()


def _await_armed_kill() -> None:
    """Hold this thread until an armed ``in_*`` kill lands (it runs on its own timer)."""
    delay = float(os.environ.get(CRASH_DELAY_ENV, "300")) / 1000
    time.sleep(delay + 60.0)  # the timer kills the process long before this ends


def maybe_crash(point: str, batch_id: int) -> None:
    """Kill the process (or pause) here if the environment asks for ``point`` of ``batch_id``."""
    target = os.environ.get(CRASH_ENV)
    if target and _armed.is_set():
        _await_armed_kill()
    if target and target == f"{point}@{batch_id}":
        if point.startswith("in_"):
            delay = float(os.environ.get(CRASH_DELAY_ENV, "300")) / 1000
            timer = threading.Timer(delay, _kill_now)
            timer.daemon = True
            _armed.set()
            timer.start()
            return
        _kill_now()
    pause = os.environ.get(PAUSE_ENV)
    if pause and pause == f"{point}@{batch_id}":
        seconds = float(os.environ.get(PAUSE_S_ENV, "30"))
        resume = os.environ.get(PAUSE_RESUME_ENV)
        print(f"streamsketch: fault: pausing at {pause} (up to {seconds:g} s)",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (resume and os.path.exists(resume)):
            time.sleep(0.05)


def maybe_crash_when(point: str, batch_id: int, ready: Callable[[], bool],
                     timeout_s: float = 120.0) -> None:
    """Like :func:`maybe_crash`, but the kill waits until ``ready()`` holds (polled)."""
    if os.environ.get(CRASH_ENV) != f"{point}@{batch_id}":
        return
    deadline = time.monotonic() + timeout_s
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill_now()


def maybe_fail(point: str, batch_id: int) -> None:
    """Raise an :class:`OSError` here if ``STREAMSKETCH_FAIL_AT`` names ``point@batch_id``
    and the file ``STREAMSKETCH_FAIL_MARKER`` can be created (once: a restart survives)."""
    if os.environ.get(FAIL_ENV) != f"{point}@{batch_id}":
        return
    marker = os.environ.get(FAIL_MARKER_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return
    raise OSError(f"injected failure at {point}@{batch_id}")


def maybe_kill_worker(raw: Any) -> None:
    """SIGKILL this Python worker if the environment asks for an offset in ``raw`` (see above).

    ``raw`` is the pass's Arrow table of raw Kafka records.
    """
    target = os.environ.get(KILL_WORKER_ENV)
    if not target:
        return
    import pyarrow.compute as pc
    from pyspark import TaskContext

    marker = os.environ.get(KILL_WORKER_MARKER_ENV)
    task = TaskContext.get()
    if not marker or task is None or task.attemptNumber() != 0:
        return
    if not pc.any(pc.equal(raw.column("_offset"), int(target))).as_py():
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(f"pid {os.getpid()} stage {task.stageId()} partition {task.partitionId()} "
                 f"attempt {task.attemptNumber()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
