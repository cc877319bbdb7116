"""Stopping a long-running command cleanly: SIGTERM and Ctrl-C (SIGINT).

A terminal's Ctrl-C and a supervisor's stop reach the whole process group: the driver,
Spark's JVM and its Python workers. If the JVM took them, Spark would shut down under
the running micro-batch and the driver would print py4j tracebacks. So the JVM is
started with both signals ignored (:func:`jvm_ignores_stop_signals`; it inherits that
and keeps it, and still ends with the driver, when its stdin, a pipe from this process,
closes), and the driver's :class:`StopSignals` only sets a flag the command's loop
sees within a second: the running batch finishes and commits, then the query stops.

A second signal of the same kind stops at once: SIGTERM ends the process, Ctrl-C raises
``KeyboardInterrupt``; the batch in progress then re-runs from the checkpoint on
restart, as after a crash.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: what each signal is called in the lines the commands print
NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def jvm_ignores_stop_signals() -> Iterator[None]:
    """Start the JVM inside this block: with SIGTERM and SIGINT ignored, which it keeps."""
    if not _main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in NAMES}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


class StopSignals:
    """Inside the block, SIGTERM and SIGINT set :attr:`event` (and :attr:`signum`)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    @property
    def name(self) -> str:
        return NAMES.get(self.signum, "a signal") if self.signum is not None else "nothing"

    def _handle(self, signum: int, frame: object) -> None:
        # a second one stops at once
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM
                      else signal.default_int_handler)
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def __enter__(self) -> StopSignals:
        if _main_thread():  # only there can Python handle signals
            self._saved = {s: signal.signal(s, self._handle) for s in NAMES}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
