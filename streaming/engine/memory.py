"""Hand the memory a batch freed back to the operating system.

glibc keeps freed memory for reuse: after a 200,000-record pass a process holds its
high-water mark (hundreds of megabytes) until it exits. The driver and Spark's Python
workers peak at different moments, so without this the process tree holds every
process's high-water mark at once. ``malloc_trim(0)`` returns what is free; it costs
a few milliseconds per batch. Elsewhere than on glibc it does nothing.
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


def release_freed_memory() -> bool:
    """Return free heap memory to the system; True if the C library could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
