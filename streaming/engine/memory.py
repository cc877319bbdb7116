"""Hand the memory a batch freed back to the operating system.

glibc keeps freed memory for reuse: after a 200,000-record pass a process holds its
high-water mark (hundreds of megabytes) until it exits. The driver and Spark's Python
workers peak at different moments, so without this the process tree holds every
process's high-water mark at once. Two parts: :func:`allocate_returnably`, once per
process before the work, makes freed memory returnable; :func:`release_freed_memory`
(``malloc_trim(0)``) after each batch or task returns it, in a few milliseconds.
Elsewhere than on glibc the second does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any


def _malloc_trim() -> Callable[[int], Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()

_RETURNABLE = False


def allocate_returnably() -> None:
    """Allocate Arrow's buffers from the C library's ``malloc`` instead of mimalloc
    (pyarrow's default), which keeps freed segments for reuse where ``malloc_trim``
    cannot reach them.

    Measured with ``benchmarks/bench_memory.py`` (the year log through Kafka, two Python
    workers, together with the preloading daemon of :mod:`streaming.engine.worker_daemon`):
    their peak RSS went from 0.81 to 0.68-0.78 GiB over three runs, a backfill's from 0.61
    to 0.55-0.59 GiB. Pinning glibc's mmap threshold at 128 KiB as well (so that large
    NumPy temporaries are unmapped when freed) made a backfill 8-10 % slower for no gain
    in the workers' peak; it is not done.
    """
    global _RETURNABLE
    if _RETURNABLE:
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    _RETURNABLE = True


def release_freed_memory() -> bool:
    """Return free heap memory to the system; True if the C library could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
