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

#: glibc's ``mallopt`` parameter of the size from which a block is mapped on its own
_M_MMAP_THRESHOLD = -3
#: blocks of this size and over are mapped on their own (glibc's initial threshold)
MMAP_THRESHOLD = 128 * 1024
_RETURNABLE = False


def allocate_returnably() -> None:
    """Allocate so that what is freed can go back to the system.

    - Arrow's buffers come from the C library's ``malloc`` instead of mimalloc (pyarrow's
      default), which keeps freed segments for reuse where ``malloc_trim`` cannot reach.
    - Blocks of 128 KiB and over are mapped on their own, and unmapped when freed. glibc
      starts there, but raises the threshold to the size of each mapped block freed (up
      to 32 MiB); after a batch's first large NumPy temporaries, the next ones come from
      the heap, where a few live small objects keep whole stretches of it resident.

    Measured with ``benchmarks/bench_memory.py`` (the year log through Kafka, two Python
    workers, together with the preloading daemon of :mod:`streaming.engine.worker_daemon`):
    their peak RSS went from 0.81 to 0.68 GiB, a backfill's from 0.61 to 0.44 GiB, at the
    same batch times.
    Elsewhere than on glibc only the first part applies.
    """
    global _RETURNABLE
    if _RETURNABLE:
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    if _TRIM is not None:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _RETURNABLE = True


def release_freed_memory() -> bool:
    """Return free heap memory to the system; True if the C library could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
